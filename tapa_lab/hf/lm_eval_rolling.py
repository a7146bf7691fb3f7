"""The lab's rolling log-likelihood task for lm-evaluation-harness, and the lab's own number on the same documents.

``tapa_rolling`` scores whole documents of a split with lm-eval's ``loglikelihood_rolling`` (word perplexity, byte
perplexity, bits per byte). The lab writes the documents as JSON lines and the task YAML next to them, so the same
folder also works with ``lm_eval --include_path``. Per evaluated length L, the documents are the split's documents
with at least L + 1 tokens: exactly those the lab's perplexity (:mod:`tapa_lab.eval.perplexity`) evaluates at L.

How the two numbers relate (docs/evaluation.md, "lm-evaluation-harness"): lm-eval cuts a document of n tokens into
disjoint windows that predict tokens [0, L), [L, 2L), ... and a last, shorter window predicting the rest with a full
L-token context; the first token is predicted from the prefix token (the tokenizer's end-of-document). The lab's
non-overlapping mode predicts tokens [1, L], [L + 1, 2L], ... and drops the tail. Both score target j of a window
from j + 1 tokens of context, so the per-token losses have the same distribution except for (a) each document's first
token and (b) the tail, which lm-eval adds. With the byte tokenizer one token is one byte, so lm-eval's
``bits_per_byte`` estimates the lab's ``nll / ln 2`` (nats per token in bits).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from tapa_lab.data.tokenizer import Tokenizer
from tapa_lab.errors import require
from tapa_lab.eval.perplexity import PerplexityConfig, evaluate_length

ROLLING_TASK = "tapa_rolling"


def rolling_documents(documents: list[np.ndarray], length: int, max_documents: int | None) -> list[int]:
    """Indices of the documents evaluated at ``length``: those of at least ``length + 1`` tokens (the lab's windows
    need one), the first ``max_documents`` of them (all when ``None``)."""
    chosen = [i for i, doc in enumerate(documents) if len(doc) >= length + 1]
    return chosen if max_documents is None else chosen[:max_documents]


def write_rolling_task(folder: Path, texts: list[str]) -> Path:
    """Write ``<folder>/tapa_rolling.jsonl`` (one ``{"text": ...}`` per document) and the task YAML beside it.

    Returns:
        The YAML's path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{ROLLING_TASK}.jsonl"
    data.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts), encoding="utf-8")
    config = {
        "task": ROLLING_TASK,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
        "test_split": "test",
        "output_type": "loglikelihood_rolling",
        "doc_to_text": "",
        "doc_to_target": "{{text}}",
        "metric_list": [{"metric": "word_perplexity", "aggregation": "weighted_perplexity", "higher_is_better": False},
                        {"metric": "byte_perplexity", "aggregation": "weighted_perplexity", "higher_is_better": False},
                        {"metric": "bits_per_byte", "aggregation": "bits_per_byte", "higher_is_better": False}],
        "metadata": {"version": 1.0},
    }
    path = folder / f"{ROLLING_TASK}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def document_texts(documents: list[np.ndarray], tokenizer: Tokenizer) -> list[str]:
    """The text of each document, checked to tokenise back to the same tokens (else lm-eval would score others).

    Raises:
        ConfigError: naming ``data.corpus`` when a document does not survive decode and encode unchanged.
    """
    texts = [tokenizer.decode(doc) for doc in documents]
    for doc, text in zip(documents, texts, strict=True):
        require(np.array_equal(tokenizer.encode(text), np.asarray(doc, dtype=np.int64)), "data.corpus",
                "documents whose text tokenises back to the same tokens (decode then encode)",
                text[:40] + "...")
    return texts


def lab_nonoverlapping(model: nn.Module, documents: list[np.ndarray], length: int, device: torch.device) -> dict:
    """The lab's non-overlapping perplexity at ``length`` on ``documents`` (every window, none thinned out).

    Returns:
        ``{"nll", "bits_per_token", "perplexity", "tokens", "windows"}``; with the byte tokenizer, bits per token is
        bits per byte.
    """
    config = PerplexityConfig(lengths=[length], mode="nonoverlapping", max_tokens=sum(len(d) for d in documents))
    row, _ = evaluate_length(model, documents, length, length, config, device, lambda n: None)
    return {"nll": row["nll"], "bits_per_token": row["nll"] / math.log(2), "perplexity": row["perplexity"],
            "tokens": row["tokens"], "windows": row["windows"]}

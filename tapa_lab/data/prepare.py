"""``tapa-lab data prepare``: prepare a corpus and its token cache ahead of training, and print its statistics."""

from __future__ import annotations

import statistics
import time

from rich.console import Console
from rich.table import Table

from tapa_lab.data.corpus import Corpus
from tapa_lab.data.packing import pack_corpus
from tapa_lab.data.shakespeare import Shakespeare
from tapa_lab.data.split import SPLITS
from tapa_lab.data.tokenizer import Tokenizer
from tapa_lab.data.tokenizer_byte import ByteTokenizer


def prepare_corpus(corpus: Corpus | None = None, tokenizer: Tokenizer | None = None, data_dir: str = "data",
                   val_fraction: float = 0.05, test_fraction: float = 0.05) -> dict:
    """Prepare a corpus into data_dir, split it, tokenise every split once, and print the statistics.

    Args:
        corpus: the corpus recipe (e.g. ``--corpus tapa_lab.data.PyStdlib``); ``None`` means Shakespeare.
        tokenizer: the tokenizer; ``None`` means ``tapa_lab.data.ByteTokenizer``.
        data_dir: folder for prepared corpora, downloads and token caches.
        val_fraction: expected fraction of documents in the validation split.
        test_fraction: expected fraction of documents in the test split.

    Returns:
        Per split: documents, characters, tokens, and the median and largest document in tokens.
    """
    corpus = corpus if corpus is not None else Shakespeare()
    tokenizer = tokenizer if tokenizer is not None else ByteTokenizer()
    started = time.perf_counter()
    packed = pack_corpus(corpus, tokenizer, data_dir, val_fraction, test_fraction)
    seconds = time.perf_counter() - started
    stats = {}
    table = Table(title=f"{corpus.name}: manifest {packed.manifest_hash[:16]}, cache {packed.directory}")
    for column in ("split", "documents", "characters", "tokens", "median doc", "largest doc"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for split in SPLITS:
        info = packed.meta["splits"][split]
        lengths = [len(document) for document in packed.documents(split)]
        stats[split] = {"documents": info["documents"], "chars": info["chars"], "tokens": info["tokens"],
                        "median_doc_tokens": int(statistics.median(lengths)), "max_doc_tokens": max(lengths)}
        table.add_row(split, *(f"{value:,}" for value in stats[split].values()))
    console = Console()
    console.print(table)
    console.print(f"tokenizer {tokenizer.config()['class_path']} (vocab {tokenizer.vocab_size}); {seconds:.1f} s")
    return stats

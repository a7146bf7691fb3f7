"""Packing: each split tokenised once into one flat token array, documents separated by end-of-document, cached.

The cache lives in ``<data_dir>/<corpus name>/cache/<fingerprint>/``; the fingerprint hashes the recipe, the manifest
hash, the split fractions and the tokenizer's config, so any change makes a new cache and an unchanged setup reuses
the old one without tokenising. The folder holds, per split, ``<split>.bin`` (raw tokens, ``meta["dtype"]``) and
``<split>.offsets.npy`` (int64 ``(n_docs + 1,)``: document ``i`` is ``tokens[offsets[i]:offsets[i + 1] - 1]``, then
its end-of-document token), plus ``meta.json`` (written last) and any trained tokenizer file. It is built in a
temporary folder and renamed into place, so an interrupted run leaves no half-written cache. ``meta.json`` records the
size, time and SHA-256 of every other file; a cache whose files no longer match (truncated, altered) is rebuilt with a
warning naming them.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from tapa_lab.data.atomic import atomic_directory, exclusive_lock, remove_stale_temporaries, write_text_atomic
from tapa_lab.data.corpus import Corpus
from tapa_lab.data.file_records import damaged_files, record_files
from tapa_lab.data.manifest import Manifest
from tapa_lab.data.split import SPLITS, Split, assign_splits
from tapa_lab.data.tokenizer import Tokenizer

FORMAT_VERSION = 1
META_FILE = "meta.json"
PROGRESS_MIN_CHARS = 2_000_000


def cache_fingerprint(manifest: Manifest, tokenizer: Tokenizer, val_fraction: float, test_fraction: float) -> str:
    """16 hex digits naming the token cache of (recipe, manifest hash, split fractions, tokenizer config)."""
    key = {
        "format": FORMAT_VERSION,
        "recipe": manifest.recipe,
        "manifest": manifest.hash,
        "split": [val_fraction, test_fraction],
        "tokenizer": tokenizer.config(),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


class PackedCorpus:
    """A token cache: per split, the packed token array and the document boundaries in it.

    Args:
        directory: the cache folder (made by :func:`pack_corpus`).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        self._tokens: dict[str, np.ndarray] = {}

    @property
    def manifest_hash(self) -> str:
        """SHA-256 of the corpus content (see :attr:`Manifest.hash`)."""
        return self.meta["manifest_hash"]

    @property
    def fingerprint(self) -> str:
        """The cache's fingerprint (its folder name)."""
        return self.meta["fingerprint"]

    def doc_ids(self, split: Split) -> list[str]:
        """Document ids of ``split`` in packing order (sorted)."""
        return self.meta["splits"][split]["doc_ids"]

    def tokens(self, split: Split) -> np.ndarray:
        """The packed tokens of ``split``, a read-only memory map ``(n,)``; every document ends with end-of-document."""
        if split not in self._tokens:
            self._tokens[split] = np.memmap(self.directory / f"{split}.bin", dtype=self.meta["dtype"], mode="r")
        return self._tokens[split]

    def offsets(self, split: Split) -> np.ndarray:
        """Start of each document in :meth:`tokens` plus the total length, int64 ``(n_docs + 1,)``."""
        return np.load(self.directory / f"{split}.offsets.npy")

    def documents(self, split: Split) -> list[np.ndarray]:
        """Each document's tokens (views into the memory map, end-of-document excluded), in packing order.

        Long-context evaluation draws its windows from inside these, so no window spans two documents.
        """
        tokens, offsets = self.tokens(split), self.offsets(split)
        return [tokens[start:end - 1] for start, end in zip(offsets[:-1], offsets[1:], strict=True)]


def pack_corpus(corpus: Corpus, tokenizer: Tokenizer, data_dir: str | Path, val_fraction: float,
                test_fraction: float) -> PackedCorpus:
    """Prepare the corpus, split it and tokenise every split once; reuse the cache when it exists.

    A trainable tokenizer is trained on the training split here (and loaded from the cache on later calls).

    Returns:
        The token cache, ready to read.
    """
    manifest = corpus.prepare(data_dir)
    fingerprint = cache_fingerprint(manifest, tokenizer, val_fraction, test_fraction)
    directory = manifest.directory / "cache" / fingerprint
    with exclusive_lock(directory.parent / f".{fingerprint}.lock"):  # concurrent builds take turns
        return _pack(manifest, directory, fingerprint, corpus, tokenizer, val_fraction, test_fraction)


def _pack(manifest: Manifest, directory: Path, fingerprint: str, corpus: Corpus, tokenizer: Tokenizer,
          val_fraction: float, test_fraction: float) -> PackedCorpus:
    remove_stale_temporaries(directory.parent)
    if (directory / META_FILE).exists():
        damaged = damaged_files(directory, json.loads((directory / META_FILE).read_text()).get("files", {}))
        if not damaged:
            tokenizer.load(directory)
            return PackedCorpus(directory)
        warnings.warn(f"token cache {directory} is damaged ({'; '.join(damaged)}); rebuilding it.", stacklevel=2)
    splits = assign_splits((entry.id for entry in manifest.documents), val_fraction, test_fraction)
    with atomic_directory(directory) as tmp:
        tokenizer.train(manifest.texts(splits["train"]), tmp)
        meta: dict[str, Any] = {
            "fingerprint": fingerprint,
            "corpus": corpus.name,
            "recipe": manifest.recipe,
            "manifest_hash": manifest.hash,
            "tokenizer": tokenizer.config(),
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
            "dtype": tokenizer.token_dtype.name,
            "splits": {},
        }
        with _progress(manifest.total_chars, corpus.name) as advance:
            for split in SPLITS:
                tokens, offsets = _pack_split(manifest, splits[split], tokenizer, tmp / f"{split}.bin", advance)
                np.save(tmp / f"{split}.offsets.npy", offsets)
                meta["splits"][split] = {"documents": len(splits[split]), "tokens": tokens,
                                         "chars": manifest.chars(splits[split]), "doc_ids": splits[split]}
        meta["files"] = record_files(tmp, sorted(p.name for p in tmp.iterdir() if p.is_file()))
        write_text_atomic(tmp / META_FILE, json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    return PackedCorpus(directory)


def _pack_split(manifest: Manifest, doc_ids: list[str], tokenizer: Tokenizer, path: Path,
                advance: Callable[[int], None]) -> tuple[int, np.ndarray]:
    """Write the split's documents, each followed by end-of-document, to ``path``; return (tokens, offsets)."""
    offsets = [0]
    with open(path, "wb") as file:
        for text in manifest.texts(doc_ids):
            ids = tokenizer.encode(text)
            packed = np.empty(len(ids) + 1, dtype=tokenizer.token_dtype)
            packed[:-1] = ids
            packed[-1] = tokenizer.eod_id
            file.write(packed.tobytes())
            offsets.append(offsets[-1] + len(packed))
            advance(len(text))
    return offsets[-1], np.asarray(offsets, dtype=np.int64)


@contextmanager
def _progress(total_chars: int, name: str) -> Iterator[Callable[[int], None]]:
    """A rich progress bar over characters tokenised (shown from 2M characters on); yields its ``advance(chars)``."""
    columns = (TextColumn(f"tokenising {name}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
               TimeRemainingColumn())
    with Progress(*columns, disable=total_chars < PROGRESS_MIN_CHARS) as progress:
        task = progress.add_task("tokenise", total=total_chars)
        yield lambda chars: progress.advance(task, chars)

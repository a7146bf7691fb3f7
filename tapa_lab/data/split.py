"""Train/validation/test split by a hash of the document id, so it never depends on file order.

Each document gets ``u = sha256("split:" + id)`` read as a number in [0, 1). Documents are ranked by ``u``; the test
split takes those with ``u < test_fraction``, validation those with ``u < test_fraction + val_fraction`` after them,
training the rest. A small corpus where a fraction catches no document still gets one document in test and one in
validation: the lowest-ranked documents, so the choice is deterministic too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Literal

from tapa_lab.errors import ConfigError, require

Split = Literal["train", "validation", "test"]
SPLITS: tuple[Split, ...] = ("train", "validation", "test")


def split_key(doc_id: str) -> float:
    """The document's position in [0, 1) for the split: the first 64 bits of ``sha256("split:" + doc_id)``."""
    digest = hashlib.sha256(f"split:{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(doc_ids: Iterable[str], val_fraction: float, test_fraction: float) -> dict[Split, list[str]]:
    """Split document ids into train, validation and test.

    Args:
        doc_ids: unique document ids, any order.
        val_fraction: expected fraction of documents in validation, in (0, 1).
        test_fraction: expected fraction of documents in test, in (0, 1).

    Returns:
        ``{"train": [...], "validation": [...], "test": [...]}``, each sorted by id; every split is non-empty.

    Raises:
        ConfigError: a fraction is out of range, or the corpus is too small to give every split a document.
    """
    require(0 < val_fraction < 1, "data.val_fraction", "in (0, 1)", val_fraction)
    require(0 < test_fraction < 1, "data.test_fraction", "in (0, 1)", test_fraction)
    require(val_fraction + test_fraction < 1, "data.val_fraction + data.test_fraction", "< 1",
            val_fraction + test_fraction)
    ranked = sorted(doc_ids, key=lambda doc_id: (split_key(doc_id), doc_id))
    if len(ranked) < 3:
        raise ConfigError(f"the corpus has {len(ranked)} non-empty document(s); train, validation and test need at "
                          "least 3. Use a larger corpus.")
    keys = [split_key(doc_id) for doc_id in ranked]
    below_test = sum(key < test_fraction for key in keys)
    below_val = sum(key < test_fraction + val_fraction for key in keys)
    n_test = max(1, below_test)
    n_val = max(1, below_val - n_test)
    if n_test + n_val >= len(ranked):
        raise ConfigError(f"data.val_fraction = {val_fraction} and data.test_fraction = {test_fraction} leave no "
                          f"training document out of {len(ranked)}; lower them or use a larger corpus.")
    return {
        "train": sorted(ranked[n_test + n_val:]),
        "validation": sorted(ranked[n_test:n_test + n_val]),
        "test": sorted(ranked[:n_test]),
    }

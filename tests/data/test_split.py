"""The split is a pure function of the document ids: deterministic, order-free, and never leaves a split empty."""

from __future__ import annotations

import random

import pytest

from tapa_lab.data import LocalFiles, assign_splits, pack_corpus
from tapa_lab.data.tokenizer_byte import ByteTokenizer
from tapa_lab.errors import ConfigError


def test_split_does_not_depend_on_the_order_of_ids():
    ids = [f"doc-{i}" for i in range(500)]
    shuffled = ids[:]
    random.Random(0).shuffle(shuffled)
    assert assign_splits(ids, 0.05, 0.05) == assign_splits(shuffled, 0.05, 0.05)


def test_split_partitions_the_ids_with_about_the_requested_fractions():
    ids = [f"doc-{i}" for i in range(20_000)]
    splits = assign_splits(ids, 0.1, 0.05)
    assert sorted(splits["train"] + splits["validation"] + splits["test"]) == sorted(ids)
    assert abs(len(splits["validation"]) / len(ids) - 0.1) < 0.01
    assert abs(len(splits["test"]) / len(ids) - 0.05) < 0.01


def test_adding_documents_does_not_move_existing_ones_in_a_large_corpus():
    ids = [f"doc-{i}" for i in range(2000)]
    before = assign_splits(ids, 0.05, 0.05)
    after = assign_splits(ids + [f"new-{i}" for i in range(200)], 0.05, 0.05)
    for split in ("train", "validation", "test"):
        assert set(before[split]) <= set(after[split])


@pytest.mark.parametrize("count", [3, 4, 5, 8, 20])
def test_small_corpora_still_get_one_validation_and_one_test_document(count):
    ids = [f"tiny-{i}" for i in range(count)]
    splits = assign_splits(ids, 0.05, 0.05)
    assert len(splits["validation"]) >= 1 and len(splits["test"]) >= 1 and len(splits["train"]) >= 1
    assert splits == assign_splits(list(reversed(ids)), 0.05, 0.05)


def test_too_few_documents_and_bad_fractions_name_the_field():
    with pytest.raises(ConfigError, match="at least 3"):
        assign_splits(["a", "b"], 0.05, 0.05)
    with pytest.raises(ConfigError, match="data.val_fraction"):
        assign_splits(["a", "b", "c"], 0.0, 0.05)
    with pytest.raises(ConfigError, match="data.test_fraction"):
        assign_splits(["a", "b", "c"], 0.05, 1.5)
    with pytest.raises(ConfigError, match=r"data.val_fraction \+ data.test_fraction"):
        assign_splits(["a", "b", "c"], 0.6, 0.5)


def test_packed_split_is_the_same_whatever_order_the_files_are_listed_and_written(tmp_path, write_files):
    texts = {f"doc{i}.txt": f"document number {i}\n" * (i + 5) for i in range(12)}
    forward = write_files(tmp_path / "a", texts)
    backward = write_files(tmp_path / "b", dict(reversed(list(texts.items()))))
    first = pack_corpus(LocalFiles(paths=[str(forward / name) for name in texts]), ByteTokenizer(),
                        tmp_path / "data", 0.1, 0.1)
    second = pack_corpus(LocalFiles(paths=[str(backward / name) for name in reversed(texts)]), ByteTokenizer(),
                         tmp_path / "data", 0.1, 0.1)
    assert first.manifest_hash == second.manifest_hash
    for split in ("train", "validation", "test"):
        assert first.doc_ids(split) == second.doc_ids(split)
        assert (first.tokens(split) == second.tokens(split)).all()

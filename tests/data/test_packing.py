"""Packing: documents tokenised once into flat arrays with end-of-document separators, cached under a fingerprint."""

from __future__ import annotations

import numpy as np
import pytest

from tapa_lab.data import BPETokenizer, ByteTokenizer, Fixture, LocalFiles, pack_corpus
from tapa_lab.data.fixture import FIXTURE_DIR
from tapa_lab.data.packing import cache_fingerprint


class CountingTokenizer(ByteTokenizer):
    """A byte tokenizer that counts its encode calls and can fail on the n-th."""

    def __init__(self, fail_at: int | None = None) -> None:
        self._calls = 0
        self._fail_at = fail_at

    def encode(self, text: str) -> np.ndarray:
        self._calls += 1
        if self._fail_at is not None and self._calls == self._fail_at:
            raise KeyboardInterrupt
        return super().encode(text)


def test_packed_tokens_are_the_documents_separated_by_end_of_document(fixture_packed):
    tokenizer = ByteTokenizer()
    for split in ("train", "validation", "test"):
        tokens, documents = fixture_packed.tokens(split), fixture_packed.documents(split)
        expected = np.concatenate([np.append(document, tokenizer.eod_id) for document in documents])
        assert tokens.dtype == np.uint16 and (tokens == expected).all()
        for doc_id, document in zip(fixture_packed.doc_ids(split), documents, strict=True):
            assert tokenizer.decode(document) == (FIXTURE_DIR / doc_id).read_text(encoding="utf-8")
    all_ids = sum((fixture_packed.doc_ids(split) for split in ("train", "validation", "test")), [])
    assert sorted(all_ids) == sorted(path.name for path in FIXTURE_DIR.glob("*.txt") if path.stat().st_size)
    assert fixture_packed.meta["splits"]["train"]["tokens"] == len(fixture_packed.tokens("train"))


def test_long_documents_are_available_whole_for_long_context_windows(fixture_packed):
    longest = max((document for split in ("train", "validation", "test")
                   for document in fixture_packed.documents(split)), key=len)
    assert len(longest) >= 8000 and ByteTokenizer().eod_id not in longest


def test_second_pack_reuses_the_cache_without_tokenising(data_dir):
    first_tokenizer, second_tokenizer = CountingTokenizer(), CountingTokenizer()
    first = pack_corpus(Fixture(), first_tokenizer, data_dir, 0.05, 0.05)
    second = pack_corpus(Fixture(), second_tokenizer, data_dir, 0.05, 0.05)
    assert first_tokenizer._calls == 11 and second_tokenizer._calls == 0
    assert first.directory == second.directory


def test_fingerprint_changes_with_tokenizer_recipe_arguments_and_split(data_dir, tmp_path, write_files):
    manifest = Fixture().prepare(data_dir)
    base = cache_fingerprint(manifest, ByteTokenizer(), 0.05, 0.05)
    assert base == cache_fingerprint(manifest, ByteTokenizer(), 0.05, 0.05)
    assert base != cache_fingerprint(manifest, BPETokenizer(vocab_size=400), 0.05, 0.05)
    assert cache_fingerprint(manifest, BPETokenizer(vocab_size=400), 0.05, 0.05) != cache_fingerprint(
        manifest, BPETokenizer(vocab_size=500), 0.05, 0.05)
    assert base != cache_fingerprint(manifest, ByteTokenizer(), 0.1, 0.05)
    root = write_files(tmp_path / "src", {"a.jsonl": '{"text": "x", "body": "y"}\n'})
    by_text = LocalFiles(paths=[str(root)]).prepare(data_dir)
    by_body = LocalFiles(paths=[str(root)], text_field="body").prepare(data_dir)
    assert by_text.recipe != by_body.recipe
    assert cache_fingerprint(by_text, ByteTokenizer(), 0.05, 0.05) != cache_fingerprint(
        by_body, ByteTokenizer(), 0.05, 0.05)


def test_interrupted_tokenisation_leaves_no_cache(data_dir):
    with pytest.raises(KeyboardInterrupt):
        pack_corpus(Fixture(), CountingTokenizer(fail_at=5), data_dir, 0.05, 0.05)
    cache = data_dir / "fixture" / "cache"
    assert [path for path in cache.iterdir() if path.suffix != ".lock"] == []  # no temporaries (the lock may stay)
    packed = pack_corpus(Fixture(), CountingTokenizer(), data_dir, 0.05, 0.05)
    assert [path.name for path in cache.iterdir() if path.suffix != ".lock"] == [packed.fingerprint]

"""Corpus.prepare: the manifest is right, preparation happens once, and failures leave nothing half-written."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tapa_lab.data import Corpus, CorpusError, Document, Fixture, LocalFiles, Manifest
from tapa_lab.data.fixture import FIXTURE_DIR


class Listed(Corpus):
    """A corpus of given documents that counts how often it is read."""

    def __init__(self, docs: list[tuple[str, str]], fail_after: int | None = None) -> None:
        self.docs = docs
        self._fail_after = fail_after
        self._reads = 0

    def documents(self, download_dir: Path) -> Iterator[Document]:
        self._reads += 1
        for index, (doc_id, text) in enumerate(self.docs):
            if self._fail_after is not None and index == self._fail_after:
                raise KeyboardInterrupt
            yield Document(doc_id, text)


def test_fixture_manifest_records_id_sha256_and_length_of_every_file(data_dir):
    manifest = Fixture().prepare(data_dir)
    files = {path.name: path.read_text(encoding="utf-8") for path in FIXTURE_DIR.glob("*.txt")}
    assert manifest.skipped_empty == ("empty.txt",)
    assert [entry.id for entry in manifest.documents] == sorted(name for name, text in files.items() if text)
    for entry in manifest.documents:
        assert entry.sha256 == hashlib.sha256(files[entry.id].encode()).hexdigest()
        assert entry.chars == len(files[entry.id])
    assert list(manifest.texts(["multilingual.txt"])) == [files["multilingual.txt"]]
    assert 35_000 < manifest.total_chars < 50_000
    saved = json.loads((data_dir / "fixture" / "manifest.json").read_text())
    assert saved["hash"] == manifest.hash and saved["recipe"]["class_path"] == "tapa_lab.data.fixture.Fixture"


def test_fixture_has_the_documented_edge_cases():
    texts = {path.name: path.read_text(encoding="utf-8") for path in FIXTURE_DIR.glob("*.txt")}
    assert texts["empty.txt"] == ""
    assert "\n" not in texts["long_single_line.txt"] and len(texts["long_single_line.txt"]) > 4000
    assert any(ord(char) > 0xFFFF for char in texts["multilingual.txt"])  # emoji
    assert "静夜思" in texts["multilingual.txt"] and "é" in texts["multilingual.txt"]
    assert max(len(text.encode()) for text in texts.values()) >= 8000


def test_manifest_hash_depends_on_content_not_on_order(data_dir):
    docs = [("a", "alpha"), ("b", "beta"), ("c", "gamma")]
    first = Listed(docs).prepare(data_dir / "one")
    second = Listed(list(reversed(docs))).prepare(data_dir / "two")
    changed = Listed([("a", "alpha"), ("b", "BETA"), ("c", "gamma")]).prepare(data_dir / "three")
    assert first.hash == second.hash != changed.hash


def test_second_prepare_reuses_the_folder_without_reading_the_source(data_dir):
    corpus = Listed([("a", "alpha"), ("b", "beta"), ("c", "gamma")])
    first = corpus.prepare(data_dir)
    second = corpus.prepare(data_dir)
    assert corpus._reads == 1 and first == second
    assert Listed([("a", "other"), ("b", "beta"), ("c", "gamma")]).prepare(data_dir).hash != first.hash


def test_local_files_prepare_again_when_a_file_changes(tmp_path, write_files):
    root = write_files(tmp_path / "src", {"a.txt": "one", "b.txt": "two", "c.txt": "three"})
    corpus = LocalFiles(paths=[str(root)])
    before = corpus.prepare(tmp_path / "data")
    (root / "b.txt").write_text("two, edited")
    after = corpus.prepare(tmp_path / "data")
    assert before.hash != after.hash
    assert Manifest.load(tmp_path / "data" / corpus.name).hash == after.hash


def test_interrupted_prepare_leaves_no_folder_and_keeps_an_old_one(data_dir):
    with pytest.raises(KeyboardInterrupt):
        Listed([("a", "x"), ("b", "y")], fail_after=1).prepare(data_dir)
    assert not (data_dir / "listed").exists()
    good = Listed([("a", "x"), ("b", "y"), ("c", "z")]).prepare(data_dir)
    with pytest.raises(KeyboardInterrupt):
        Listed([("a", "new"), ("b", "y")], fail_after=1).prepare(data_dir)
    assert Manifest.load(data_dir / "listed").hash == good.hash
    assert [path.name for path in data_dir.iterdir() if path.suffix != ".lock"] == ["listed"]  # no temporaries


def test_duplicate_ids_and_empty_corpora_are_errors(data_dir):
    with pytest.raises(CorpusError, match="'a' twice"):
        Listed([("a", "x"), ("a", "y")]).prepare(data_dir)
    with pytest.raises(CorpusError, match="no documents with text"):
        Listed([("a", ""), ("b", "")]).prepare(data_dir)

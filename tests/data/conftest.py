"""Shared fixtures of the data tests: every test prepares into its own temporary data folder (no network)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tapa_lab.data import ByteTokenizer, Fixture, PackedCorpus, pack_corpus


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty data folder."""
    return tmp_path / "data"


@pytest.fixture
def fixture_packed(data_dir: Path) -> PackedCorpus:
    """The committed fixture corpus, byte-tokenised with the default split fractions."""
    return pack_corpus(Fixture(), ByteTokenizer(), data_dir, val_fraction=0.05, test_fraction=0.05)


@pytest.fixture
def write_files() -> Callable[[Path, dict[str, str]], Path]:
    """A function that writes ``{relative path: text}`` under a folder and returns the folder."""

    def write(root: Path, files: dict[str, str]) -> Path:
        for name, text in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        return root

    return write

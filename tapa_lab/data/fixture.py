"""Fixture: the small public-domain corpus committed under ``tests/fixtures/corpus/`` (about 40 KB).

It goes through the same code path as the real corpora (it is a :class:`~tapa_lab.data.LocalFiles` recipe) and holds
the edge cases the pipeline must survive: an empty document, non-ASCII text (accents, CJK, emoji), one very long
single line, and one document of about 10 KB for long-context tests. See ``tests/fixtures/corpus/README.md``.
"""

from __future__ import annotations

from pathlib import Path

from tapa_lab.data.local_files import LocalFiles

FIXTURE_DIR = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "corpus"


class Fixture(LocalFiles):
    """The committed test corpus (needs a source checkout of the lab, where ``tests/`` exists)."""

    def __init__(self) -> None:
        super().__init__(paths=[str(FIXTURE_DIR / "*.txt")])

    @property
    def name(self) -> str:
        return "fixture"

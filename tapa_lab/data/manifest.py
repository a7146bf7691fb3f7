"""The manifest of a prepared corpus: which documents it holds (id, sha256, length) and how it was made.

A prepared corpus is a folder ``<data_dir>/<corpus name>/`` with ``documents.jsonl`` (one ``{"id", "text"}`` object a
line, in the order the recipe produced them) and ``manifest.json``. The manifest hash covers the sorted (id, sha256)
pairs only, so it names the content whatever order the files were read in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tapa_lab.data.atomic import write_text_atomic

DOCUMENTS_FILE = "documents.jsonl"
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class DocumentEntry:
    """One document of a prepared corpus.

    Args:
        id: the recipe's stable document id (e.g. ``tragedies/hamlet``); the split is a hash of it.
        sha256: SHA-256 of the UTF-8 text.
        chars: length of the text in characters.
        offset: byte offset of the document's line in ``documents.jsonl``.
    """

    id: str
    sha256: str
    chars: int
    offset: int


@dataclass(frozen=True)
class Manifest:
    """Index and provenance of a prepared corpus.

    Args:
        directory: the prepared corpus folder.
        recipe: the recipe's identity (class path, arguments, source version); preparing again with an equal recipe
            reuses the folder.
        provenance: what the recipe recorded while reading its source (e.g. the wheel's or the .deb files' sha256).
        documents: the non-empty documents, sorted by id.
        skipped_empty: ids of documents that had no text (kept out of every split).
        files: size, time and SHA-256 of ``documents.jsonl`` (see :mod:`tapa_lab.data.file_records`), so a damaged
            file is noticed; empty for folders prepared before this record existed.
    """

    directory: Path
    recipe: dict
    provenance: dict
    documents: tuple[DocumentEntry, ...]
    skipped_empty: tuple[str, ...]
    files: dict = field(default_factory=dict)

    @property
    def hash(self) -> str:
        """SHA-256 over the sorted ``id<TAB>sha256`` lines: the corpus content, independent of file order."""
        digest = hashlib.sha256()
        for entry in self.documents:
            digest.update(f"{entry.id}\t{entry.sha256}\n".encode())
        return digest.hexdigest()

    @property
    def total_chars(self) -> int:
        """Characters over all documents."""
        return sum(entry.chars for entry in self.documents)

    def chars(self, doc_ids: Iterable[str]) -> int:
        """Characters over the given documents."""
        by_id = {entry.id: entry.chars for entry in self.documents}
        return sum(by_id[doc_id] for doc_id in doc_ids)

    def texts(self, doc_ids: Iterable[str]) -> Iterator[str]:
        """The texts of ``doc_ids``, in the order given, read from ``documents.jsonl``."""
        offsets = {entry.id: entry.offset for entry in self.documents}
        with open(self.directory / DOCUMENTS_FILE, "rb") as file:
            for doc_id in doc_ids:
                file.seek(offsets[doc_id])
                record = json.loads(file.readline())
                yield record["text"]

    def save(self) -> None:
        """Write ``manifest.json`` atomically."""
        record = {
            "hash": self.hash,
            "documents_count": len(self.documents),
            "total_chars": self.total_chars,
            "recipe": self.recipe,
            "provenance": self.provenance,
            "skipped_empty": list(self.skipped_empty),
            "files": self.files,
            "documents": [asdict(entry) for entry in self.documents],
        }
        write_text_atomic(self.directory / MANIFEST_FILE, json.dumps(record, indent=1, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, directory: Path) -> Manifest:
        """Read ``<directory>/manifest.json``."""
        record = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
        return cls(directory=directory, recipe=record["recipe"], provenance=record["provenance"],
                   documents=tuple(DocumentEntry(**entry) for entry in record["documents"]),
                   skipped_empty=tuple(record["skipped_empty"]), files=record.get("files", {}))

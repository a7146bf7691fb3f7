"""LocalFiles: documents from files on this machine; no network.

Each entry of ``paths`` is a file, a folder (every supported file under it) or a glob (``**`` allowed). Supported:
``.txt`` and ``.md`` (one document per file, read as UTF-8), ``.jsonl`` / ``.json`` / ``.parquet`` (one document per
row, the text in ``text_field``), read through ``datasets.load_dataset("json" | "parquet", ...)``, which works offline.
The document id is the file's path relative to the entry's fixed part (the folder, the file's folder, or the glob's
leading folders), plus ``#<row>`` or the row's ``id_field`` for rows, so ids do not depend on where the files live.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from tapa_lab.data.corpus import Corpus, Document
from tapa_lab.errors import ConfigError

TEXT_SUFFIXES = (".txt", ".md")
ROW_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
GLOB_CHARS = frozenset("*?[")


class LocalFiles(Corpus):
    """Local text files (one document per file) or JSON Lines / JSON / Parquet files (one document per row).

    Args:
        paths: files, folders or globs (e.g. ``corpus/**/*.txt``).
        text_field: the column holding the text in ``.jsonl`` / ``.json`` / ``.parquet`` files.
        id_field: the column holding a document id in row files; ``None`` uses ``<file>#<row number>``.
    """

    def __init__(self, paths: list[str], text_field: str = "text", id_field: str | None = None) -> None:
        if isinstance(paths, str):
            raise ConfigError(f"data.corpus.paths = {paths!r} is not allowed: data.corpus.paths must be a list of "
                              "files, folders or globs.")
        self.paths = list(paths)
        self.text_field = text_field
        self.id_field = id_field

    @property
    def name(self) -> str:
        key = json.dumps([self.paths, self.text_field, self.id_field])
        return f"local-{hashlib.sha256(key.encode()).hexdigest()[:10]}"

    def files(self) -> list[tuple[str, Path]]:
        """``(id, path)`` of every matched file, in the order of ``paths`` (each real file once).

        Raises:
            ConfigError: naming ``data.corpus.paths`` when an entry matches nothing or a file type is not supported.
        """
        found: dict[Path, str] = {}
        for entry in self.paths:
            base, matches = _expand(entry)
            for path in matches:
                found.setdefault(path.resolve(), path.relative_to(base).as_posix())
        return [(doc_id, path) for path, doc_id in found.items()]

    def source_version(self) -> dict:
        return {"files": [[doc_id, path.stat().st_size, path.stat().st_mtime_ns] for doc_id, path in self.files()]}

    def documents(self, download_dir: Path) -> Iterator[Document]:
        for doc_id, path in self.files():
            if path.suffix in TEXT_SUFFIXES:
                yield Document(doc_id, path.read_text(encoding="utf-8", errors="replace"))
            else:
                yield from self._rows(doc_id, path, download_dir / "hf-datasets")

    def _rows(self, file_id: str, path: Path, cache_dir: Path) -> Iterator[Document]:
        """One document per row of a ``.jsonl`` / ``.json`` / ``.parquet`` file."""
        import datasets

        rows = datasets.load_dataset(ROW_FORMATS[path.suffix], data_files=[str(path)], split="train",
                                     cache_dir=str(cache_dir))
        for field, label in ((self.text_field, "text_field"), (self.id_field, "id_field")):
            if field is not None and field not in rows.column_names:
                raise ConfigError(f"data.corpus.{label} = {field!r} is not a column of {path}; its columns are "
                                  f"{rows.column_names}.")
        for row_number, row in enumerate(rows):
            doc_id = f"{file_id}#{row[self.id_field] if self.id_field else row_number}"
            yield Document(doc_id, row[self.text_field] or "")


def _expand(entry: str) -> tuple[Path, list[Path]]:
    """The fixed folder of a ``paths`` entry (ids are relative to it) and the files it matches, sorted."""
    path = Path(entry).expanduser()
    supported = TEXT_SUFFIXES + tuple(ROW_FORMATS)
    if any(char in entry for char in GLOB_CHARS):
        fixed = _leading_parts(path)
        base = Path(*fixed) if fixed else Path(".")
        pattern = path.relative_to(base).as_posix()
        matches = sorted(p for p in base.glob(pattern) if p.is_file())
    elif path.is_dir():
        base, matches = path, sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in supported)
    elif path.is_file():
        base, matches = path.parent, [path]
    else:
        raise ConfigError(f"data.corpus.paths: {entry!r} does not exist; give existing files, folders or globs.")
    if not matches:
        raise ConfigError(f"data.corpus.paths: {entry!r} matches no file; supported: {', '.join(supported)}.")
    for match in matches:
        if match.suffix not in supported:
            raise ConfigError(f"data.corpus.paths: {match} has an unsupported type {match.suffix!r}; supported: "
                              f"{', '.join(supported)}.")
    return base, matches


def _leading_parts(path: Path) -> list[str]:
    """The parts of a glob path before its first part with a wildcard."""
    parts = []
    for part in path.parts:
        if any(char in part for char in GLOB_CHARS):
            break
        parts.append(part)
    return parts

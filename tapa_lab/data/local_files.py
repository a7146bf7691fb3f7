"""LocalFiles: documents from files on this machine; no network.

Each entry of ``paths`` is a file, a folder (every supported file under it) or a glob (``**`` allowed); entries are
normalised (``dir``, ``dir/`` and ``./dir`` are the same corpus). Supported: ``.txt`` and ``.md`` (one document per
file, read as UTF-8), ``.jsonl`` (one JSON object a line) and ``.json`` / ``.parquet`` (one document per row, the text
in ``text_field``; read through ``datasets.load_dataset("json" | "parquet", ...)``, which works offline). The document
id is the file's path relative to the entry's fixed part (the folder, the file's folder, or the glob's leading
folders), plus ``#<row>`` or the row's ``id_field`` for rows, so ids do not depend on where the files live.

A ``.txt`` / ``.md`` file that is not text (it holds NUL bytes, or more than 1% of it is not valid UTF-8) is refused,
naming the file; ``skip_binary: true`` leaves such files out instead, with a warning listing them. A malformed
``.jsonl`` line is refused naming the file and the line.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

from tapa_lab.data.corpus import Corpus, Document
from tapa_lab.errors import ConfigError

TEXT_SUFFIXES = (".txt", ".md")
ROW_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
GLOB_CHARS = frozenset("*?[")
MAX_REPLACEMENT_SHARE = 0.01  # of the decoded characters; more means "not UTF-8 text"


class LocalFiles(Corpus):
    """Local text files (one document per file) or JSON Lines / JSON / Parquet files (one document per row).

    Args:
        paths: files, folders or globs (e.g. ``corpus/**/*.txt``).
        text_field: the column holding the text in ``.jsonl`` / ``.json`` / ``.parquet`` files.
        id_field: the column holding a document id in row files; ``None`` uses ``<file>#<row number>``.
        skip_binary: leave out ``.txt`` / ``.md`` files that are not text (warning with their names) instead of
            refusing them.
    """

    def __init__(self, paths: list[str], text_field: str = "text", id_field: str | None = None,
                 skip_binary: bool = False) -> None:
        if isinstance(paths, str):
            raise ConfigError(f"data.corpus.paths = {paths!r} is not allowed: data.corpus.paths must be a list of "
                              "files, folders or globs.")
        self.paths = [os.path.normpath(entry) for entry in paths]
        self.text_field = text_field
        self.id_field = id_field
        self.skip_binary = skip_binary

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
        skipped = []
        for doc_id, path in self.files():
            if path.suffix in TEXT_SUFFIXES:
                text = _read_text(path, refuse=not self.skip_binary)
                if text is None:
                    skipped.append(str(path))
                else:
                    yield Document(doc_id, text)
            elif path.suffix == ".jsonl":
                yield from self._documents(doc_id, path, _json_lines(path))
            else:
                yield from self._documents(doc_id, path, _dataset_rows(path, download_dir / "hf-datasets"))
        if skipped:
            warnings.warn(f"data.corpus.skip_binary: left out {len(skipped)} file(s) that are not text: "
                          f"{', '.join(skipped)}", stacklevel=2)

    def _documents(self, file_id: str, path: Path, rows: list[dict]) -> Iterator[Document]:
        """One document per row of a row file, the text in ``text_field`` (and the id in ``id_field``)."""
        columns = sorted({key for row in rows for key in row})
        for field, label in ((self.text_field, "text_field"), (self.id_field, "id_field")):
            if field is not None and field not in columns:
                raise ConfigError(f"data.corpus.{label} = {field!r} is not a column of {path}; its columns are "
                                  f"{columns}.")
        for row_number, row in enumerate(rows):
            text = row.get(self.text_field)
            if text is not None and not isinstance(text, str):
                raise ConfigError(f"data.corpus.text_field = {self.text_field!r}: row {row_number + 1} of {path} "
                                  f"holds a {type(text).__name__}, not text.")
            doc_id = f"{file_id}#{row.get(self.id_field) if self.id_field else row_number}"
            yield Document(doc_id, text or "")


def _read_text(path: Path, refuse: bool) -> str | None:
    """The UTF-8 text of ``path`` (invalid bytes replaced), or ``None`` for a file that is not text and not refused.

    Raises:
        ConfigError: naming the file when it is not text and ``refuse``.
    """
    data = path.read_bytes()
    text = data.decode("utf-8", errors="replace")
    share = text.count("\ufffd") / max(1, len(text))
    if b"\x00" not in data and share <= MAX_REPLACEMENT_SHARE:
        return text
    if not refuse:
        return None
    why = "holds NUL bytes" if b"\x00" in data else f"is {share:.0%} invalid UTF-8"
    raise ConfigError(f"data.corpus.paths: {path} is not a text file (it {why}); remove it from the paths, or set "
                      "data.corpus.init_args.skip_binary: true to leave such files out.")


def _json_lines(path: Path) -> list[dict]:
    """The objects of a JSON Lines file (blank lines skipped).

    Raises:
        ConfigError: naming the file and line of the first line that is not a JSON object.
    """
    rows = []
    with open(path, "rb") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as error:
                raise ConfigError(f"data.corpus.paths: {path} line {number} is not UTF-8 text (byte {error.start + 1} "
                                  "of the line); fix or remove that line.") from None
            except json.JSONDecodeError as error:
                raise ConfigError(f"data.corpus.paths: {path} line {number} is not valid JSON ({error.msg}, column "
                                  f"{error.colno}); fix or remove that line.") from None
            if not isinstance(row, dict):
                raise ConfigError(f"data.corpus.paths: {path} line {number} is a JSON {type(row).__name__}, not an "
                                  "object with a text field.")
            rows.append(row)
    return rows


def _dataset_rows(path: Path, cache_dir: Path) -> list[dict]:
    """The rows of a ``.json`` / ``.parquet`` file, read by ``datasets``.

    Raises:
        ConfigError: naming the file when ``datasets`` cannot read it.
    """
    import datasets

    try:
        rows = datasets.load_dataset(ROW_FORMATS[path.suffix], data_files=[str(path)], split="train",
                                     cache_dir=str(cache_dir))
    except Exception as error:  # datasets wraps parse errors of every format in its own types
        cause = error.__cause__ or error
        raise ConfigError(f"data.corpus.paths: {path} could not be read as {ROW_FORMATS[path.suffix]} "
                          f"({type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}).") from None
    return list(rows)


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

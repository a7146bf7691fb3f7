"""The corpus recipe interface: a small typed class that yields documents and prepares them once into data/.

A recipe is chosen in YAML by ``class_path`` (e.g. ``data.corpus: {class_path: tapa_lab.data.Shakespeare}``); its
constructor arguments are its whole configuration. :meth:`Corpus.prepare` reads the documents once into
``<data_dir>/<name>/`` (``documents.jsonl`` + ``manifest.json``) and reuses that folder while the recipe is unchanged.
Downloads a recipe needs (a wheel, .deb files, a hub dataset) are cached under ``<data_dir>/downloads/``.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from tapa_lab.data.atomic import atomic_directory, exclusive_lock, remove_stale_temporaries
from tapa_lab.data.file_records import damaged_files, record_files
from tapa_lab.data.manifest import DOCUMENTS_FILE, MANIFEST_FILE, DocumentEntry, Manifest


class Document(NamedTuple):
    """A document as a recipe yields it: a stable id (the split is a hash of it) and its text."""

    doc_id: str
    text: str


class CorpusError(RuntimeError):
    """A corpus cannot be obtained or used; the message says why and what to do instead."""


class Corpus(ABC):
    """Base class of the corpus recipes.

    Subclasses store their constructor arguments as public attributes of the same names (they are the recipe's
    identity, see :meth:`recipe`) and implement :meth:`documents`.
    """

    @property
    def name(self) -> str:
        """Folder name under ``data_dir``; recipes whose arguments change the content put them in the name."""
        return type(self).__name__.lower()

    @abstractmethod
    def documents(self, download_dir: Path) -> Iterator[Document]:
        """Yield every document of the corpus (any order; ids must be unique).

        Args:
            download_dir: where to cache anything downloaded (``<data_dir>/downloads``).
        """

    def source_version(self) -> dict:
        """Cheap facts that identify the source's version (e.g. the Python version for the stdlib); part of
        :meth:`recipe`, so a change prepares the corpus again. Empty by default."""
        return {}

    def provenance(self) -> dict:
        """Facts recorded while :meth:`documents` ran (e.g. sha256 of a downloaded file). Empty by default."""
        return {}

    def recipe(self) -> dict:
        """The recipe's identity: class path, constructor arguments and :meth:`source_version`, as plain JSON."""
        recipe = {
            "class_path": f"{type(self).__module__}.{type(self).__qualname__}",
            "init_args": {key: value for key, value in vars(self).items() if not key.startswith("_")},
            "source_version": self.source_version(),
        }
        return json.loads(json.dumps(recipe, sort_keys=True))

    def prepare(self, data_dir: str | Path) -> Manifest:
        """Read the documents once into ``<data_dir>/<name>/`` and return the manifest.

        An existing folder whose manifest records an equal :meth:`recipe` is reused as is, unless its
        ``documents.jsonl`` no longer matches the size and SHA-256 recorded (then it is prepared again, with a
        warning). Otherwise the documents are written to ``documents.jsonl`` and the manifest beside it, atomically.
        Temporary folders of killed prepares in ``data_dir`` are removed first. Empty documents are recorded in the
        manifest but kept out of every split.

        Raises:
            CorpusError: the recipe yields no non-empty document, or two documents with the same id.
        """
        data_dir = Path(data_dir)
        with exclusive_lock(data_dir / f".{self.name}.lock"):  # concurrent prepares take turns (grid workers)
            return self._prepare(data_dir)

    def _prepare(self, data_dir: Path) -> Manifest:
        directory = data_dir / self.name
        remove_stale_temporaries(data_dir)  # left by prepares that were killed
        recipe = self.recipe()
        if (directory / MANIFEST_FILE).exists():
            manifest = Manifest.load(directory)
            damaged = damaged_files(directory, manifest.files)
            if manifest.recipe == recipe and not damaged:
                return manifest
            if damaged:
                warnings.warn(f"prepared corpus {directory} is damaged ({'; '.join(damaged)}); preparing it again.",
                              stacklevel=2)
        entries: dict[str, DocumentEntry] = {}
        empty: list[str] = []
        with atomic_directory(directory) as tmp:
            with open(tmp / DOCUMENTS_FILE, "wb") as file:
                for doc_id, text in self.documents(data_dir / "downloads"):
                    if doc_id in entries or doc_id in empty:
                        raise CorpusError(f"corpus {self.name!r} yields the document id {doc_id!r} twice; document "
                                          "ids must be unique (the split is a hash of them).")
                    if not text:
                        empty.append(doc_id)
                        continue
                    line = json.dumps({"id": doc_id, "text": text}, ensure_ascii=False).encode() + b"\n"
                    sha = hashlib.sha256(text.encode()).hexdigest()
                    entries[doc_id] = DocumentEntry(id=doc_id, sha256=sha, chars=len(text), offset=file.tell())
                    file.write(line)
            if not entries:
                raise CorpusError(f"corpus {self.name!r} has no documents with text (recipe {recipe}); check its "
                                  "arguments, or use another recipe (tapa_lab.data.Shakespeare, PyStdlib, LocalFiles).")
            manifest = Manifest(directory=tmp, recipe=recipe, provenance=self.provenance(),
                                documents=tuple(entries[key] for key in sorted(entries)),
                                skipped_empty=tuple(sorted(empty)), files=record_files(tmp, [DOCUMENTS_FILE]))
            manifest.save()
        return Manifest.load(directory)

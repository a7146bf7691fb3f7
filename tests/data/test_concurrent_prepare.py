"""Two processes preparing the same corpus and token cache at once (two grid workers on a fresh machine, or the ranks
of a DDP run) take turns: the corpus is read once, both get the same cache, and neither loses the folder it is
writing into (before the lock, the second prepare replaced the corpus folder under the first one's cache build)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tapa_lab.data.fixture import Fixture
from tapa_lab.data.packing import pack_corpus
from tapa_lab.data.tokenizer_byte import ByteTokenizer


class SlowFixture(Fixture):
    """The fixture corpus, read slowly, counting how often it is read."""

    reads = 0

    def documents(self, download_dir: Path) -> Iterator[tuple[str, str]]:
        type(self).reads += 1
        for document in super().documents(download_dir):
            time.sleep(0.01)
            yield document


def test_concurrent_prepares_read_the_corpus_once_and_share_one_cache(tmp_path):
    results, errors = [], []

    def prepare() -> None:
        try:
            results.append(pack_corpus(SlowFixture(), ByteTokenizer(), tmp_path, 0.1, 0.1))
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=prepare) for _ in range(3)]  # flock serialises separate open() calls too
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(results) == 3
    assert SlowFixture.reads == 1
    first, *others = results
    for other in others:
        assert other.directory == first.directory
    assert (first.directory / "train.bin").stat().st_size > 0

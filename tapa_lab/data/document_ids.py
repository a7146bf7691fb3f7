"""Document ids of packed windows, for intra-document causal masking (``data.document_mask``).

In the packed stream every document ends with the end-of-document token (:mod:`tapa_lab.data.packing`), so the
document a token belongs to is the number of end-of-document tokens strictly before it in the window: ids start at 0
in each window and grow by one after each end-of-document (which belongs to the document it ends). A model given
these ids lets a query attend only to keys with the same id (``PositionalEncoding.attend(..., document_ids)``).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from tapa_lab.data.eval_windows import EvalWindows
from tapa_lab.data.train_windows import TrainWindows


def document_ids(tokens: Tensor, eod_id: int) -> Tensor:
    """Per-token document index inside each window: the count of end-of-document tokens before it.

    Args:
        tokens: ``(..., L)`` token ids.
        eod_id: the end-of-document token id.

    Returns:
        ``(..., L)`` int64, non-decreasing along the last dim, starting at 0.
    """
    ends = (tokens == eod_id).to(torch.int64)
    return ends.cumsum(-1) - ends


def split_batch(batch: Tensor | tuple[Tensor, Tensor] | list[Tensor]) -> tuple[Tensor, Tensor | None]:
    """``(tokens, document_ids)`` of a batch: a token tensor ``(B, L + 1)`` alone (ids ``None``) or the pair that
    :class:`WithDocumentIds` items collate to."""
    if isinstance(batch, Tensor):
        return batch, None
    tokens, ids = batch
    return tokens, ids


class WithDocumentIds(Dataset):
    """A window dataset whose items become ``(tokens, document_ids)``, both int64 ``(seq_len + 1,)``.

    The ids depend on the window's tokens only, so a resumable stream stays exactly resumable.

    Args:
        windows: a dataset of token windows (training stream, validation or test windows).
        eod_id: the end-of-document token id.
    """

    def __init__(self, windows: TrainWindows | EvalWindows, eod_id: int) -> None:
        self.windows = windows
        self.eod_id = eod_id

    def __len__(self) -> int:
        if isinstance(self.windows, TrainWindows):
            raise TypeError("the training stream has no length: its sampler says how many windows it draws.")
        return len(self.windows)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        tokens = self.windows[index]
        return tokens, document_ids(tokens, self.eod_id)

"""Evaluation windows: fixed, deterministic sets of windows, spread evenly over a packed split (:class:`EvalWindows`)
or drawn from inside single documents (:class:`DocumentWindows`, validation at several lengths)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset


class EvalWindows(Dataset):
    """``count`` windows of ``seq_len + 1`` tokens whose starts are evenly spaced from the first token to the last
    start that fits (they overlap when the split is shorter than ``count * (seq_len + 1)``).

    Args:
        tokens: the packed split ``(n,)``, ``n >= seq_len + 1``.
        seq_len: the evaluation length; a window has ``seq_len + 1`` tokens (inputs ``[:-1]``, targets ``[1:]``).
        count: number of windows (>= 1).
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, count: int) -> None:
        self.tokens = tokens
        self.seq_len = seq_len
        self.starts = np.linspace(0, len(tokens) - seq_len - 1, count).round().astype(np.int64)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> Tensor:
        """Window ``index``: an int64 tensor ``(seq_len + 1,)``."""
        start = int(self.starts[index])
        return torch.from_numpy(self.tokens[start:start + self.seq_len + 1].astype(np.int64))


class DocumentWindows(Dataset):
    """``count`` windows of ``seq_len + 1`` tokens, each inside one document, as the long-context evaluation draws
    them (``tapa-lab eval``, nonoverlapping mode): windows at starts ``0, seq_len, 2 seq_len, ...`` of every document
    long enough, in document order, thinned to an evenly spaced subset of ``count``.

    Args:
        documents: the split's documents (token arrays without end-of-document), at least one of ``seq_len + 1``
            tokens or more.
        seq_len: the window length; a window has ``seq_len + 1`` tokens (inputs ``[:-1]``, targets ``[1:]``).
        count: number of windows at most (>= 1); fewer when the documents hold fewer.
    """

    def __init__(self, documents: list[np.ndarray], seq_len: int, count: int) -> None:
        self.documents = documents
        self.seq_len = seq_len
        windows = [(doc, start) for doc, tokens in enumerate(documents) if len(tokens) >= seq_len + 1
                   for start in range(0, len(tokens) - seq_len, seq_len)]
        if not windows:
            raise ValueError(f"no document has {seq_len + 1} tokens or more")
        keep = np.linspace(0, len(windows) - 1, min(count, len(windows))).round().astype(np.int64)
        self.windows = [windows[i] for i in keep]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> Tensor:
        """Window ``index``: an int64 tensor ``(seq_len + 1,)``."""
        doc, start = self.windows[index]
        return torch.from_numpy(self.documents[doc][start:start + self.seq_len + 1].astype(np.int64))

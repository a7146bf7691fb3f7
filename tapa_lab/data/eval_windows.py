"""Evaluation windows: a fixed, deterministic set of ``count`` windows spread evenly over a packed split."""

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

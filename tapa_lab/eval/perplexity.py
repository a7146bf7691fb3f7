"""Perplexity beyond the training length (PROTOCOLS.md), with the loss by position inside the window.

For an evaluation length L, windows of L input tokens (plus the next token as the last target) are taken from inside
single documents of the split, so no window spans two documents. Two modes:

- ``sliding`` (Press et al. 2022, "Train Short, Test Long", arXiv 2108.12409; the TAPA paper uses stride 256): the
  window slides by ``stride`` s; only its last s targets are scored, so each has at least L - s tokens of context.
- ``nonoverlapping``: disjoint windows; every target is scored (context from 1 to L tokens).
  Sliding with ``stride = L`` is exactly this mode.

Perplexity = exp(mean NLL over the scored tokens). The loss by position is the mean NLL at each window position
(every position of every evaluated window, whatever the mode), averaged into equal-width buckets: where it rises is
where extrapolation breaks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tapa_lab.errors import ConfigError, require

PerplexityMode = Literal["sliding", "nonoverlapping"]
#: The TAPA paper's sliding-window stride.
PAPER_STRIDE = 256


def eval_lengths(multiples: list[float], lengths: list[int] | None, train_seq_len: int, field_prefix: str) -> list[int]:
    """Absolute evaluation lengths: ``lengths`` when given, else ``multiples`` of the training length.

    Raises:
        ConfigError: naming ``<field_prefix>.lengths`` / ``.multiples`` when empty or not positive.
    """
    if lengths is not None:
        require(len(lengths) > 0 and all(n >= 1 for n in lengths), f"{field_prefix}.lengths",
                "null or a non-empty list of lengths >= 1", lengths)
        return [int(n) for n in lengths]
    require(len(multiples) > 0 and all(m > 0 for m in multiples), f"{field_prefix}.multiples",
            "a non-empty list of positive multiples of the training length", multiples)
    return [max(1, round(m * train_seq_len)) for m in multiples]


@dataclass
class PerplexityConfig:
    """Perplexity by evaluation length (PROTOCOLS.md, "Perplexity beyond the training length")."""

    multiples: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0, 8.0, 16.0])
    """Evaluation lengths as multiples of the run's training length (data.seq_len)."""
    lengths: list[int] | None = None
    """Absolute evaluation lengths in tokens; when set, replaces multiples."""
    mode: PerplexityMode = "sliding"
    """sliding: score the last `stride` tokens of windows that slide by `stride`; nonoverlapping: disjoint windows,
    every token scored."""
    stride: int | None = None
    """Sliding-window stride in tokens (<= every length); null: the paper's 256, or length // 2 for lengths below 512.
    Ignored in nonoverlapping mode."""
    max_tokens: int = 32768
    """Tokens scored per length at most; when the split offers more windows, an evenly spaced subset is used."""
    batch_tokens: int = 16384
    """Input tokens per forward pass (windows per batch = max(1, batch_tokens // length))."""
    position_buckets: int = 16
    """Equal-width position buckets of the loss-by-position curve."""

    def lengths_for(self, train_seq_len: int) -> list[int]:
        """The absolute evaluation lengths."""
        return eval_lengths(self.multiples, self.lengths, train_seq_len, "perplexity")

    def stride_for(self, length: int) -> int:
        """Tokens scored per window at ``length`` (``length`` itself in nonoverlapping mode)."""
        if self.mode == "nonoverlapping":
            return length
        if self.stride is not None:
            return self.stride
        return PAPER_STRIDE if length >= 2 * PAPER_STRIDE else max(1, length // 2)

    def validate(self, train_seq_len: int, longest_document: int) -> None:
        """Raise :class:`ConfigError` naming the first bad field, before any evaluation work."""
        require(self.mode in ("sliding", "nonoverlapping"), "perplexity.mode", "sliding or nonoverlapping", self.mode)
        require(self.max_tokens >= 1, "perplexity.max_tokens", ">= 1", self.max_tokens)
        require(self.batch_tokens >= 1, "perplexity.batch_tokens", ">= 1", self.batch_tokens)
        require(self.position_buckets >= 1, "perplexity.position_buckets", ">= 1", self.position_buckets)
        lengths = self.lengths_for(train_seq_len)
        if self.mode == "sliding" and self.stride is not None:
            require(1 <= self.stride <= min(lengths), "perplexity.stride",
                    f"in [1, {min(lengths)}] (no larger than the shortest window, {min(lengths)} tokens)", self.stride)
        too_long = [n for n in lengths if n + 1 > longest_document]
        if too_long:
            name = "perplexity.lengths" if self.lengths is not None else "perplexity.multiples"
            raise ConfigError(f"{name}: evaluation lengths {too_long} are longer than every document of the split "
                              f"(the longest has {longest_document} tokens, so lengths up to {longest_document - 1} "
                              "fit); lower them or evaluate on a corpus with longer documents.")


@dataclass(frozen=True)
class Window:
    """``length + 1`` tokens of document ``document`` from ``start``; the last ``scored`` targets count."""

    document: int
    start: int
    scored: int


def plan_windows(document_lengths: list[int], length: int, stride: int, max_tokens: int) -> list[Window]:
    """Windows at starts ``0, stride, 2 stride, ...`` of every document long enough, thinned to an evenly spaced
    subset of at most ``ceil(max_tokens / stride)`` windows (documents in order)."""
    windows = [Window(doc, start, stride)
               for doc, n in enumerate(document_lengths) if n >= length + 1
               for start in range(0, n - length, stride)]
    budget = max(1, math.ceil(max_tokens / stride))
    if len(windows) > budget:
        keep = np.linspace(0, len(windows) - 1, budget).round().astype(np.int64)
        windows = [windows[i] for i in keep]
    return windows


@torch.inference_mode()
def token_losses(model: nn.Module, windows: Tensor) -> Tensor:
    """Next-token NLL at every position of each window.

    Args:
        model: maps tokens ``(B, L)`` to logits ``(B, L, V)``.
        windows: ``(B, L + 1)`` token ids.

    Returns:
        ``(B, L)`` float32: the loss of predicting ``windows[:, t + 1]`` from ``windows[:, :t + 1]``.
    """
    logits = model(windows[:, :-1])
    return F.cross_entropy(logits.float().transpose(1, 2), windows[:, 1:], reduction="none")


def evaluate_length(model: nn.Module, documents: list[np.ndarray], length: int, stride: int, config: PerplexityConfig,
                    device: torch.device, advance: Callable[[int], None]) -> tuple[dict, dict]:
    """Perplexity and loss by position at one length.

    Args:
        model: tokens ``(B, L)`` -> logits ``(B, L, V)``.
        documents: token arrays of the split's documents.
        length: window length L.
        stride: tokens scored per window (L in nonoverlapping mode).
        config: the perplexity settings (mode, budget, batching, buckets).
        device: where the windows go.
        advance: called with the number of windows done after each batch (progress bars).

    Returns:
        ``(row, position_loss)``: the perplexity row and the bucketed loss-by-position curve of this length.
    """
    windows = plan_windows([len(d) for d in documents], length, stride, config.max_tokens)
    batch_size = max(1, config.batch_tokens // length)
    nll_sum, scored, position_sum = 0.0, 0, np.zeros(length, dtype=np.float64)
    for first in range(0, len(windows), batch_size):
        batch = windows[first:first + batch_size]
        tokens = torch.from_numpy(np.stack([documents[w.document][w.start:w.start + length + 1] for w in batch])
                                  .astype(np.int64)).to(device)
        losses = token_losses(model, tokens).double()  # (B, L)
        nll_sum += float(losses[:, length - stride:].sum())
        scored += len(batch) * stride
        position_sum += losses.sum(0).cpu().numpy()
        advance(len(batch))
    nll = nll_sum / scored
    edges = np.linspace(0, length, min(config.position_buckets, length) + 1).round().astype(np.int64)
    position_mean = position_sum / len(windows)
    bucket_loss = [float(position_mean[lo:hi].mean()) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    row = {"length": length, "perplexity": math.exp(nll), "nll": nll, "tokens": scored, "windows": len(windows),
           "mode": config.mode, "stride": stride if config.mode == "sliding" else None}
    return row, {"length": length, "bucket_edges": edges.tolist(), "loss": bucket_loss}

"""ALiBi: a per-head linear distance penalty on the scores (Press et al. 2022, "Train Short, Test Long",
arXiv 2108.12409)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tapa_lab.posenc.base import PositionalEncoding


def alibi_slopes(n_heads: int) -> Tensor:
    """The paper's head slopes, ``(n_heads,)`` float32.

    For a power of two n the slopes are the geometric sequence starting at 2^(-8/n) with that ratio. Otherwise (the
    paper's reference code) take the n0 = 2^floor(log2 n) slopes, then every other slope of the 2 n0 sequence.
    """

    def geometric(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    n0 = 2 ** math.floor(math.log2(n_heads))
    slopes = geometric(n0) + geometric(2 * n0)[0::2][: n_heads - n0]
    return torch.tensor(slopes, dtype=torch.float32)


class ALiBi(PositionalEncoding):
    """Attention with linear biases: score(i, j) = q_i.k_j / sqrt(D) - m_h (i - j).

    Args:
        backend: attention implementation: ``auto`` (Triton on CUDA, PyTorch elsewhere), ``triton`` or ``torch``.
    """

    slopes: Tensor  # the (n_heads,) buffer that bind registers

    def bind(self, n_heads: int, n_kv_heads: int, head_dim: int) -> None:
        super().bind(n_heads, n_kv_heads, head_dim)
        self.register_buffer("slopes", alibi_slopes(n_heads), persistent=False)

    def score_bias(self) -> Tensor:
        return self.slopes

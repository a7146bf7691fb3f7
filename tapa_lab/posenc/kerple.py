"""KERPLE: kernelized relative positional embedding (Chi et al. 2022, "KERPLE: Kernelized Relative Positional Embedding
for Length Extrapolation", NeurIPS, arXiv 2205.09921, section 4): a conditionally positive definite kernel of the
distance, with two learned positive parameters per head, added to the scores.

    logarithmic:  score(i, j) = q_i . k_j / sqrt(D) - r1_h ln(1 + r2_h |i - j|)     r1, r2 > 0
    power:        score(i, j) = q_i . k_j / sqrt(D) - r1_h |i - j|^r2_h              r1 > 0, 0 < r2 <= 2

As the authors' code, the parameters are initialised uniformly (logarithmic: r1 in (0, 2), r2 in (0, 1); power:
r1 in (0, 1), r2 in (0, 2)) and kept in range by clamping at eps = 0.01 (and r2 <= 2). The authors clamp the stored
parameters in place before each forward; here the clamp is applied to the values used, with the gradient passed
straight through, which gives the same scores and lets a parameter below eps come back, as theirs does.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tapa_lab.posenc.score_mod import _PositionBias

EPS = 1e-2


class _Kerple(_PositionBias):
    """Shared parameters of the two KERPLE kernels: ``r1`` and ``r2``, ``(H,)`` each, drawn uniformly in
    ``(0, r1_max)`` and ``(0, r2_max)``."""

    r1_max: float = 1.0
    r2_max: float = 1.0

    def bind(self, n_heads: int, n_kv_heads: int, head_dim: int) -> None:
        super().bind(n_heads, n_kv_heads, head_dim)
        self.r1 = nn.Parameter(torch.rand(n_heads) * self.r1_max)
        self.r2 = nn.Parameter(torch.rand(n_heads) * self.r2_max)

    def clamped(self, param: Tensor, head: Tensor, high: float | None = None) -> Tensor:
        """``param[head]`` clamped to [eps, high] in value, with the identity's gradient (straight through)."""
        value = param[head]
        return value + (value.clamp(EPS, high) - value).detach()

    def distance(self, query: Tensor, key: Tensor) -> Tensor:
        """``|i - j|`` as float (future keys give |i - j| too; they are masked)."""
        return (query - key).abs().to(self.r1.dtype)


class KerpleLog(_Kerple):
    """KERPLE, logarithmic kernel: -r1_h ln(1 + r2_h |i - j|).

    Args:
        backend: ``auto`` (FlexAttention on CUDA, the blockwise PyTorch path elsewhere), ``triton`` (FlexAttention)
            or ``torch`` (blockwise).
    """

    r1_max = 2.0
    r2_max = 1.0

    def head_bias(self, head: Tensor, query: Tensor, key: Tensor) -> Tensor:
        r1, r2 = self.clamped(self.r1, head), self.clamped(self.r2, head)
        return -r1 * torch.log1p(r2 * self.distance(query, key))


class KerplePower(_Kerple):
    """KERPLE, power kernel: -r1_h |i - j|^r2_h.

    Args:
        backend: ``auto`` (FlexAttention on CUDA, the blockwise PyTorch path elsewhere), ``triton`` (FlexAttention)
            or ``torch`` (blockwise).
    """

    r1_max = 1.0
    r2_max = 2.0

    def head_bias(self, head: Tensor, query: Tensor, key: Tensor) -> Tensor:
        distance = self.distance(query, key)
        r1, r2 = self.clamped(self.r1, head), self.clamped(self.r2, head, 2.0)
        # 0^r2 = 0, with a finite gradient in r2 (pow at 0 would give 0 * log 0 = nan)
        positive = distance > 0
        return torch.where(positive, -r1 * torch.where(positive, distance, 1.0).pow(r2), 0.0)

"""RoPE context-extension variants: each overrides one method of :class:`~tapa_lab.posenc.rope.RoPE`.

- Position interpolation (Chen et al. 2023, arXiv 2306.15595): w_d / s.
- NTK-aware scaling (bloc97, 2023; as defined in the YaRN paper, arXiv 2309.00071, eq. 16): base' = base s^(R/(R-2)).
- YaRN (Peng et al. 2023, arXiv 2309.00071, section 3): "NTK-by-parts" interpolation with the ramp
  gamma(r) over r_d = L_orig / lambda_d, lambda_d = 2 pi / w_d, between beta_slow and beta_fast, and the attention
  temperature sqrt(1/t) = 0.1 ln s + 1 applied to q and k.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tapa_lab.errors import require
from tapa_lab.kernels import Backend
from tapa_lab.posenc.rope import RoPE


class PositionInterpolation(RoPE):
    """RoPE with linearly interpolated positions: w_d / factor.

    Args:
        factor: context-extension factor s (new length / original length); >= 1.
        base: the frequency base; w_d = base^(-2d/R).
        rotary_fraction: fraction of each head's dimensions that rotate; in (0, 1].
        backend: attention implementation: ``auto``, ``triton`` or ``torch``.
    """

    def __init__(self, factor: float = 8.0, base: float = 10000.0, rotary_fraction: float = 1.0,
                 backend: Backend = "auto") -> None:
        super().__init__(base, rotary_fraction, backend)
        require(factor >= 1, "posenc.factor", ">= 1", factor)
        self.factor = factor

    def inv_freq(self) -> Tensor:
        return self.base_inv_freq() / self.factor


class NTKAwareRoPE(RoPE):
    """RoPE with the NTK-aware base change: base' = base * factor^(R / (R - 2)).

    Args:
        factor: context-extension factor s; >= 1.
        base: the original frequency base.
        rotary_fraction: fraction of each head's dimensions that rotate; in (0, 1].
        backend: attention implementation: ``auto``, ``triton`` or ``torch``.
    """

    def __init__(self, factor: float = 8.0, base: float = 10000.0, rotary_fraction: float = 1.0,
                 backend: Backend = "auto") -> None:
        super().__init__(base, rotary_fraction, backend)
        require(factor >= 1, "posenc.factor", ">= 1", factor)
        self.factor = factor

    def inv_freq(self) -> Tensor:
        r = self.rotary_dim
        scaled_base = self.base * self.factor ** (r / (r - 2)) if r > 2 else self.base * self.factor
        d = torch.arange(0, r, 2, dtype=torch.float64)
        return scaled_base ** (-d / r)


class YaRN(RoPE):
    """YaRN: NTK-by-parts interpolation plus attention temperature.

    Args:
        factor: context-extension factor s; >= 1.
        original_max_len: the context length the model was (pre)trained at, L_orig; >= 1.
        beta_fast: above this many rotations per L_orig a dimension is not interpolated (paper: 32).
        beta_slow: below this many rotations per L_orig a dimension is fully interpolated (paper: 1).
        base: the frequency base.
        rotary_fraction: fraction of each head's dimensions that rotate; in (0, 1].
        backend: attention implementation: ``auto``, ``triton`` or ``torch``.
    """

    def __init__(self, factor: float = 8.0, original_max_len: int = 4096, beta_fast: float = 32.0,
                 beta_slow: float = 1.0, base: float = 10000.0, rotary_fraction: float = 1.0,
                 backend: Backend = "auto") -> None:
        super().__init__(base, rotary_fraction, backend)
        require(factor >= 1, "posenc.factor", ">= 1", factor)
        require(original_max_len >= 1, "posenc.original_max_len", ">= 1", original_max_len)
        require(beta_fast > beta_slow > 0, "posenc.beta_fast / posenc.beta_slow", "beta_fast > beta_slow > 0",
                (beta_fast, beta_slow))
        self.factor = factor
        self.original_max_len = original_max_len
        self.beta_fast = beta_fast
        self.beta_slow = beta_slow

    def ramp(self) -> Tensor:
        """gamma_d in [0, 1]: 1 keeps w_d (high frequency), 0 interpolates w_d / s (low frequency); ``(R/2,)``."""
        wavelength = 2 * math.pi / self.base_inv_freq()
        rotations = self.original_max_len / wavelength
        return ((rotations - self.beta_slow) / (self.beta_fast - self.beta_slow)).clamp(0.0, 1.0)

    def inv_freq(self) -> Tensor:
        w = self.base_inv_freq()
        gamma = self.ramp()
        return (1 - gamma) * w / self.factor + gamma * w

    def attention_factor(self) -> float:
        return 0.1 * math.log(self.factor) + 1.0

"""RoPE context-extension variants: each overrides one method of :class:`~tapa_lab.posenc.rope.RoPE`.

- Position interpolation (Chen et al. 2023, arXiv 2306.15595): w_d / s.
- NTK-aware scaling (bloc97, 2023; as defined in the YaRN paper, arXiv 2309.00071, eq. 16): base' = base s^(R/(R-2)).
- YaRN (Peng et al. 2023, arXiv 2309.00071, section 3): "NTK-by-parts" interpolation w'_d = (1 - gamma_d) w_d / s +
  gamma_d w_d and the attention temperature sqrt(1/t) = 0.1 ln s + 1 applied to q and k. By default gamma follows the
  YaRN authors' code, which Hugging Face transformers' ``yarn`` RoPE initialisation copies and which the released YaRN
  checkpoints use: a linear ramp over the *dimension index* between the dimensions where the wavelength fits
  beta_fast and beta_slow times into L_orig (floor/ceil of those dimensions). The paper's formula, a linear ramp over
  the number of *rotations* r_d = L_orig / lambda_d, is ``ramp_over="rotations"``; the two differ by up to ~60% on
  some frequencies.
- Llama 3 scaling: ``rope_llama3.py``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from tapa_lab.errors import require
from tapa_lab.kernels import Backend
from tapa_lab.posenc.rope import RoPE

RAMPS = ("dimensions", "rotations")


class _ScaledRoPE(RoPE):
    """RoPE with a context-extension factor s (new length / original length).

    Args:
        factor: context-extension factor s; >= 1.
        base: the frequency base; w_d = base^(-2d/R).
        rotary_fraction: fraction of each head's dimensions that rotate; in (0, 1].
        backend: attention implementation: ``auto``, ``triton`` or ``torch``.
    """

    def __init__(self, factor: float = 8.0, base: float = 10000.0, rotary_fraction: float = 1.0,
                 backend: Backend = "auto") -> None:
        super().__init__(base, rotary_fraction, backend)
        require(factor >= 1, "model.posenc.init_args.factor", ">= 1", factor)
        self.factor = factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}, {super().extra_repr()}"


class PositionInterpolation(_ScaledRoPE):
    """RoPE with linearly interpolated positions: w_d / factor (transformers' ``linear`` rope type).

    Args: as :class:`_ScaledRoPE` (``factor``, ``base``, ``rotary_fraction``, ``backend``).
    """

    def inv_freq(self) -> Tensor:
        return self.base_inv_freq() / self.factor


class NTKAwareRoPE(_ScaledRoPE):
    """RoPE with the static NTK-aware base change: base' = base * factor^(R / (R - 2)).

    Args: as :class:`_ScaledRoPE` (``factor``, ``base``, ``rotary_fraction``, ``backend``).
    """

    def inv_freq(self) -> Tensor:
        r = self.rotary_dim
        scaled_base = self.base * self.factor ** (r / (r - 2)) if r > 2 else self.base * self.factor
        d = torch.arange(0, r, 2, dtype=torch.float64)
        return scaled_base ** (-d / r)


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's temperature 0.1 mscale ln s + 1 (1 when s <= 1), as transformers' ``get_mscale``."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


class YaRN(_ScaledRoPE):
    """YaRN: NTK-by-parts interpolation plus attention temperature (transformers' ``yarn`` rope type by default).

    Args:
        factor: context-extension factor s; >= 1.
        original_max_len: the context length the model was (pre)trained at, L_orig; >= 1.
        beta_fast: dimensions whose wavelength fits more than this many times into L_orig are not interpolated (32).
        beta_slow: dimensions whose wavelength fits fewer than this many times are fully interpolated (1).
        ramp_over: ``dimensions`` (the YaRN authors' code and transformers: gamma linear in the dimension index, the
            ends rounded by ``truncate``) or ``rotations`` (the paper's formula: gamma linear in r_d = L_orig/lambda_d).
        truncate: with ``ramp_over=dimensions``, floor the first and ceil the last ramp dimension (transformers'
            default); ignored for ``rotations``.
        mscale, mscale_all_dim: when both are given (and nonzero), the attention factor is
            (0.1 mscale ln s + 1) / (0.1 mscale_all_dim ln s + 1) (DeepSeek-style checkpoints); otherwise 0.1 ln s + 1.
        base: the frequency base.
        rotary_fraction: fraction of each head's dimensions that rotate; in (0, 1].
        backend: attention implementation: ``auto``, ``triton`` or ``torch``.
    """

    def __init__(self, factor: float = 8.0, original_max_len: int = 4096, beta_fast: float = 32.0,
                 beta_slow: float = 1.0, ramp_over: Literal["dimensions", "rotations"] = "dimensions",
                 truncate: bool = True, mscale: float | None = None, mscale_all_dim: float | None = None,
                 base: float = 10000.0, rotary_fraction: float = 1.0, backend: Backend = "auto") -> None:
        super().__init__(factor, base, rotary_fraction, backend)
        require(original_max_len >= 1, "model.posenc.init_args.original_max_len", ">= 1", original_max_len)
        require(beta_fast > beta_slow > 0, "model.posenc.init_args.beta_fast",
                f"> beta_slow = {beta_slow!r}, and beta_slow > 0", beta_fast)
        require(ramp_over in RAMPS, "model.posenc.init_args.ramp_over", f"one of {', '.join(RAMPS)}", ramp_over)
        self.original_max_len = original_max_len
        self.beta_fast = beta_fast
        self.beta_slow = beta_slow
        self.ramp_over = ramp_over
        self.truncate = truncate
        self.mscale = mscale
        self.mscale_all_dim = mscale_all_dim

    def _correction_dim(self, rotations: float) -> float:
        """The (fractional) pair index whose wavelength fits ``rotations`` times into L_orig."""
        r = self.rotary_dim
        return r * math.log(self.original_max_len / (rotations * 2 * math.pi)) / (2 * math.log(self.base))

    def ramp(self) -> Tensor:
        """gamma_d in [0, 1]: 1 keeps w_d (high frequency), 0 interpolates w_d / s (low frequency); ``(R/2,)``."""
        if self.ramp_over == "rotations":
            rotations = self.original_max_len * self.base_inv_freq() / (2 * math.pi)
            return ((rotations - self.beta_slow) / (self.beta_fast - self.beta_slow)).clamp(0.0, 1.0)
        low, high = self._correction_dim(self.beta_fast), self._correction_dim(self.beta_slow)
        if self.truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, self.rotary_dim - 1)
        if low == high:
            high += 0.001  # as the reference code: avoid a zero-width ramp
        d = torch.arange(self.rotary_dim // 2, dtype=torch.float64)
        return 1.0 - ((d - low) / (high - low)).clamp(0.0, 1.0)

    def inv_freq(self) -> Tensor:
        w = self.base_inv_freq()
        gamma = self.ramp()
        return (1 - gamma) * w / self.factor + gamma * w

    def attention_factor(self) -> float:
        if self.mscale and self.mscale_all_dim:
            return yarn_mscale(self.factor, self.mscale) / yarn_mscale(self.factor, self.mscale_all_dim)
        return yarn_mscale(self.factor)

    def extra_repr(self) -> str:
        return (f"original_max_len={self.original_max_len}, beta_fast={self.beta_fast}, beta_slow={self.beta_slow}, "
                f"ramp_over={self.ramp_over}, {super().extra_repr()}")

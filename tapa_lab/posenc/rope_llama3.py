"""Llama 3 RoPE scaling (Meta 2024, "The Llama 3 Herd of Models", arXiv 2407.21783; transformers' ``llama3`` rope type).

With wavelengths lambda_d = 2 pi / w_d and L0 the original context length, frequencies are split in three bands:

    lambda_d < L0 / high_freq_factor:  w'_d = w_d                                   (high frequencies: kept)
    lambda_d > L0 / low_freq_factor:   w'_d = w_d / s                               (low frequencies: interpolated)
    otherwise:                         w'_d = (1 - g) w_d / s + g w_d,  g = (L0 / lambda_d - low) / (high - low)

Llama 3.1 uses s = 8, low = 1, high = 4, L0 = 8192, base 5e5. No attention temperature.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tapa_lab.errors import require
from tapa_lab.kernels import Backend
from tapa_lab.posenc.rope_scaling import _ScaledRoPE


class Llama3RoPE(_ScaledRoPE):
    """RoPE with Llama 3's band-wise frequency scaling.

    Args:
        factor: context-extension factor s; >= 1.
        low_freq_factor: wavelengths longer than L0 / low_freq_factor are fully interpolated; > 0.
        high_freq_factor: wavelengths shorter than L0 / high_freq_factor are kept; > low_freq_factor.
        original_max_len: the original context length L0; >= 1.
        base: the frequency base (Llama 3: 5e5).
        rotary_fraction: fraction of each head's dimensions that rotate; in (0, 1].
        backend: attention implementation: ``auto``, ``triton`` or ``torch``.
    """

    def __init__(self, factor: float = 8.0, low_freq_factor: float = 1.0, high_freq_factor: float = 4.0,
                 original_max_len: int = 8192, base: float = 500000.0, rotary_fraction: float = 1.0,
                 backend: Backend = "auto") -> None:
        super().__init__(factor, base, rotary_fraction, backend)
        require(low_freq_factor > 0, "model.posenc.init_args.low_freq_factor", "> 0", low_freq_factor)
        require(high_freq_factor > low_freq_factor, "model.posenc.init_args.high_freq_factor",
                f"> low_freq_factor = {low_freq_factor!r}", high_freq_factor)
        require(original_max_len >= 1, "model.posenc.init_args.original_max_len", ">= 1", original_max_len)
        self.low_freq_factor = low_freq_factor
        self.high_freq_factor = high_freq_factor
        self.original_max_len = original_max_len

    def inv_freq(self) -> Tensor:
        w = self.base_inv_freq()
        wavelength = 2 * math.pi / w
        relative = self.original_max_len / wavelength  # L0 / lambda_d
        smooth = ((relative - self.low_freq_factor) / (self.high_freq_factor - self.low_freq_factor)).clamp(0.0, 1.0)
        mixed = (1 - smooth) * w / self.factor + smooth * w
        high_band = wavelength < self.original_max_len / self.high_freq_factor
        low_band = wavelength > self.original_max_len / self.low_freq_factor
        return torch.where(high_band, w, torch.where(low_band, w / self.factor, mixed))

    def extra_repr(self) -> str:
        return (f"low_freq_factor={self.low_freq_factor}, high_freq_factor={self.high_freq_factor}, "
                f"original_max_len={self.original_max_len}, {super().extra_repr()}")

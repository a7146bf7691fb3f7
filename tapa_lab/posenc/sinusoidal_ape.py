"""Sinusoidal absolute position embeddings (Vaswani et al. 2017, "Attention Is All You Need", arXiv 1706.03762,
section 3.5), added to the token embeddings:

    PE(t, 2i) = sin(t / base^(2i/d)),   PE(t, 2i + 1) = cos(t / base^(2i/d)),   base = 10000
    x_t = E[token_t] + scale * PE(t)

Vaswani et al. multiply the embeddings by sqrt(d) instead; with the lab's N(0, 0.02^2) embeddings the sinusoid is
scaled down, by ``scale`` = 1/sqrt(d) by default (the initial value of x-transformers' ScaledSinusoidalEmbedding, kept
fixed here). Attention itself is plain causal attention. Defined for every position (computed in float64).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tapa_lab.errors import require
from tapa_lab.kernels import Backend
from tapa_lab.posenc.base import PositionalEncoding


def sinusoid_table(positions: Tensor, d_model: int, base: float) -> Tensor:
    """Vaswani et al.'s interleaved sin/cos embedding of ``positions`` ``(L,)``: ``(L, d_model)`` float64."""
    inv_freq = base ** (-torch.arange(0, d_model, 2, dtype=torch.float64, device=positions.device) / d_model)
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]  # (L, d/2)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # (L, d): sin, cos interleaved


class SinusoidalAPE(PositionalEncoding):
    """Fixed sinusoidal absolute position embeddings, added once to the token embeddings.

    Args:
        base: the wavelength base; > 1 (paper: 10000).
        scale: factor of the sinusoid; ``null`` for 1/sqrt(d_model); > 0 otherwise.
        backend: attention implementation: ``auto`` (Triton on CUDA, PyTorch elsewhere), ``triton`` or ``torch``.
    """

    translation_invariant = False

    def __init__(self, base: float = 10000.0, scale: float | None = None, backend: Backend = "auto") -> None:
        super().__init__(backend)
        require(base > 1, "model.posenc.init_args.base", "> 1", base)
        require(scale is None or scale > 0, "model.posenc.init_args.scale", "null or > 0", scale)
        self.base = base
        self.scale = scale
        self.d_model = 0

    def bind_embedding(self, d_model: int) -> None:
        require(d_model % 2 == 0, "model.architecture.d_model", "even for SinusoidalAPE", d_model)
        self.d_model = d_model

    def embed(self, x: Tensor, positions: Tensor) -> Tensor:
        scale = self.scale if self.scale is not None else 1 / math.sqrt(self.d_model)
        return x + (scale * sinusoid_table(positions, self.d_model, self.base)).to(x.dtype)[None]

    def extra_repr(self) -> str:
        return f"base={self.base}, scale={self.scale}, {super().extra_repr()}"

"""NoPE: no positional encoding; the causal mask alone carries order (Kazemnejad et al. 2023, arXiv 2305.19466)."""

from __future__ import annotations

from tapa_lab.posenc.base import PositionalEncoding


class NoPE(PositionalEncoding):
    """No positional encoding: plain causal attention over q, k, v.

    Args:
        backend: attention implementation: ``auto`` (Triton on CUDA, PyTorch elsewhere), ``triton`` or ``torch``.
    """

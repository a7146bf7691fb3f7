"""RoPE's rotation in PyTorch (Su et al. 2021, "RoFormer", arXiv 2104.09864): the non-Triton path and the reference of
:mod:`tapa_lab.kernels.triton_rope`.

Pairs follow the GPT-NeoX/Llama layout: dimension ``d`` pairs with ``d + R/2`` and turns by the angle whose cosine and
sine are ``cos[:, d]``, ``sin[:, d]``; dimensions ``>= R`` pass through unchanged (partial rotary).
"""

from __future__ import annotations

import torch
from torch import Tensor


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the first ``2 * cos.shape[-1]`` dims of ``x`` (pairs ``d, d + R/2``); the rest pass through.

    Args:
        x: ``(B, H, L, D)``.
        cos, sin: ``(L, R/2)``, float32 or float64; the rotation runs in the wider of x's dtype and float32.

    Returns:
        ``(B, H, L, D)`` in x's dtype.
    """
    half = cos.shape[-1]
    compute = torch.promote_types(x.dtype, torch.float32)
    x1, x2, rest = x[..., :half], x[..., half : 2 * half], x[..., 2 * half :]
    x1f, x2f, cos, sin = x1.to(compute), x2.to(compute), cos.to(compute), sin.to(compute)
    out1 = x1f * cos - x2f * sin
    out2 = x2f * cos + x1f * sin
    return torch.cat([out1.to(x.dtype), out2.to(x.dtype), rest], dim=-1)

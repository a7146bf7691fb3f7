"""Attention kernels: fused causal attention (plain, ALiBi) and TAPA, each with a PyTorch path of identical maths.

Public API (kernels never import model code):
    causal_attention(q, k, v, *, scale, alibi_slopes=None, backend="auto", chunk_size=None) -> (B, H, Lq, Dv)
    tapa_attention(q_amp, k_amp, q_phase, k_phase, v, *, alpha, amp_scale, phase_scale, two_pi=True,
                   backend="auto", chunk_size=None) -> (B, H, Lq, Dv)

Files: ``dispatch`` (backend choice), ``reference`` (materialised, for tests), ``blockwise`` + ``tapa_torch`` +
``causal_torch`` (PyTorch paths), ``triton_score`` + ``triton_fwd`` + ``triton_bwd`` (kernels), ``autotune``
(configurations), ``triton_attention`` (launchers and autograd). Triton is imported only when a Triton path runs.
"""

from tapa_lab.kernels.dispatch import causal_attention, tapa_attention

__all__ = ["causal_attention", "tapa_attention"]

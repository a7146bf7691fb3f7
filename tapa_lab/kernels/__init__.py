"""Attention kernels: fused causal attention (plain, ALiBi) and TAPA, each with a PyTorch path of identical maths; and
RoPE's rotation (fused Triton kernel, or PyTorch).

Public API (kernels never import model code):
    causal_attention(q, k, v, *, scale, alibi_slopes=None, backend="auto", chunk_size=None,
                     document_ids=None) -> (B, H, Lq, Dv)
    tapa_attention(q_amp, k_amp, q_phase, k_phase, v, *, alpha, amp_scale, phase_scale, two_pi=True,
                   backend="auto", chunk_size=None, document_ids=None) -> (B, H, Lq, Dv)
``document_ids`` ``(B, Lk)``: a query attends only to keys with its own id (intra-document masking).
    rope_rotate(x, cos, sin, *, scale=1.0, backend="auto") -> (B, H, L, D)

Files: ``launch`` (backend type, dtypes, device checks; no Triton), ``dispatch`` (backend choice), ``reference``
(materialised, for tests), ``blockwise`` + ``tapa_torch`` + ``causal_torch`` + ``rope_torch`` (PyTorch paths),
``triton_score`` + ``triton_fwd`` + ``triton_bwd`` + ``triton_bwd_dq`` (kernels), ``autotune`` (configurations),
``triton_attention`` (launchers and autograd), ``triton_rope`` (RoPE's rotation: kernel, launcher and autograd),
``cpu/tapa_cpu.cpp`` + ``cpu_build`` + ``tapa_cpu`` (the fused TAPA CPU kernel: C++ source, its build on first use, the
op). Triton is imported only when a Triton path runs.

torch.compile: the blockwise PyTorch paths, the fused CPU kernel, the Triton attention kernels and the Triton rotation
are ``torch.library`` custom ops (``tapa_lab::tapa_blockwise``, ``tapa_cpu``, ``causal_blockwise``,
``triton_attention``, ``triton_rope``; each attention op with a ``..._backward`` op as its registered autograd, and a
fake implementation for tracing), registered where their maths lives, so a compiled model captures every call as one op
without a graph break.
"""

from tapa_lab.kernels.dispatch import causal_attention, rope_rotate, tapa_attention
from tapa_lab.kernels.launch import BACKENDS, Backend

__all__ = ["BACKENDS", "Backend", "causal_attention", "rope_rotate", "tapa_attention"]

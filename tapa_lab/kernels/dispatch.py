"""Backend dispatch for the attention kernels and RoPE's rotation: ``auto`` = Triton on CUDA (float64 excepted),
PyTorch elsewhere (for TAPA on CPU: the fused C++ kernel of :mod:`tapa_lab.kernels.tapa_cpu` where it applies, else the
blockwise PyTorch path).

``backend="triton"`` on CPU tensors runs the Triton kernels through Triton's interpreter, which needs
``TRITON_INTERPRET=1`` in the environment before triton is first imported; without it the call fails with an error
saying so. ``backend="torch"`` always takes the PyTorch path. The Triton modules are imported on first use, so
importing this package never imports triton.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tapa_lab.kernels.causal_torch import causal_attention_torch
from tapa_lab.kernels.launch import BACKENDS, Backend, check_launch_device, interpreter_enabled
from tapa_lab.kernels.rope_torch import rotate
from tapa_lab.kernels.tapa_cpu import fused_cpu_applies, tapa_attention_cpu
from tapa_lab.kernels.tapa_torch import tapa_attention_torch


def _use_triton(backend: Backend, x: Tensor) -> bool:
    """Whether a call with this ``backend`` on tensors like ``x`` runs the Triton kernels."""
    if backend not in BACKENDS:
        raise ValueError(f"backend = {backend!r} is not allowed: backend must be one of {', '.join(BACKENDS)}.")
    if backend == "torch" or (backend == "auto" and (not x.is_cuda or x.dtype == torch.float64)):
        return False  # auto: float64 (analysis, references) takes the PyTorch path; the kernels compute in fp32
    check_launch_device(x, interpreter_enabled())
    return True


def causal_attention(q: Tensor, k: Tensor, v: Tensor, *, scale: float, alibi_slopes: Tensor | None = None,
                     backend: Backend = "auto", chunk_size: int | None = None,
                     document_ids: Tensor | None = None) -> Tensor:
    """Causal attention, with an optional ALiBi bias; queries sit at the last ``Lq`` of the ``Lk`` key positions.

    score(i, j) = scale q_i . k_j - m_h (i - j), keys j <= i only (and of the same document, with ``document_ids``).

    Args:
        q: ``(B, H, Lq, D)``.
        k: ``(B, Hkv, Lk, D)``, ``H % Hkv == 0`` (grouped-query attention; K and V are never repeated).
        v: ``(B, Hkv, Lk, Dv)``.
        scale: factor of q . k (usually 1/sqrt(D)).
        alibi_slopes: ALiBi slopes ``m``, ``(H,)``; ``None`` for plain causal attention.
        backend: ``auto`` (Triton on CUDA, PyTorch elsewhere), ``triton`` or ``torch``.
        chunk_size: query rows per block on the PyTorch path; ``None`` chooses.
        document_ids: ``(B, Lk)`` int document index of each key (queries: the last ``Lq`` columns); a query attends
            only to keys with its own id. ``None``: no document masking.

    Returns:
        ``(B, H, Lq, Dv)``.
    """
    if _use_triton(backend, q):
        from tapa_lab.kernels.triton_attention import causal_attention_triton

        return causal_attention_triton(q, k, v, scale=scale, alibi_slopes=alibi_slopes, document_ids=document_ids)
    return causal_attention_torch(q, k, v, scale=scale, alibi_slopes=alibi_slopes, chunk_size=chunk_size,
                                  document_ids=document_ids)



def tapa_attention(q_amp: Tensor, k_amp: Tensor, q_phase: Tensor, k_phase: Tensor, v: Tensor, *,
                   alpha: float | Tensor, amp_scale: float, phase_scale: float, two_pi: bool = True,
                   backend: Backend = "auto", chunk_size: int | None = None,
                   document_ids: Tensor | None = None) -> Tensor:
    """TAPA attention (TAPA.md eq. 12); queries sit at the last ``Lq`` of the ``Lk`` key positions.

    score(i, j) = amp_scale (qA_i . kA_j) * cos(c |i-j|^alpha phase_scale (qP_i . kP_j)), c = 2 pi (or 1), causal
    (and within each document, with ``document_ids``).

    Args:
        q_amp: ``(B, H, Lq, Da)``; k_amp: ``(B, Hkv, Lk, Da)``, ``H % Hkv == 0``.
        q_phase: ``(B, H, Lq, Dp)``; k_phase: ``(B, Hkv, Lk, Dp)``.
        v: ``(B, Hkv, Lk, Dv)``.
        alpha: distance exponent, a float or a per-head tensor ``(H,)`` (differentiable).
        amp_scale: factor of the amplitude dot product (1/sqrt(Da)).
        phase_scale: factor of the phase dot product (1/sqrt(Dp)).
        two_pi: multiply the phase by 2 pi (the paper's formula); false drops the factor.
        backend: ``auto`` (Triton on CUDA; on CPU the fused C++ kernel for a scalar ``alpha`` without
            ``document_ids``, else the blockwise PyTorch path), ``triton`` or ``torch`` (always the blockwise path).
        chunk_size: query rows per block on the blockwise PyTorch path; ``None`` chooses. The Triton path and the
            fused CPU kernel ignore it.
        document_ids: ``(B, Lk)`` int document index of each key, as in :func:`causal_attention`; ``None``: none.

    Returns:
        ``(B, H, Lq, Dv)``.
    """
    phase_factor = phase_scale * (2 * math.pi if two_pi else 1.0)
    if _use_triton(backend, q_amp):
        from tapa_lab.kernels.triton_attention import tapa_attention_triton

        return tapa_attention_triton(q_amp, k_amp, q_phase, k_phase, v, alpha=alpha, amp_scale=amp_scale,
                                     phase_scale=phase_factor, document_ids=document_ids)
    if backend == "auto" and fused_cpu_applies(q_amp, alpha, document_ids):
        return tapa_attention_cpu(q_amp, k_amp, q_phase, k_phase, v, alpha=float(alpha), amp_scale=amp_scale,
                                  phase_scale=phase_factor)
    return tapa_attention_torch(q_amp, k_amp, q_phase, k_phase, v, alpha=alpha, amp_scale=amp_scale,
                                phase_scale=phase_factor, chunk_size=chunk_size, document_ids=document_ids)


def rope_rotate(x: Tensor, cos: Tensor, sin: Tensor, *, scale: float = 1.0, backend: Backend = "auto") -> Tensor:
    """RoPE's rotation of ``x`` (pairs ``d, d + R/2``; dims ``>= R`` pass through), times ``scale``.

    out[..., d] = scale (x_d cos - x_{d+R/2} sin), out[..., d + R/2] = scale (x_{d+R/2} cos + x_d sin), computed in
    fp32 (or wider). The Triton path fuses the rotation and the scale in one pass; the PyTorch path is
    :func:`tapa_lab.kernels.rope_torch.rotate`, then a multiplication by ``scale`` when it is not 1.

    Args:
        x: ``(B, H, L, D)``; any strides. The Triton path takes fp16, bf16 and fp32 (float64 only on the torch path).
        cos, sin: ``(L, R/2)``, float32 or float64, the cosine and sine of the angles of x's positions (for queries at
            the last ``Lq`` of the ``Lk`` positions, the last ``Lq`` rows). They get no gradient.
        scale: factor of the whole output (YaRN's attention factor; 1 for plain RoPE).
        backend: ``auto`` (Triton on CUDA, PyTorch elsewhere), ``triton`` or ``torch``.

    Returns:
        ``(B, H, L, D)`` in x's dtype.
    """
    if _use_triton(backend, x):
        from tapa_lab.kernels.triton_rope import rope_rotate_triton

        return rope_rotate_triton(x, cos, sin, scale=scale)
    out = rotate(x, cos, sin)
    return out if scale == 1.0 else out * scale

"""Naive, fully materialised attention: the independent reference the kernels and the chunked paths are tested against.

Every score matrix is built whole, ``(B, H, Lq, Lk)``, so this is only for tests, small evaluations and the "naive TAPA"
column of the benchmarks. Maths: ../../shared/design/TAPA.md section 2 (TAPA) and Press et al. 2022 (ALiBi).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def repeat_kv(x: Tensor, n_heads: int) -> Tensor:
    """Repeat grouped key/value heads: ``(B, Hkv, L, D) -> (B, H, L, D)``."""
    groups = n_heads // x.shape[1]
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def relative_distance(lq: int, lk: int, device: torch.device) -> Tensor:
    """``i - j`` for queries at the last ``lq`` of ``lk`` positions, ``(Lq, Lk)`` float32 (negative = future key)."""
    qpos = torch.arange(lk - lq, lk, device=device, dtype=torch.float32)
    kpos = torch.arange(lk, device=device, dtype=torch.float32)
    return qpos[:, None] - kpos[None, :]


def visible(distance: Tensor, document_ids: Tensor | None) -> Tensor:
    """Which keys each query sees: ``(Lq, Lk)``, or ``(B, 1, Lq, Lk)`` with ``document_ids`` ``(B, Lk)`` (causal and
    the same document; queries are the last ``Lq`` columns)."""
    causal = distance >= 0
    if document_ids is None:
        return causal
    same = document_ids[:, -distance.shape[0]:, None] == document_ids[:, None, :]  # (B, Lq, Lk)
    return (causal & same)[:, None]


def _softmax_v(scores: Tensor, v: Tensor, distance: Tensor, document_ids: Tensor | None) -> Tensor:
    scores = scores.masked_fill(~visible(distance, document_ids), float("-inf"))
    probs = torch.softmax(scores.to(torch.promote_types(scores.dtype, torch.float32)), dim=-1).to(v.dtype)
    return probs @ repeat_kv(v, scores.shape[1])


def causal_attention_reference(q: Tensor, k: Tensor, v: Tensor, scale: float, alibi_slopes: Tensor | None = None,
                               document_ids: Tensor | None = None) -> Tensor:
    """softmax(scale q k^T - m_h (i - j), causal) v.  q ``(B,H,Lq,D)``, k/v ``(B,Hkv,Lk,D)`` -> ``(B,H,Lq,D)``.

    ``document_ids`` ``(B, Lk)`` also masks keys of other documents.
    """
    n_heads = q.shape[1]
    distance = relative_distance(q.shape[2], k.shape[2], q.device)
    scores = scale * (q @ repeat_kv(k, n_heads).transpose(-1, -2))  # (B, H, Lq, Lk)
    if alibi_slopes is not None:
        scores = scores - alibi_slopes.to(scores.dtype)[:, None, None] * distance.to(scores.dtype)
    return _softmax_v(scores, v, distance, document_ids)


def tapa_attention_reference(q_amp: Tensor, k_amp: Tensor, q_phase: Tensor, k_phase: Tensor, v: Tensor,
                             alpha: float | Tensor, amp_scale: float, phase_scale: float, two_pi: bool = True,
                             document_ids: Tensor | None = None) -> Tensor:
    """TAPA attention, materialised.

    score(i, j) = amp_scale (qA_i . kA_j) * cos(c |i-j|^alpha * phase_scale (qP_i . kP_j)), c = 2 pi (or 1).

    Args:
        q_amp: ``(B, H, Lq, Da)``; k_amp: ``(B, Hkv, Lk, Da)``.
        q_phase: ``(B, H, Lq, Dp)``; k_phase: ``(B, Hkv, Lk, Dp)``.
        v: ``(B, Hkv, Lk, Dv)``.
        alpha: distance exponent, a float or a per-head tensor ``(H,)``.
        document_ids: ``(B, Lk)`` document index of each key; keys of other documents are masked. ``None``: none.

    Returns:
        ``(B, H, Lq, Dv)``.
    """
    n_heads = q_amp.shape[1]
    distance = relative_distance(q_amp.shape[2], k_amp.shape[2], q_amp.device)
    amplitude = amp_scale * (q_amp @ repeat_kv(k_amp, n_heads).transpose(-1, -2))
    phase = phase_scale * (q_phase @ repeat_kv(k_phase, n_heads).transpose(-1, -2))
    compute = torch.promote_types(phase.dtype, torch.float32)
    alpha_t = torch.as_tensor(alpha, device=q_amp.device).to(compute).reshape(-1, 1, 1)
    # |i-j|^alpha in fp32 at least (TAPA.md section 4), 0 on the diagonal; clamping before pow keeps d/dalpha finite.
    dist_pow = distance.to(compute).abs().clamp_min(1).pow(alpha_t)  # (H or 1, Lq, Lk)
    dist_pow = torch.where(distance == 0, torch.zeros_like(dist_pow), dist_pow)
    x = (2 * math.pi if two_pi else 1.0) * phase.to(compute) * dist_pow
    scores = amplitude.to(compute) * torch.cos(x)
    return _softmax_v(scores, v, distance, document_ids)

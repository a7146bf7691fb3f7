"""Launchers and autograd wiring of the Triton attention kernels (:mod:`triton_fwd`, :mod:`triton_bwd`).

The launchers check shapes, strides, dtypes and devices and say what is wrong; the kernels take any strides (views such
as ``q[..., :Da]`` or expanded tensors are read in place) and write contiguous outputs. One autograd function serves
the three score modes: PLAIN and ALIBI pass q/k as the amplitude operands and no phase operands; the per-head
parameter (ALiBi slope or TAPA alpha) is differentiable.
"""

from __future__ import annotations

import torch
import triton
from torch import Tensor

from tapa_lab.kernels.autotune import INTERPRETED
from tapa_lab.kernels.launch import MAX_HEAD_DIM, SUPPORTED_DTYPES, block_dim, check_launch_device, on_device
from tapa_lab.kernels.triton_bwd import _attn_bwd_dkdv, _attn_bwd_dq, _attn_bwd_preprocess
from tapa_lab.kernels.triton_fwd import _attn_fwd
from tapa_lab.kernels.triton_score import ALIBI, PLAIN, TAPA

PREPROCESS_BLOCK_M = 64


def _check_inputs(q_amp: Tensor, k_amp: Tensor, q_phase: Tensor | None, k_phase: Tensor | None, v: Tensor,
                  head_param: Tensor | None) -> None:
    """Raise ``ValueError`` (or ``RuntimeError`` for a device the kernels cannot run on) naming what is wrong."""
    named = {"q": q_amp, "k": k_amp, "v": v}
    if q_phase is not None and k_phase is not None:
        named = {"q_amp": q_amp, "k_amp": k_amp, "q_phase": q_phase, "k_phase": k_phase, "v": v}
    for name, x in named.items():
        if x.dim() != 4:
            raise ValueError(f"{name} must be 4-D (batch, heads, length, head_dim); got shape {tuple(x.shape)}.")
        if x.dtype != q_amp.dtype or x.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"{name} has dtype {x.dtype}: all inputs must share one dtype among "
                             f"{', '.join(str(d) for d in SUPPORTED_DTYPES)} (q is {q_amp.dtype}).")
        if x.device != q_amp.device:
            raise ValueError(f"{name} is on {x.device} but q is on {q_amp.device}: all inputs must share a device.")
        if not 1 <= x.shape[-1] <= MAX_HEAD_DIM:
            raise ValueError(f"{name} has head_dim {x.shape[-1]}: the kernels support 1 .. {MAX_HEAD_DIM}.")
        if max((size - 1) * stride for size, stride in zip(x.shape[2:], x.stride()[2:], strict=True)) >= 2**31:
            raise ValueError(f"{name} has strides {x.stride()}: offsets within one head must fit in int32.")
    batch, n_heads, lq, _ = q_amp.shape
    n_kv, lk = k_amp.shape[1], k_amp.shape[2]
    queries = {n: x for n, x in named.items() if n.startswith("q")}
    keys = {n: x for n, x in named.items() if not n.startswith("q")}
    for name, x in queries.items():
        if x.shape[:3] != (batch, n_heads, lq):
            raise ValueError(f"{name} has shape {tuple(x.shape)}; expected ({batch}, {n_heads}, {lq}, *) like q.")
    for name, x in keys.items():
        if x.shape[:3] != (batch, n_kv, lk):
            raise ValueError(f"{name} has shape {tuple(x.shape)}; expected ({batch}, {n_kv}, {lk}, *) like k.")
    if q_amp.shape[-1] != k_amp.shape[-1] or (q_phase is not None and q_phase.shape[-1] != k_phase.shape[-1]):
        raise ValueError("queries and keys must share their head_dim (amplitude and phase parts separately).")
    if n_heads % n_kv:
        raise ValueError(f"the query heads ({n_heads}) must be a multiple of the key/value heads ({n_kv}).")
    if not 1 <= lq <= lk:
        raise ValueError(f"need 1 <= Lq <= Lk (queries are the last Lq of Lk positions); got Lq={lq}, Lk={lk}.")
    if head_param is not None and head_param.shape != (n_heads,):
        raise ValueError(f"the per-head parameter (alpha or ALiBi slopes) must have shape ({n_heads},); "
                         f"got {tuple(head_param.shape)}.")
    check_launch_device(q_amp, INTERPRETED)


def _per_head(param: Tensor, n_heads: int, name: str) -> Tensor:
    """A per-head parameter given as ``(H,)`` or as one value, as an ``(H,)`` tensor (differentiably)."""
    if param.numel() not in (1, n_heads):
        raise ValueError(f"{name} must have one value per head ({n_heads}) or a single value; "
                         f"got shape {tuple(param.shape)}.")
    return param.reshape(-1).expand(n_heads)


def _strides(x: Tensor | None) -> tuple[int, ...]:
    return tuple(x.stride()) if x is not None else (0, 0, 0, 0)


def _dot_precision(dtype: torch.dtype) -> str:
    """fp32 inputs get IEEE fp32 dots (not TF32: the TAPA phase is sensitive); 16-bit inputs ignore this."""
    return "ieee" if dtype == torch.float32 else "tf32"


class TritonAttention(torch.autograd.Function):
    """Causal attention on the Triton kernels: ``forward(q_amp, k_amp, q_phase, k_phase, v, head_param, mode,
    amp_scale, phase_scale)``; the phase operands are ``None`` in PLAIN and ALIBI modes."""

    @staticmethod
    def forward(ctx, q_amp: Tensor, k_amp: Tensor, q_phase: Tensor | None, k_phase: Tensor | None, v: Tensor,
                head_param: Tensor | None, mode: int, amp_scale: float, phase_scale: float) -> Tensor:
        batch, n_heads, lq, da = q_amp.shape
        lk, dv = k_amp.shape[2], v.shape[-1]
        dp = q_phase.shape[-1] if q_phase is not None else 1
        param = head_param.detach().float().contiguous() if head_param is not None else q_amp
        out = torch.empty(batch, n_heads, lq, dv, dtype=v.dtype, device=v.device)
        lse = torch.empty(batch, n_heads, lq, dtype=torch.float32, device=v.device)

        def grid(meta: dict) -> tuple[int, int]:
            return triton.cdiv(lq, meta["BLOCK_M"]), batch * n_heads

        with on_device(q_amp):
            _attn_fwd[grid](
                q_amp, k_amp, q_phase if q_phase is not None else q_amp, k_phase if k_phase is not None else k_amp,
                v, out, lse, param,
                *_strides(q_amp), *_strides(k_amp), *_strides(q_phase), *_strides(k_phase), *_strides(v),
                *_strides(out),
                amp_scale, phase_scale, n_heads, n_heads // k_amp.shape[1], lq, lk, da, dp, dv,
                MODE=mode, DOT_PRECISION=_dot_precision(q_amp.dtype),
                BLOCK_DA=block_dim(da), BLOCK_DP=block_dim(dp), BLOCK_DV=block_dim(dv))
        ctx.save_for_backward(q_amp, k_amp, q_phase, k_phase, v, head_param, param, out, lse)
        ctx.mode, ctx.amp_scale, ctx.phase_scale = mode, amp_scale, phase_scale
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        q_amp, k_amp, q_phase, k_phase, v, head_param, param, out, lse = ctx.saved_tensors
        batch, n_heads, lq, da = q_amp.shape
        n_kv, lk, dv = k_amp.shape[1], k_amp.shape[2], v.shape[-1]
        dp = q_phase.shape[-1] if q_phase is not None else 1
        mode, tapa = ctx.mode, ctx.mode == TAPA.value
        need_dhead = head_param is not None and ctx.needs_input_grad[5]
        grad_out = grad_out.to(v.dtype)
        q_phase_arg = q_phase if tapa else q_amp
        k_phase_arg = k_phase if tapa else k_amp
        delta = torch.empty_like(lse)
        grad_qa = torch.empty(q_amp.shape, dtype=q_amp.dtype, device=q_amp.device)
        grad_ka = torch.empty(k_amp.shape, dtype=k_amp.dtype, device=k_amp.device)
        grad_qp = torch.empty(q_phase.shape, dtype=q_phase.dtype, device=q_phase.device) if tapa else None
        grad_kp = torch.empty(k_phase.shape, dtype=k_phase.dtype, device=k_phase.device) if tapa else None
        grad_v = torch.empty(v.shape, dtype=v.dtype, device=v.device)
        grad_head = torch.empty_like(lse) if need_dhead else None
        strides = (*_strides(q_amp), *_strides(k_amp), *_strides(q_phase), *_strides(k_phase), *_strides(v),
                   *_strides(grad_out))
        sizes = (ctx.amp_scale, ctx.phase_scale, n_heads, n_heads // n_kv, lq, lk, da, dp, dv)
        blocks = {"BLOCK_DA": block_dim(da), "BLOCK_DP": block_dim(dp), "BLOCK_DV": block_dim(dv),
                  "DOT_PRECISION": _dot_precision(q_amp.dtype)}

        def query_grid(meta: dict) -> tuple[int, int]:
            return triton.cdiv(lq, meta["BLOCK_M"]), batch * n_heads

        def key_grid(meta: dict) -> tuple[int, int]:
            return triton.cdiv(lk, meta["BLOCK_N"]), batch * n_kv

        with on_device(q_amp):
            _attn_bwd_preprocess[(triton.cdiv(lq, PREPROCESS_BLOCK_M), batch * n_heads)](
                out, grad_out, delta, *_strides(out), *_strides(grad_out), n_heads, lq, dv,
                BLOCK_M=PREPROCESS_BLOCK_M, BLOCK_DV=block_dim(dv))
            _attn_bwd_dkdv[key_grid](
                q_amp, k_amp, q_phase_arg, k_phase_arg, v, grad_out, lse, delta, param,
                grad_ka, grad_kp if tapa else grad_ka, grad_v, *strides, *sizes, MODE=mode, **blocks)
            _attn_bwd_dq[query_grid](
                q_amp, k_amp, q_phase_arg, k_phase_arg, v, grad_out, lse, delta, param,
                grad_qa, grad_qp if tapa else grad_qa, grad_head if need_dhead else delta, *strides, *sizes,
                MODE=mode, NEED_DHEAD=need_dhead, **blocks)
        grad_param = grad_head.sum((0, 2)).to(head_param.dtype) if need_dhead else None
        return grad_qa, grad_ka, grad_qp, grad_kp, grad_v, grad_param, None, None, None


def causal_attention_triton(q: Tensor, k: Tensor, v: Tensor, *, scale: float,
                            alibi_slopes: Tensor | None = None) -> Tensor:
    """Causal attention (plain or ALiBi) on the Triton kernels; arguments as :func:`tapa_lab.kernels.causal_attention`.

    Returns:
        ``(B, H, Lq, Dv)``, contiguous, in the inputs' dtype.
    """
    slopes = _per_head(alibi_slopes, q.shape[1], "alibi_slopes") if alibi_slopes is not None else None
    _check_inputs(q, k, None, None, v, slopes)
    mode = ALIBI if slopes is not None else PLAIN
    return TritonAttention.apply(q, k, None, None, v, slopes, mode.value, scale, 0.0)


def tapa_attention_triton(q_amp: Tensor, k_amp: Tensor, q_phase: Tensor, k_phase: Tensor, v: Tensor, *,
                          alpha: float | Tensor, amp_scale: float, phase_scale: float) -> Tensor:
    """TAPA attention on the Triton kernels; arguments as :func:`tapa_lab.kernels.tapa_attention`, except that
    ``phase_scale`` already holds the 2 pi.

    Returns:
        ``(B, H, Lq, Dv)``, contiguous, in the inputs' dtype.
    """
    n_heads = q_amp.shape[1]
    if isinstance(alpha, Tensor):
        alpha_h = _per_head(alpha, n_heads, "alpha")
    else:
        alpha_h = torch.full((n_heads,), float(alpha), dtype=torch.float32, device=q_amp.device)
    _check_inputs(q_amp, k_amp, q_phase, k_phase, v, alpha_h)
    return TritonAttention.apply(q_amp, k_amp, q_phase, k_phase, v, alpha_h, TAPA.value, amp_scale, phase_scale)

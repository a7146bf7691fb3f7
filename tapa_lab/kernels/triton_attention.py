"""Launchers and autograd wiring of the Triton attention kernels (:mod:`triton_fwd`, :mod:`triton_bwd`).

The launchers check shapes, strides, dtypes and devices and say what is wrong; the kernels take any strides (views such
as ``q[..., :Da]`` or expanded tensors are read in place) and write contiguous outputs. The forward and the backward
kernels are two ``torch.library`` custom ops (``tapa_lab::triton_attention`` and ``..._backward``) with fake
(shape-only) implementations, the second registered as the autograd of the first, so ``torch.compile`` sees each
launch as one opaque op. They serve the three score modes: PLAIN and ALIBI pass q/k as the amplitude operands and no
phase operands; the per-head parameter (ALiBi slope or TAPA alpha) is differentiable.
"""

from __future__ import annotations

import torch
import triton
from torch import Tensor

from tapa_lab.kernels.autotune import INTERPRETED
from tapa_lab.kernels.launch import MAX_HEAD_DIM, SUPPORTED_DTYPES, block_dim, check_launch_device, on_device
from tapa_lab.kernels.triton_bwd import _attn_bwd_dkdv, _attn_bwd_preprocess
from tapa_lab.kernels.triton_bwd_dq import _attn_bwd_dq
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
    if q_amp.shape[-1] != k_amp.shape[-1] or (q_phase is not None and k_phase is not None
                                                and q_phase.shape[-1] != k_phase.shape[-1]):
        raise ValueError("queries and keys must share their head_dim (amplitude and phase parts separately).")
    if n_heads % n_kv:
        raise ValueError(f"the query heads ({n_heads}) must be a multiple of the key/value heads ({n_kv}).")
    if not 1 <= lq <= lk:
        raise ValueError(f"need 1 <= Lq <= Lk (queries are the last Lq of Lk positions); got Lq={lq}, Lk={lk}.")
    if head_param is not None and head_param.shape != (n_heads,):
        raise ValueError(f"the per-head parameter (alpha or ALiBi slopes) must have shape ({n_heads},); "
                         f"got {tuple(head_param.shape)}.")
    check_launch_device(q_amp, INTERPRETED)


def _check_documents(document_ids: Tensor | None, q: Tensor, k: Tensor) -> None:
    """Raise ``ValueError`` unless ``document_ids`` is ``None`` or an integer ``(B, Lk)`` tensor on q's device."""
    if document_ids is None:
        return
    expected = (k.shape[0], k.shape[2])
    if tuple(document_ids.shape) != expected or document_ids.is_floating_point() or document_ids.device != q.device:
        raise ValueError(f"document_ids must be an integer tensor of shape {expected} (batch, Lk) on {q.device}; got "
                         f"{document_ids.dtype} {tuple(document_ids.shape)} on {document_ids.device}.")


def _per_head(param: Tensor, n_heads: int, name: str) -> Tensor:
    """A per-head parameter given as ``(H,)`` or as one value, as an ``(H,)`` tensor (differentiably)."""
    if param.numel() not in (1, n_heads):
        raise ValueError(f"{name} must have one value per head ({n_heads}) or a single value; "
                         f"got shape {tuple(param.shape)}.")
    return param.reshape(-1).expand(n_heads)


def _strides(x: Tensor | None) -> tuple[int, ...]:
    return tuple(x.stride()) if x is not None else (0, 0, 0, 0)


def _doc_operand(document_ids: Tensor | None, fallback: Tensor) -> Tensor:
    """The kernels' DOC operand: the ids as contiguous int32 ``(B, LK)``, or ``fallback`` (never read) without them."""
    return document_ids.to(torch.int32).contiguous() if document_ids is not None else fallback


def _dot_precision(dtype: torch.dtype) -> str:
    """fp32 inputs get IEEE fp32 dots (not TF32: the TAPA phase is sensitive); 16-bit inputs ignore this."""
    return "ieee" if dtype == torch.float32 else "tf32"


@torch.library.custom_op("tapa_lab::triton_attention", mutates_args=())
def _attention(q_amp: Tensor, k_amp: Tensor, q_phase: Tensor | None, k_phase: Tensor | None, v: Tensor,
               head_param: Tensor | None, document_ids: Tensor | None, mode: int, amp_scale: float,
               phase_scale: float) -> tuple[Tensor, Tensor]:
    """The forward kernel as a custom op (opaque to ``torch.compile``); differentiable through
    :func:`_attention_backward`. The phase operands are ``None`` in PLAIN and ALIBI modes; ``document_ids``
    ``(B, Lk)`` (or ``None``) restricts each query to keys of its own document.

    Returns:
        ``(out, lse)``: ``(B, H, Lq, Dv)`` in v's dtype and the base-2 logsumexp ``(B, H, Lq)`` in fp32.
    """
    batch, n_heads, lq, da = q_amp.shape
    lk, dv = k_amp.shape[2], v.shape[-1]
    dp = q_phase.shape[-1] if q_phase is not None else 1
    param = head_param.float().contiguous() if head_param is not None else q_amp
    out = torch.empty(batch, n_heads, lq, dv, dtype=v.dtype, device=v.device)
    lse = torch.empty(batch, n_heads, lq, dtype=torch.float32, device=v.device)

    def grid(meta: dict) -> tuple[int, int]:
        return triton.cdiv(lq, meta["BLOCK_M"]), batch * n_heads

    with on_device(q_amp):
        _attn_fwd[grid](
            q_amp, k_amp, q_phase if q_phase is not None else q_amp, k_phase if k_phase is not None else k_amp,
            v, out, lse, param, _doc_operand(document_ids, lse),
            *_strides(q_amp), *_strides(k_amp), *_strides(q_phase), *_strides(k_phase), *_strides(v),
            *_strides(out),
            amp_scale, phase_scale, n_heads, n_heads // k_amp.shape[1], lq, lk, da, dp, dv,
            MODE=mode, HAS_DOCS=document_ids is not None, DOT_PRECISION=_dot_precision(q_amp.dtype),
            BLOCK_DA=block_dim(da), BLOCK_DP=block_dim(dp), BLOCK_DV=block_dim(dv))
    return out, lse


@_attention.register_fake
def _attention_fake(q_amp: Tensor, k_amp: Tensor, q_phase: Tensor | None, k_phase: Tensor | None, v: Tensor,
                    head_param: Tensor | None, document_ids: Tensor | None, mode: int, amp_scale: float,
                    phase_scale: float) -> tuple[Tensor, Tensor]:
    batch, n_heads, lq, _ = q_amp.shape
    return v.new_empty(batch, n_heads, lq, v.shape[-1]), v.new_empty(batch, n_heads, lq, dtype=torch.float32)


@torch.library.custom_op("tapa_lab::triton_attention_backward", mutates_args=())
def _attention_backward(grad_out: Tensor, q_amp: Tensor, k_amp: Tensor, q_phase: Tensor | None,
                        k_phase: Tensor | None, v: Tensor, head_param: Tensor | None, document_ids: Tensor | None,
                        out: Tensor, lse: Tensor, mode: int, amp_scale: float, phase_scale: float,
                        need_dhead: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The backward kernels as a custom op.

    Returns:
        ``(dq_amp, dk_amp, dq_phase, dk_phase, dv, dhead)`` shaped like the inputs (contiguous); ``dq_phase`` and
        ``dk_phase`` are empty outside TAPA mode and ``dhead`` ``(H,)`` is empty unless ``need_dhead``.
    """
    batch, n_heads, lq, da = q_amp.shape
    n_kv, lk, dv = k_amp.shape[1], k_amp.shape[2], v.shape[-1]
    tapa = mode == TAPA.value
    q_phase_arg = q_phase if q_phase is not None else q_amp  # the phases are None outside TAPA mode
    k_phase_arg = k_phase if k_phase is not None else k_amp
    dp = q_phase_arg.shape[-1] if tapa else 1
    param = head_param.float().contiguous() if head_param is not None else q_amp
    grad_out = grad_out.to(v.dtype)
    delta = torch.empty_like(lse)
    grad_qa = torch.empty(q_amp.shape, dtype=q_amp.dtype, device=q_amp.device)
    grad_ka = torch.empty(k_amp.shape, dtype=k_amp.dtype, device=k_amp.device)
    grad_qp = torch.empty(q_phase_arg.shape if tapa else 0, dtype=q_amp.dtype, device=q_amp.device)
    grad_kp = torch.empty(k_phase_arg.shape if tapa else 0, dtype=k_amp.dtype, device=k_amp.device)
    grad_v = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    grad_head = torch.empty_like(lse) if need_dhead else None
    strides = (*_strides(q_amp), *_strides(k_amp), *_strides(q_phase), *_strides(k_phase), *_strides(v),
               *_strides(grad_out))
    sizes = (amp_scale, phase_scale, n_heads, n_heads // n_kv, lq, lk, da, dp, dv)
    blocks = {"BLOCK_DA": block_dim(da), "BLOCK_DP": block_dim(dp), "BLOCK_DV": block_dim(dv),
              "DOT_PRECISION": _dot_precision(q_amp.dtype), "HAS_DOCS": document_ids is not None}
    docs = _doc_operand(document_ids, lse)

    def query_grid(meta: dict) -> tuple[int, int]:
        return triton.cdiv(lq, meta["BLOCK_M"]), batch * n_heads

    def key_grid(meta: dict) -> tuple[int, int]:
        return triton.cdiv(lk, meta["BLOCK_N"]), batch * n_kv

    with on_device(q_amp):
        _attn_bwd_preprocess[(triton.cdiv(lq, PREPROCESS_BLOCK_M), batch * n_heads)](
            out, grad_out, delta, *_strides(out), *_strides(grad_out), n_heads, lq, dv,
            BLOCK_M=PREPROCESS_BLOCK_M, BLOCK_DV=block_dim(dv))
        _attn_bwd_dkdv[key_grid](
            q_amp, k_amp, q_phase_arg, k_phase_arg, v, grad_out, lse, delta, param, docs,
            grad_ka, grad_kp if tapa else grad_ka, grad_v, *strides, *sizes, MODE=mode, **blocks)
        _attn_bwd_dq[query_grid](
            q_amp, k_amp, q_phase_arg, k_phase_arg, v, grad_out, lse, delta, param, docs,
            grad_qa, grad_qp if tapa else grad_qa, grad_head if need_dhead else delta, *strides, *sizes,
            MODE=mode, NEED_DHEAD=need_dhead, **blocks)
    grad_param = (grad_head.sum((0, 2)).to(head_param.dtype) if grad_head is not None and head_param is not None
                  else q_amp.new_empty(0))
    return grad_qa, grad_ka, grad_qp, grad_kp, grad_v, grad_param


@_attention_backward.register_fake
def _attention_backward_fake(grad_out: Tensor, q_amp: Tensor, k_amp: Tensor, q_phase: Tensor | None,
                             k_phase: Tensor | None, v: Tensor, head_param: Tensor | None,
                             document_ids: Tensor | None, out: Tensor, lse: Tensor, mode: int, amp_scale: float,
                             phase_scale: float, need_dhead: bool) -> tuple[Tensor, ...]:
    tapa = mode == TAPA.value
    return (q_amp.new_empty(q_amp.shape), k_amp.new_empty(k_amp.shape),
            q_amp.new_empty(q_phase.shape if tapa and q_phase is not None else 0),
            k_amp.new_empty(k_phase.shape if tapa and k_phase is not None else 0), v.new_empty(v.shape),
            head_param.new_empty(head_param.shape) if need_dhead and head_param is not None else q_amp.new_empty(0))


def _setup_context(ctx, inputs: tuple, output: tuple[Tensor, Tensor]) -> None:
    q_amp, k_amp, q_phase, k_phase, v, head_param, document_ids, mode, amp_scale, phase_scale = inputs
    ctx.save_for_backward(q_amp, k_amp, q_phase, k_phase, v, head_param, document_ids, *output)
    ctx.mode, ctx.amp_scale, ctx.phase_scale = mode, amp_scale, phase_scale


def _backward(ctx, grad_out: Tensor, grad_lse: Tensor) -> tuple[Tensor | None, ...]:
    q_amp, k_amp, q_phase, k_phase, v, head_param, document_ids, out, lse = ctx.saved_tensors
    need_dhead = head_param is not None and ctx.needs_input_grad[5]
    grad_qa, grad_ka, grad_qp, grad_kp, grad_v, grad_head = _attention_backward(
        grad_out, q_amp, k_amp, q_phase, k_phase, v, head_param, document_ids, out, lse, ctx.mode, ctx.amp_scale,
        ctx.phase_scale, need_dhead)
    tapa = ctx.mode == TAPA.value
    return (grad_qa, grad_ka, grad_qp if tapa else None, grad_kp if tapa else None, grad_v,
            grad_head if need_dhead else None, None, None, None, None)


_attention.register_autograd(_backward, setup_context=_setup_context)


def causal_attention_triton(q: Tensor, k: Tensor, v: Tensor, *, scale: float, alibi_slopes: Tensor | None = None,
                            document_ids: Tensor | None = None) -> Tensor:
    """Causal attention (plain or ALiBi) on the Triton kernels; arguments as :func:`tapa_lab.kernels.causal_attention`.

    Returns:
        ``(B, H, Lq, Dv)``, contiguous, in the inputs' dtype.
    """
    slopes = _per_head(alibi_slopes, q.shape[1], "alibi_slopes") if alibi_slopes is not None else None
    _check_inputs(q, k, None, None, v, slopes)
    mode = ALIBI if slopes is not None else PLAIN
    _check_documents(document_ids, q, k)
    return _attention(q, k, None, None, v, slopes, document_ids, mode.value, scale, 0.0)[0]


def tapa_attention_triton(q_amp: Tensor, k_amp: Tensor, q_phase: Tensor, k_phase: Tensor, v: Tensor, *,
                          alpha: float | Tensor, amp_scale: float, phase_scale: float,
                          document_ids: Tensor | None = None) -> Tensor:
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
    _check_documents(document_ids, q_amp, k_amp)
    return _attention(q_amp, k_amp, q_phase, k_phase, v, alpha_h, document_ids, TAPA.value, amp_scale, phase_scale)[0]

"""TAPA attention in PyTorch, blockwise: the CPU path, with the maths of the Triton kernels.

score(i, j) = A * cos(x),  A = amp_scale qA_i . kA_j,  x = phase_scale (qP_i . kP_j) |i-j|^alpha  (TAPA.md section 2;
``phase_scale`` here already holds the 2 pi). The forward runs a block of query rows at a time against the keys it can
see (causal block skipping), saves only the inputs, the output and the logsumexp, and the hand-written backward
recomputes each block (TAPA.md section 3): with dS = P (dP - rowsum(dO O)),

    dA = dS cos x,   T = dS A sin x,   dPhi = -T |i-j|^alpha,   dalpha_h = -sum T x ln|i-j|,

so memory is O(chunk x Lk) per head and never O(L^2). |i-j|^alpha is a table over distances (0 at distance 0) in
the compute dtype: fp32, or fp64 for fp64 inputs. Document masking (``document_ids``): see
:mod:`tapa_lab.kernels.blockwise`. Forward and backward are the custom ops ``tapa_lab::tapa_blockwise``
and ``..._backward`` (the second registered as the autograd of the first; opaque to ``torch.compile``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tapa_lab.kernels.blockwise import (
    QueryBlock,
    block_distance,
    block_rows,
    compute_dtype,
    default_chunk,
    fold_keys,
    fold_queries,
    mask_documents_,
    mask_future_,
    probs_block_,
    query_blocks,
    softmax_block_,
)


def distance_tables(alpha: float | Tensor, lk: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """``|t|^alpha`` (0 at ``t = 0``) and ``ln t`` (0 at ``t <= 1``) for distances ``t = 0 .. lk-1``.

    ``dtype`` is the compute dtype (fp32 at least: a bf16 table ruins the phase, TAPA.md section 4).

    Returns:
        ``(pow_table, log_table)``: ``(Lk,)`` or ``(H, Lk)`` for a per-head ``alpha`` ``(H,)``, and ``(Lk,)``.
    """
    dist = torch.arange(lk, device=device, dtype=dtype).clamp_min_(1)
    if isinstance(alpha, Tensor):
        table = dist.pow(alpha.detach().to(device, dtype)[:, None])  # (H, Lk)
    else:
        table = dist.pow(alpha)  # (Lk,)
    table[..., 0] = 0.0
    return table, dist.log_()


def _block_dist_pow(pow_table: Tensor, index: Tensor, n_kv_heads: int) -> Tensor:
    """|i-j|^alpha over a block: ``(rows, key_end)``, or ``(Hkv, G, rows, key_end)`` for per-head alpha."""
    dist_pow = pow_table[..., index]
    return dist_pow if pow_table.dim() == 1 else dist_pow.unflatten(0, (n_kv_heads, -1))


def _heads_view(x: Tensor, batch: int, n_kv_heads: int, rows: int) -> Tensor:
    """A block tile ``(B*Hkv, G*rows, key_end) -> (B, Hkv, G, rows, key_end)`` (a view)."""
    return x.view(batch, n_kv_heads, -1, rows, x.shape[-1])


@torch.library.custom_op("tapa_lab::tapa_blockwise", mutates_args=())
def _tapa_blockwise(q_amp: Tensor, k_amp: Tensor, q_phase: Tensor, k_phase: Tensor, v: Tensor, alpha: Tensor | None,
                    alpha_value: float, amp_scale: float, phase_scale: float, chunk: int,
                    document_ids: Tensor | None) -> tuple[Tensor, Tensor]:
    """The blockwise forward as a custom op (opaque to ``torch.compile``; autograd: :func:`_tapa_blockwise_backward`).

    ``alpha`` is the per-head ``(H,)`` exponent, or ``None`` for the single ``alpha_value``.

    Returns:
        ``(out, lse)``: ``(B, H, Lq, Dv)`` and the natural-log logsumexp ``(B, H, Lq)``, in the compute dtype.
    """
    batch, n_heads, lq, _ = q_amp.shape
    n_kv, lk = k_amp.shape[1], k_amp.shape[2]
    dtype = compute_dtype(q_amp.dtype)
    qa = fold_queries(q_amp, n_kv, dtype) * amp_scale  # (B*Hkv, G, Lq, Da), a fresh tensor
    qp = fold_queries(q_phase, n_kv, dtype) * phase_scale  # (B*Hkv, G, Lq, Dp)
    ka, kp, vv = fold_keys(k_amp, dtype), fold_keys(k_phase, dtype), fold_keys(v, dtype)
    pow_table, _ = distance_tables(alpha if alpha is not None else alpha_value, lk, dtype, q_amp.device)
    out = torch.empty(*qa.shape[:3], v.shape[-1], dtype=dtype, device=q_amp.device)  # (B*Hkv, G, Lq, Dv)
    lse = torch.empty(qa.shape[:3], dtype=dtype, device=q_amp.device)  # (B*Hkv, G, Lq)
    for block in query_blocks(lq, lk, chunk, document_ids):
        scores = _tapa_scores(qa, ka, qp, kp, pow_table, block, batch)[0].cos_()
        scores = mask_future_(scores.mul_(torch.bmm(block_rows(qa, block), ka[:, block.keys].mT)), block.rows)
        out_block, lse_block = softmax_block_(mask_documents_(scores, document_ids, block), vv[:, block.keys])
        out[:, :, block.start:block.stop] = out_block.unflatten(1, (-1, block.rows))
        lse[:, :, block.start:block.stop] = lse_block.unflatten(1, (-1, block.rows))
    return out.view(batch, n_heads, lq, -1), lse.view(batch, n_heads, lq)


@_tapa_blockwise.register_fake
def _tapa_blockwise_fake(q_amp: Tensor, k_amp: Tensor, q_phase: Tensor, k_phase: Tensor, v: Tensor,
                         alpha: Tensor | None, alpha_value: float, amp_scale: float, phase_scale: float, chunk: int,
                         document_ids: Tensor | None) -> tuple[Tensor, Tensor]:
    batch, n_heads, lq, _ = q_amp.shape
    dtype = compute_dtype(q_amp.dtype)
    return (q_amp.new_empty(batch, n_heads, lq, v.shape[-1], dtype=dtype),
            q_amp.new_empty(batch, n_heads, lq, dtype=dtype))


@torch.library.custom_op("tapa_lab::tapa_blockwise_backward", mutates_args=())
def _tapa_blockwise_backward(grad_out: Tensor, q_amp: Tensor, k_amp: Tensor, q_phase: Tensor, k_phase: Tensor,
                             v: Tensor, alpha: Tensor | None, alpha_value: float, out: Tensor, lse: Tensor,
                             amp_scale: float, phase_scale: float, chunk: int, document_ids: Tensor | None,
                             need_alpha: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The blockwise backward as a custom op; ``out`` and ``lse`` as :func:`_tapa_blockwise` returned them.

    Returns:
        ``(dq_amp, dk_amp, dq_phase, dk_phase, dv, dalpha)`` shaped like the inputs (contiguous); ``dalpha`` ``(H,)``
        is empty unless ``need_alpha``.
    """
    batch, n_heads, lq, _ = q_amp.shape
    n_kv, lk = k_amp.shape[1], k_amp.shape[2]
    dtype = out.dtype
    qa = fold_queries(q_amp, n_kv, dtype) * amp_scale
    qp = fold_queries(q_phase, n_kv, dtype) * phase_scale
    ka, kp, vv = fold_keys(k_amp, dtype), fold_keys(k_phase, dtype), fold_keys(v, dtype)
    grad_o = fold_queries(grad_out, n_kv, dtype)  # (B*Hkv, G, Lq, Dv)
    lse = fold_queries(lse[..., None], n_kv, dtype)[..., 0]  # (B*Hkv, G, Lq)
    delta = (grad_o * fold_queries(out, n_kv, dtype)).sum(-1)  # (B*Hkv, G, Lq)
    pow_table, log_table = distance_tables(alpha if alpha is not None else alpha_value, lk, dtype, q_amp.device)
    grad_qa, grad_qp = torch.empty_like(qa), torch.empty_like(qp)
    grad_ka, grad_kp, grad_v = torch.zeros_like(ka), torch.zeros_like(kp), torch.zeros_like(vv)
    grad_alpha = torch.zeros(batch, n_heads, dtype=dtype, device=q_amp.device) if need_alpha else None
    for block in query_blocks(lq, lk, chunk, document_ids):
        keys = block.keys
        qa_rows, qp_rows, go_rows = block_rows(qa, block), block_rows(qp, block), block_rows(grad_o, block)
        x, dist_pow, index = _tapa_scores(qa, ka, qp, kp, pow_table, block, batch)
        amp = torch.bmm(qa_rows, ka[:, keys].mT)  # (B*Hkv, G*rows, key_end)
        cos_x, sin_x = torch.cos(x), torch.sin(x)
        scores = mask_documents_(mask_future_(amp * cos_x, block.rows), document_ids, block)
        probs = probs_block_(scores, block_rows(lse[..., None], block)[..., 0])
        grad_v[:, keys] += torch.bmm(probs.mT, go_rows)
        grad_s = torch.bmm(go_rows, vv[:, keys].mT).sub_(block_rows(delta[..., None], block)).mul_(probs)
        grad_amp = cos_x.mul_(grad_s)  # dA
        grad_qa[:, :, block.start:block.stop] = torch.bmm(grad_amp, ka[:, keys]).unflatten(1, (-1, block.rows))
        grad_ka[:, keys] += torch.bmm(grad_amp.mT, qa_rows)
        t = grad_s.mul_(amp).mul_(sin_x)  # T = dS A sin x
        if grad_alpha is not None:
            lnd = log_table[index].flatten()
            grad_alpha -= (x.mul_(t).view(batch, n_heads, -1) @ lnd)
        grad_phase = _heads_view(t, batch, n_kv, block.rows).mul_(dist_pow).view_as(t)  # -dPhi
        grad_qp[:, :, block.start:block.stop] = torch.bmm(grad_phase, kp[:, keys]).unflatten(1, (-1, block.rows))
        grad_kp[:, keys] -= torch.bmm(grad_phase.mT, qp_rows)
    grad_qa = grad_qa.mul_(amp_scale).view_as(q_amp).to(q_amp.dtype)
    grad_qp = grad_qp.mul_(-phase_scale).view_as(q_phase).to(q_phase.dtype)
    grad_alpha = (grad_alpha.sum(0).to(alpha.dtype) if grad_alpha is not None and alpha is not None
                  else q_amp.new_empty(0))
    return (grad_qa, grad_ka.view_as(k_amp).to(k_amp.dtype), grad_qp, grad_kp.view_as(k_phase).to(k_phase.dtype),
            grad_v.view_as(v).to(v.dtype), grad_alpha)


@_tapa_blockwise_backward.register_fake
def _tapa_blockwise_backward_fake(grad_out: Tensor, q_amp: Tensor, k_amp: Tensor, q_phase: Tensor, k_phase: Tensor,
                                  v: Tensor, alpha: Tensor | None, alpha_value: float, out: Tensor, lse: Tensor,
                                  amp_scale: float, phase_scale: float, chunk: int, document_ids: Tensor | None,
                                  need_alpha: bool) -> tuple[Tensor, ...]:
    return (*(x.new_empty(x.shape) for x in (q_amp, k_amp, q_phase, k_phase, v)),
            alpha.new_empty(alpha.shape) if need_alpha and alpha is not None else q_amp.new_empty(0))


def _setup_context(ctx, inputs: tuple, output: tuple[Tensor, Tensor]) -> None:
    q_amp, k_amp, q_phase, k_phase, v, alpha, alpha_value, amp_scale, phase_scale, chunk, document_ids = inputs
    ctx.save_for_backward(q_amp, k_amp, q_phase, k_phase, v, alpha, *output, document_ids)
    ctx.alpha_value, ctx.amp_scale, ctx.phase_scale, ctx.chunk = alpha_value, amp_scale, phase_scale, chunk


def _backward(ctx, grad_out: Tensor, grad_lse: Tensor) -> tuple[Tensor | None, ...]:
    q_amp, k_amp, q_phase, k_phase, v, alpha, out, lse, document_ids = ctx.saved_tensors
    need_alpha = alpha is not None and ctx.needs_input_grad[5]
    *grads, grad_alpha = _tapa_blockwise_backward(grad_out, q_amp, k_amp, q_phase, k_phase, v, alpha,
                                                  ctx.alpha_value, out, lse, ctx.amp_scale, ctx.phase_scale,
                                                  ctx.chunk, document_ids, need_alpha)
    return (*grads, grad_alpha if need_alpha else None, None, None, None, None, None)


_tapa_blockwise.register_autograd(_backward, setup_context=_setup_context)


def _tapa_scores(qa: Tensor, ka: Tensor, qp: Tensor, kp: Tensor, pow_table: Tensor, block: QueryBlock,
                 batch: int) -> tuple[Tensor, Tensor, Tensor]:
    """The phase argument x of a block: ``(B*Hkv, G*rows, key_end)``; also |i-j|^alpha and the distance index."""
    index = block_distance(block, qa.device)
    dist_pow = _block_dist_pow(pow_table, index, ka.shape[0] // batch)
    x = torch.bmm(block_rows(qp, block), kp[:, block.keys].mT)
    _heads_view(x, batch, ka.shape[0] // batch, block.rows).mul_(dist_pow)
    return x, dist_pow, index


def tapa_attention_torch(q_amp: Tensor, k_amp: Tensor, q_phase: Tensor, k_phase: Tensor, v: Tensor, *,
                         alpha: float | Tensor, amp_scale: float, phase_scale: float,
                         chunk_size: int | None = None, document_ids: Tensor | None = None) -> Tensor:
    """TAPA attention on the blockwise PyTorch path (any device; the CPU path of ``tapa_lab.kernels.tapa_attention``).

    Args:
        q_amp: ``(B, H, Lq, Da)``; k_amp: ``(B, Hkv, Lk, Da)``.
        q_phase: ``(B, H, Lq, Dp)``; k_phase: ``(B, Hkv, Lk, Dp)``.
        v: ``(B, Hkv, Lk, Dv)``.
        alpha: distance exponent, a float or a per-head tensor ``(H,)`` (differentiable).
        amp_scale: factor of the amplitude dot product (1/sqrt(Da)).
        phase_scale: factor of the phase dot product, 2 pi included (2 pi / sqrt(Dp)).
        chunk_size: query rows per block; ``None`` picks one that keeps a block's score tile near 8 MiB.
        document_ids: ``(B, Lk)`` document index of each key (queries: the last ``Lq``); a query sees only keys of
            its own document (blocks skip the keys no query of theirs can see). ``None``: no document masking.

    Returns:
        ``(B, H, Lq, Dv)`` in the dtype of ``v``.
    """
    chunk = chunk_size or default_chunk(q_amp.shape[0] * q_amp.shape[1], k_amp.shape[2])
    alpha_tensor = alpha if isinstance(alpha, Tensor) else None
    out, _ = _tapa_blockwise(q_amp, k_amp, q_phase, k_phase, v, alpha_tensor, 0.0 if alpha_tensor is not None
                             else float(alpha), amp_scale, phase_scale, chunk, document_ids)
    return out.to(v.dtype)

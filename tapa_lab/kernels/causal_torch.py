"""Causal attention (plain, or with the ALiBi bias of Press et al. 2022) in PyTorch: the CPU path of the Triton kernel.

Plain causal attention with ``Lq == Lk`` goes to ``F.scaled_dot_product_attention`` (fused on every device); with
document masking (``document_ids``) plain attention goes there too, with an explicit boolean mask (as fast as the
causal SDPA on CPU in our measurements, several times faster than the blockwise path). Otherwise
(ALiBi, or queries at the last ``Lq < Lk`` positions) a blockwise custom op (``tapa_lab::causal_blockwise``, with
``..._backward`` as its registered autograd; opaque to ``torch.compile``) runs blocks of query rows against the keys
they can see, saves only inputs, output and logsumexp, and recomputes each block in its backward:
score(i, j) = scale q_i . k_j - m_h (i - j);  dq = scale dS k,  dk = scale dS^T q,  dv = P^T dO,  dm_h = -sum dS (i-j).
Memory is O(chunk x Lk) per head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


def _scores(q: Tensor, k: Tensor, slopes: Tensor | None, block: QueryBlock, batch: int,
            document_ids: Tensor | None) -> tuple[Tensor, Tensor]:
    """Causal- and document-masked scores of a block ``(B*Hkv, G*rows, keys)`` and its distances ``(rows, keys)``."""
    scores = torch.bmm(block_rows(q, block), k[:, block.keys].mT)
    distance = block_distance(block, q.device)
    if slopes is not None:
        bias = slopes.unflatten(0, (k.shape[0] // batch, -1))[..., None, None] * distance.to(q.dtype)  # (Hkv,G,R,K)
        scores.view(batch, *bias.shape[:2], block.rows, -1).sub_(bias)
    return mask_documents_(mask_future_(scores, block.rows), document_ids, block), distance


@torch.library.custom_op("tapa_lab::causal_blockwise", mutates_args=())
def _causal_blockwise(q: Tensor, k: Tensor, v: Tensor, slopes: Tensor | None, scale: float, chunk: int,
                      document_ids: Tensor | None) -> tuple[Tensor, Tensor]:
    """The blockwise forward as a custom op (opaque to ``torch.compile``; autograd:
    :func:`_causal_blockwise_backward`).

    Returns:
        ``(out, lse)``: ``(B, H, Lq, Dv)`` and the natural-log logsumexp ``(B, H, Lq)``, in the compute dtype.
    """
    batch, n_heads, lq, _ = q.shape
    n_kv, lk = k.shape[1], k.shape[2]
    dtype = compute_dtype(q.dtype)
    qs = fold_queries(q, n_kv, dtype) * scale  # (B*Hkv, G, Lq, D), a fresh tensor
    kk, vv = fold_keys(k, dtype), fold_keys(v, dtype)
    slopes_c = slopes.to(dtype) if slopes is not None else None
    out = torch.empty(*qs.shape[:3], v.shape[-1], dtype=dtype, device=q.device)  # (B*Hkv, G, Lq, Dv)
    lse = torch.empty(qs.shape[:3], dtype=dtype, device=q.device)  # (B*Hkv, G, Lq)
    for block in query_blocks(lq, lk, chunk, document_ids):
        scores = _scores(qs, kk, slopes_c, block, batch, document_ids)[0]
        out_block, lse_block = softmax_block_(scores, vv[:, block.keys])
        out[:, :, block.start:block.stop] = out_block.unflatten(1, (-1, block.rows))
        lse[:, :, block.start:block.stop] = lse_block.unflatten(1, (-1, block.rows))
    return out.view(batch, n_heads, lq, -1), lse.view(batch, n_heads, lq)


@_causal_blockwise.register_fake
def _causal_blockwise_fake(q: Tensor, k: Tensor, v: Tensor, slopes: Tensor | None, scale: float, chunk: int,
                           document_ids: Tensor | None) -> tuple[Tensor, Tensor]:
    batch, n_heads, lq, _ = q.shape
    dtype = compute_dtype(q.dtype)
    return q.new_empty(batch, n_heads, lq, v.shape[-1], dtype=dtype), q.new_empty(batch, n_heads, lq, dtype=dtype)


@torch.library.custom_op("tapa_lab::causal_blockwise_backward", mutates_args=())
def _causal_blockwise_backward(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, slopes: Tensor | None,
                               out: Tensor, lse: Tensor, scale: float, chunk: int, document_ids: Tensor | None,
                               need_slopes: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The blockwise backward as a custom op; ``out`` and ``lse`` as :func:`_causal_blockwise` returned them.

    Returns:
        ``(dq, dk, dv, dslopes)`` shaped like the inputs (contiguous); ``dslopes`` ``(H,)`` is empty unless
        ``need_slopes``.
    """
    batch, n_heads, lq, _ = q.shape
    n_kv, lk = k.shape[1], k.shape[2]
    dtype = out.dtype
    qs = fold_queries(q, n_kv, dtype) * scale
    kk, vv = fold_keys(k, dtype), fold_keys(v, dtype)
    slopes_c = slopes.to(dtype) if slopes is not None else None
    grad_o = fold_queries(grad_out, n_kv, dtype)  # (B*Hkv, G, Lq, Dv)
    lse = fold_queries(lse[..., None], n_kv, dtype)[..., 0]  # (B*Hkv, G, Lq)
    delta = (grad_o * fold_queries(out, n_kv, dtype)).sum(-1, keepdim=True)  # (B*Hkv, G, Lq, 1)
    grad_q = torch.empty_like(qs)
    grad_k, grad_v = torch.zeros_like(kk), torch.zeros_like(vv)
    grad_slopes = torch.zeros(batch, n_heads, dtype=dtype, device=q.device) if need_slopes else None
    for block in query_blocks(lq, lk, chunk, document_ids):
        keys = block.keys
        q_rows, go_rows = block_rows(qs, block), block_rows(grad_o, block)
        scores, distance = _scores(qs, kk, slopes_c, block, batch, document_ids)
        probs = probs_block_(scores, block_rows(lse[..., None], block)[..., 0])
        grad_v[:, keys] += torch.bmm(probs.mT, go_rows)
        grad_s = torch.bmm(go_rows, vv[:, keys].mT).sub_(block_rows(delta, block)).mul_(probs)
        grad_q[:, :, block.start:block.stop] = torch.bmm(grad_s, kk[:, keys]).unflatten(1, (-1, block.rows))
        grad_k[:, keys] += torch.bmm(grad_s.mT, q_rows)
        if grad_slopes is not None:
            grad_slopes -= grad_s.view(batch, n_heads, -1) @ distance.to(dtype).flatten()
    grad_slopes = (grad_slopes.sum(0).to(slopes.dtype) if grad_slopes is not None and slopes is not None
                   else q.new_empty(0))
    return (grad_q.mul_(scale).view_as(q).to(q.dtype), grad_k.view_as(k).to(k.dtype), grad_v.view_as(v).to(v.dtype),
            grad_slopes)


@_causal_blockwise_backward.register_fake
def _causal_blockwise_backward_fake(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, slopes: Tensor | None,
                                    out: Tensor, lse: Tensor, scale: float, chunk: int, document_ids: Tensor | None,
                                    need_slopes: bool) -> tuple[Tensor, ...]:
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape),
            slopes.new_empty(slopes.shape) if need_slopes and slopes is not None else q.new_empty(0))


def _setup_context(ctx, inputs: tuple, output: tuple[Tensor, Tensor]) -> None:
    q, k, v, slopes, scale, chunk, document_ids = inputs
    ctx.save_for_backward(q, k, v, slopes, *output, document_ids)
    ctx.scale, ctx.chunk = scale, chunk


def _backward(ctx, grad_out: Tensor, grad_lse: Tensor) -> tuple[Tensor | None, ...]:
    q, k, v, slopes, out, lse, document_ids = ctx.saved_tensors
    need_slopes = slopes is not None and ctx.needs_input_grad[3]
    grad_q, grad_k, grad_v, grad_slopes = _causal_blockwise_backward(grad_out, q, k, v, slopes, out, lse, ctx.scale,
                                                                     ctx.chunk, document_ids, need_slopes)
    return grad_q, grad_k, grad_v, grad_slopes if need_slopes else None, None, None, None


_causal_blockwise.register_autograd(_backward, setup_context=_setup_context)


def document_mask(document_ids: Tensor, lq: int) -> Tensor:
    """The boolean mask of causal, same-document pairs for queries at the last ``lq`` keys: ``(B, 1, Lq, Lk)``."""
    lk = document_ids.shape[1]
    causal = torch.ones(lq, lk, dtype=torch.bool, device=document_ids.device).tril_(lk - lq)
    return ((document_ids[:, -lq:, None] == document_ids[:, None, :]) & causal)[:, None]


def causal_attention_torch(q: Tensor, k: Tensor, v: Tensor, *, scale: float, alibi_slopes: Tensor | None = None,
                           chunk_size: int | None = None, document_ids: Tensor | None = None) -> Tensor:
    """Causal attention on the PyTorch path (the CPU path of :func:`tapa_lab.kernels.causal_attention`).

    Args:
        q: ``(B, H, Lq, D)``; queries sit at the last ``Lq`` of the ``Lk`` key positions.
        k: ``(B, Hkv, Lk, D)``; v: ``(B, Hkv, Lk, Dv)``.
        scale: factor of q . k.
        alibi_slopes: per-head slopes ``m`` of the bias ``-m_h (i - j)``, ``(H,)`` (differentiable); ``None`` for none.
        chunk_size: query rows per block of the blockwise path; ``None`` picks one that keeps a tile near 8 MiB.
        document_ids: ``(B, Lk)`` document index of each key (queries: the last ``Lq``); a query sees only keys of
            its own document. ``None``: no document masking.

    Returns:
        ``(B, H, Lq, Dv)`` in the dtype of ``v``.
    """
    gqa = q.shape[1] != k.shape[1]
    if alibi_slopes is None and q.shape[2] == k.shape[2] and document_ids is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    if alibi_slopes is None and document_ids is not None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=document_mask(document_ids, q.shape[2]), scale=scale,
                                              enable_gqa=gqa)
    chunk = chunk_size or default_chunk(q.shape[0] * q.shape[1], k.shape[2])
    return _causal_blockwise(q, k, v, alibi_slopes, scale, chunk, document_ids)[0].to(v.dtype)

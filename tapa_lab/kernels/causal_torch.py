"""Causal attention (plain, or with the ALiBi bias of Press et al. 2022) in PyTorch: the CPU path of the Triton kernel.

Plain causal attention with ``Lq == Lk`` goes to ``F.scaled_dot_product_attention`` (fused on every device). Otherwise
(ALiBi, or queries at the last ``Lq < Lk`` positions) a blockwise autograd function runs blocks of query rows against
the keys they can see, saves only inputs, output and logsumexp, and recomputes each block in its backward:
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
    mask_future_,
    probs_block_,
    query_blocks,
    softmax_block_,
)


def _scores(q: Tensor, k: Tensor, slopes: Tensor | None, block: QueryBlock, batch: int) -> tuple[Tensor, Tensor]:
    """Causal-masked scores of a block ``(B*Hkv, G*rows, key_end)`` and its distances ``(rows, key_end)``."""
    scores = torch.bmm(block_rows(q, block), k[:, :block.key_end].mT)
    distance = block_distance(block, q.device)
    if slopes is not None:
        bias = slopes.unflatten(0, (k.shape[0] // batch, -1))[..., None, None] * distance.to(q.dtype)  # (Hkv,G,R,K)
        scores.view(batch, *bias.shape[:2], block.rows, -1).sub_(bias)
    return mask_future_(scores, block.rows), distance


class CausalBlockwise(torch.autograd.Function):
    """Blockwise causal attention with an optional ALiBi bias and a hand-written backward; see the module docstring."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, slopes: Tensor | None, scale: float, chunk: int) -> Tensor:
        batch, n_heads, lq, _ = q.shape
        n_kv, lk = k.shape[1], k.shape[2]
        dtype = compute_dtype(q.dtype)
        qs = fold_queries(q, n_kv, dtype) * scale  # (B*Hkv, G, Lq, D), a fresh tensor
        kk, vv = fold_keys(k, dtype), fold_keys(v, dtype)
        slopes_c = slopes.detach().to(dtype) if slopes is not None else None
        out = torch.empty(*qs.shape[:3], v.shape[-1], dtype=dtype, device=q.device)  # (B*Hkv, G, Lq, Dv)
        lse = torch.empty(qs.shape[:3], dtype=dtype, device=q.device)  # (B*Hkv, G, Lq)
        for block in query_blocks(lq, lk, chunk):
            out_block, lse_block = softmax_block_(_scores(qs, kk, slopes_c, block, batch)[0], vv[:, :block.key_end])
            out[:, :, block.start:block.stop] = out_block.unflatten(1, (-1, block.rows))
            lse[:, :, block.start:block.stop] = lse_block.unflatten(1, (-1, block.rows))
        ctx.save_for_backward(q, k, v, slopes, out, lse)
        ctx.scale, ctx.chunk = scale, chunk
        return out.view(batch, n_heads, lq, -1).to(v.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        q, k, v, slopes, out, lse = ctx.saved_tensors
        batch, n_heads, lq, _ = q.shape
        n_kv, lk = k.shape[1], k.shape[2]
        dtype = out.dtype
        qs = fold_queries(q, n_kv, dtype) * ctx.scale
        kk, vv = fold_keys(k, dtype), fold_keys(v, dtype)
        slopes_c = slopes.detach().to(dtype) if slopes is not None else None
        grad_o = fold_queries(grad_out, n_kv, dtype)  # (B*Hkv, G, Lq, Dv)
        delta = (grad_o * out).sum(-1, keepdim=True)  # (B*Hkv, G, Lq, 1)
        want_slopes = slopes is not None and ctx.needs_input_grad[3]
        grad_q = torch.empty_like(qs)
        grad_k, grad_v = torch.zeros_like(kk), torch.zeros_like(vv)
        grad_slopes = torch.zeros(batch, n_heads, dtype=dtype, device=q.device) if want_slopes else None
        for block in query_blocks(lq, lk, ctx.chunk):
            keys = slice(0, block.key_end)
            q_rows, go_rows = block_rows(qs, block), block_rows(grad_o, block)
            scores, distance = _scores(qs, kk, slopes_c, block, batch)
            probs = probs_block_(scores, block_rows(lse[..., None], block)[..., 0])
            grad_v[:, keys] += torch.bmm(probs.mT, go_rows)
            grad_s = torch.bmm(go_rows, vv[:, keys].mT).sub_(block_rows(delta, block)).mul_(probs)
            grad_q[:, :, block.start:block.stop] = torch.bmm(grad_s, kk[:, keys]).unflatten(1, (-1, block.rows))
            grad_k[:, keys] += torch.bmm(grad_s.mT, q_rows)
            if grad_slopes is not None:
                grad_slopes -= grad_s.view(batch, n_heads, -1) @ distance.to(dtype).flatten()
        grad_slopes = grad_slopes.sum(0).to(slopes.dtype) if grad_slopes is not None else None
        return (grad_q.mul_(ctx.scale).view_as(q).to(q.dtype), grad_k.view_as(k).to(k.dtype),
                grad_v.view_as(v).to(v.dtype), grad_slopes, None, None)


def causal_attention_torch(q: Tensor, k: Tensor, v: Tensor, *, scale: float, alibi_slopes: Tensor | None = None,
                           chunk_size: int | None = None) -> Tensor:
    """Causal attention on the PyTorch path (the CPU path of :func:`tapa_lab.kernels.causal_attention`).

    Args:
        q: ``(B, H, Lq, D)``; queries sit at the last ``Lq`` of the ``Lk`` key positions.
        k: ``(B, Hkv, Lk, D)``; v: ``(B, Hkv, Lk, Dv)``.
        scale: factor of q . k.
        alibi_slopes: per-head slopes ``m`` of the bias ``-m_h (i - j)``, ``(H,)`` (differentiable); ``None`` for none.
        chunk_size: query rows per block of the blockwise path; ``None`` picks one that keeps a tile near 8 MiB.

    Returns:
        ``(B, H, Lq, Dv)`` in the dtype of ``v``.
    """
    if alibi_slopes is None and q.shape[2] == k.shape[2]:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=q.shape[1] != k.shape[1])
    chunk = chunk_size or default_chunk(q.shape[0] * q.shape[1], k.shape[2])
    return CausalBlockwise.apply(q, k, v, alibi_slopes, scale, chunk)

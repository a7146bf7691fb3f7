"""Causal attention with an arbitrary, differentiable score modification, blockwise in PyTorch: the path of the bias
PEs (T5 bias, Kerple, FIRE) on CPU and of CoPE everywhere.

    S = scale q k^T, masked (future keys, other documents) to -inf;  S' = score_mod(S, q, i, j);  out = softmax(S') v

Queries run in blocks of ``chunk`` rows against the keys they can see (causal block skipping, as
:mod:`tapa_lab.kernels.blockwise`). Each block is a ``torch.utils.checkpoint`` region: the forward keeps only its
inputs, and the backward recomputes the block's tile and differentiates it with autograd, so the gradients of the
score modification's parameters (bias tables, MLPs, slopes) come for free and memory stays O(chunk x Lk) per head.
``score_mod`` sees the masked tile, so a content-dependent modification (CoPE's gates sigmoid(S)) sees zero weight on
invisible keys. Grouped-query attention: the G query heads sharing a key/value head are a broadcast dimension of the
matmul; K and V are never repeated.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from tapa_lab.kernels.blockwise import QueryBlock, compute_dtype, default_chunk, query_blocks

ScoreMod = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
"""``score_mod(scores (B, H, R, K), q (B, H, R, D), query_positions (R,), key_positions (K,)) -> (B, H, R, K)``."""


def _visible(block: QueryBlock, offset: int, document_ids: Tensor | None, device: torch.device) -> Tensor:
    """Which keys of the block each query sees: ``(1 or B, 1, R, K)`` bool (causal, and the same document)."""
    query_index = torch.arange(offset + block.start, offset + block.stop, device=device)
    key_index = torch.arange(block.key_start, block.key_end, device=device)
    visible = (key_index[None, :] <= query_index[:, None])[None, None]  # (1, 1, R, K)
    if document_ids is not None:
        same = document_ids[:, offset + block.start:offset + block.stop, None] == document_ids[:, None, block.keys]
        visible = visible & same[:, None]  # (B, 1, R, K)
    return visible


def _attend_block(q_rows: Tensor, k_keys: Tensor, v_keys: Tensor, visible: Tensor, query_positions: Tensor,
                  key_positions: Tensor, scale: float, score_mod: ScoreMod) -> Tensor:
    """One block: q ``(B, Hkv, G, R, D)``, k ``(B, Hkv, K, D)``, v ``(B, Hkv, K, Dv)`` -> ``(B, Hkv, G, R, Dv)``."""
    batch, n_kv, groups, rows, _ = q_rows.shape
    scores = (q_rows @ k_keys[:, :, None].mT).mul_(scale).flatten(1, 2)  # (B, H, R, K)
    scores = scores.masked_fill(~visible, float("-inf"))
    scores = score_mod(scores, q_rows.flatten(1, 2), query_positions, key_positions)
    probs = torch.softmax(scores.to(q_rows.dtype), dim=-1).unflatten(1, (n_kv, groups))  # (B, Hkv, G, R, K)
    return probs @ v_keys[:, :, None]


def score_mod_attention_torch(q: Tensor, k: Tensor, v: Tensor, positions: Tensor, *, scale: float,
                              score_mod: ScoreMod, document_ids: Tensor | None = None,
                              chunk_size: int | None = None) -> Tensor:
    """Causal attention whose scores pass through ``score_mod``; queries sit at the last ``Lq`` of ``Lk`` keys.

    Args:
        q: ``(B, H, Lq, D)``.
        k: ``(B, Hkv, Lk, D)``, ``H % Hkv == 0``; v: ``(B, Hkv, Lk, Dv)``.
        positions: ``(Lk,)`` absolute key positions (queries: the last ``Lq``), handed to ``score_mod``.
        scale: factor of q . k.
        score_mod: see :data:`ScoreMod`; it gets the masked scaled scores (``-inf`` where invisible), the block's
            queries (in the compute dtype) and the absolute positions of the block's queries and keys. Its parameters
            receive gradients.
        document_ids: ``(B, Lk)`` document index of every key; a query sees only keys of its own document.
        chunk_size: query rows per block; ``None`` keeps a tile near 8 MiB.

    Returns:
        ``(B, H, Lq, Dv)`` in the dtype of ``v``.
    """
    batch, n_heads, lq, _ = q.shape
    n_kv, lk = k.shape[1], k.shape[2]
    dtype = compute_dtype(q.dtype)
    qf = q.to(dtype).unflatten(1, (n_kv, n_heads // n_kv))  # (B, Hkv, G, Lq, D)
    kf, vf = k.to(dtype), v.to(dtype)
    offset = lk - lq
    chunk = chunk_size or default_chunk(batch * n_heads, lk)
    grad = torch.is_grad_enabled()
    outputs = []
    for block in query_blocks(lq, lk, chunk, document_ids):
        args = (qf[:, :, :, block.start:block.stop], kf[:, :, block.keys], vf[:, :, block.keys],
                _visible(block, offset, document_ids, q.device),
                positions[offset + block.start:offset + block.stop], positions[block.keys], scale, score_mod)
        outputs.append(checkpoint(_attend_block, *args, use_reentrant=False) if grad else _attend_block(*args))
    return torch.cat(outputs, dim=3).flatten(1, 2).to(v.dtype)  # (B, H, Lq, Dv)

"""Shared pieces of the blockwise PyTorch attention paths (``tapa_torch``, ``causal_torch``).

Both paths process the queries in blocks of ``chunk`` rows. A block sees every key up to its last query position and
no further (causal block skipping), so its score tile is ``(rows, key_end)`` and memory stays O(chunk x Lk) per head.
Grouped-query attention is handled by folding the G query heads that share a key/value head into the rows of the tile:
queries ``(B, H, L, D)`` are viewed as ``(B*Hkv, G, L, D)`` (head ``h`` uses key/value head ``h // G``) and keys as
``(B*Hkv, Lk, D)``, so one batched matmul serves the whole group without repeating K or V.

Document masking (``document_ids`` ``(B, Lk)``): a query sees only keys with its own document id. Inside a block the
other documents' keys are set to ``-inf`` (:func:`mask_documents_`), and the block's keys start at the first key
whose id lies within the block's range of query ids in some batch row (whole-key skipping: with packed windows, whose
ids never decrease, a block skips every earlier document), so its tile is ``(rows, key_end - key_start)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

#: Target number of score elements per block tile: ~2^21 fp32 values (8 MiB) keeps the elementwise passes in cache.
TILE_ELEMENTS = 1 << 21
#: Bounds of the automatic query block size.
MIN_CHUNK, MAX_CHUNK = 16, 256


@dataclass(frozen=True)
class QueryBlock:
    """Rows ``start:stop`` of the queries; they see keys ``key_start:key_end`` (the last ``stop - start`` keys
    diagonally; ``key_start`` is 0 without document masking)."""

    start: int
    stop: int
    key_end: int
    key_start: int = 0

    @property
    def rows(self) -> int:
        return self.stop - self.start

    @property
    def keys(self) -> slice:
        """The keys the block sees."""
        return slice(self.key_start, self.key_end)


def default_chunk(batch_heads: int, lk: int) -> int:
    """Query rows per block so that one ``(batch_heads, rows, lk)`` score tile holds about :data:`TILE_ELEMENTS`."""
    rows = TILE_ELEMENTS // max(1, batch_heads * lk)
    return max(MIN_CHUNK, min(MAX_CHUNK, 1 << max(0, rows.bit_length() - 1)))


def query_blocks(lq: int, lk: int, chunk: int, document_ids: Tensor | None = None) -> Iterator[QueryBlock]:
    """Blocks of ``chunk`` query rows (the last one may be shorter); queries sit at the last ``lq`` of ``lk`` keys.

    With ``document_ids`` ``(B, Lk)``, each block starts at its first key that some query of the block may see.
    """
    offset = lk - lq
    for start in range(0, lq, chunk):
        stop = min(start + chunk, lq)
        key_start = 0 if document_ids is None else _first_key(document_ids, offset + start, offset + stop)
        yield QueryBlock(start, stop, offset + stop, key_start)


def _first_key(document_ids: Tensor, first: int, end: int) -> int:
    """The first key before ``end`` whose id lies in the id range of queries ``first:end`` in some batch row."""
    query_ids = document_ids[:, first:end]
    keys = document_ids[:, :end]
    seen = ((keys >= query_ids.amin(1, keepdim=True)) & (keys <= query_ids.amax(1, keepdim=True))).any(0)
    return int(seen.to(torch.int8).argmax())


def block_distance(block: QueryBlock, device: torch.device) -> Tensor:
    """``i - j`` over the block's tile, clamped at 0 for future keys: ``(rows, key_end - key_start)`` int64."""
    qpos = torch.arange(block.key_end - block.rows, block.key_end, device=device)
    kpos = torch.arange(block.key_start, block.key_end, device=device)
    return (qpos[:, None] - kpos[None, :]).clamp_min_(0)


def mask_documents_(scores: Tensor, document_ids: Tensor | None, block: QueryBlock) -> Tensor:
    """Set the scores of keys from other documents in a block tile ``(B*Hkv, G*rows, keys)`` to ``-inf`` in place.

    Args:
        scores: the tile; its batch rows are ``B`` groups of ``Hkv`` (see :func:`fold_queries`).
        document_ids: ``(B, Lk)``, or ``None`` (the tile is returned untouched).
        block: the block (its queries sit at keys ``key_end - rows .. key_end - 1``).
    """
    if document_ids is None:
        return scores
    key_ids = document_ids[:, block.keys]  # (B, keys); the queries are its last ``rows`` columns
    if bool((key_ids == key_ids[:, -1:]).all()):
        return scores  # one document per batch row over the whole tile: nothing to mask
    other = key_ids[:, -block.rows:, None] != key_ids[:, None, :]  # (B, rows, keys)
    batch = document_ids.shape[0]
    scores.view(batch, -1, block.rows, scores.shape[-1]).masked_fill_(other[:, None], float("-inf"))
    return scores


def mask_future_(scores: Tensor, rows: int) -> Tensor:
    """Set the future keys of a block tile ``(N, G*rows, key_end)`` to ``-inf`` in place and return it.

    Only the last ``rows`` keys can lie in the future of a row of the block.
    """
    future = torch.ones(rows, rows, dtype=torch.bool, device=scores.device).triu_(1)
    scores.unflatten(1, (-1, rows))[..., scores.shape[-1] - rows:].masked_fill_(future, float("-inf"))
    return scores


def fold_queries(x: Tensor, n_kv_heads: int, dtype: torch.dtype) -> Tensor:
    """``(B, H, L, D) -> (B*Hkv, G, L, D)`` in ``dtype``, contiguous (one copy at most)."""
    b, h, length, d = x.shape
    return x.to(dtype).reshape(b * n_kv_heads, h // n_kv_heads, length, d)


def fold_keys(x: Tensor, dtype: torch.dtype) -> Tensor:
    """``(B, Hkv, L, D) -> (B*Hkv, L, D)`` in ``dtype``, contiguous (one copy at most)."""
    b, hkv, length, d = x.shape
    return x.to(dtype).reshape(b * hkv, length, d)


def block_rows(x: Tensor, block: QueryBlock) -> Tensor:
    """The block's rows of folded queries ``(B*Hkv, G, L, D)`` as a matmul operand ``(B*Hkv, G*rows, D)``."""
    n, g, _, d = x.shape
    return x[:, :, block.start:block.stop].reshape(n, g * block.rows, d)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the PyTorch paths compute in: fp32 for half precisions, else the input's dtype."""
    return torch.promote_types(dtype, torch.float32)


def softmax_block_(scores: Tensor, v_keys: Tensor) -> tuple[Tensor, Tensor]:
    """Causal-masked scores of one block, ``(N, R, key_end)`` (overwritten), and values ``(N, key_end, Dv)``.

    Returns:
        ``(out, lse)``: ``(N, R, Dv)`` attention output and ``(N, R)`` natural-log logsumexp of the scores.
    """
    row_max = scores.amax(dim=-1, keepdim=True)
    probs = scores.sub_(row_max).exp_()
    row_sum = probs.sum(dim=-1, keepdim=True)
    out = torch.bmm(probs, v_keys).div_(row_sum)
    return out, (row_max + row_sum.log()).squeeze(-1)


def probs_block_(scores: Tensor, lse: Tensor) -> Tensor:
    """Softmax probabilities from masked scores ``(N, R, key_end)`` (overwritten) and their ``lse`` ``(N, R)``."""
    return scores.sub_(lse.unsqueeze(-1)).exp_()

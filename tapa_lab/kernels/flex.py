"""Causal attention with an additive position bias through FlexAttention (``torch.nn.attention.flex_attention``,
Dong et al. 2024, arXiv 2412.05496): the fused path of the bias PEs on CUDA.

    score(b, h, i, j) = scale q_i . k_j + bias(h, p_i, p_j),  keys j <= i (and of the same document)

``bias`` is written elementwise over the head and the absolute positions with scalar loads of its parameters (no
per-element vectors or reductions, which inductor's FlexAttention templates do not lower), so one definition serves
FlexAttention's ``score_mod`` and, broadcast, the blockwise PyTorch path. On CUDA the call is compiled
(``torch.compile``), which fuses the bias into a Triton kernel, forward and backward, gradients of the bias's
parameters included (not yet run on a GPU: no GPU was lent to the session that wrote it). On CPU (torch 2.13)
FlexAttention has no backward and, uncompiled, materialises the scores; it runs here only for inference and for the
forward parity tests. Measured on 2 shared CPU cores (B 16, H 4, L 128, D 32, a linear bias): uncompiled forward 261 ms,
compiled 19 ms after a 39 s compilation; compiled CPU forwards of the T5, Kerple and FIRE biases match the blockwise
path to 5e-7 (13-46 s of compilation each). So training on CPU uses :mod:`tapa_lab.kernels.score_mod_torch`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import cache

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

PositionBias = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``bias(head, query_position, key_position) -> bias``, elementwise over broadcastable integer tensors."""


@cache
def _compiled_flex() -> Callable[..., Tensor]:
    return torch.compile(flex_attention, dynamic=False)


def flex_bias_attention(q: Tensor, k: Tensor, v: Tensor, positions: Tensor, *, scale: float, bias: PositionBias,
                        document_ids: Tensor | None = None) -> Tensor:
    """Causal attention plus ``bias`` through FlexAttention; queries sit at the last ``Lq`` of the ``Lk`` keys.

    Args:
        q: ``(B, H, Lq, D)``; k: ``(B, Hkv, Lk, D)``, ``H % Hkv == 0``; v: ``(B, Hkv, Lk, D)``.
        positions: ``(Lk,)`` absolute key positions (queries: the last ``Lq``).
        scale: factor of q . k.
        bias: see :data:`PositionBias`; its captured parameters receive gradients (CUDA).
        document_ids: ``(B, Lk)`` document index of every key; a query sees only keys of its own document.

    Returns:
        ``(B, H, Lq, D)`` in q's dtype.
    """
    lq, lk = q.shape[2], k.shape[2]
    offset = lk - lq

    def score_mod(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return score + bias(h, positions[q_idx + offset], positions[kv_idx]).to(score.dtype)

    if document_ids is None:
        def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            return q_idx + offset >= kv_idx
    else:
        def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            same = document_ids[b, q_idx + offset] == document_ids[b, kv_idx]
            return (q_idx + offset >= kv_idx) & same

    batch = None if document_ids is None else q.shape[0]
    block_mask = create_block_mask(mask_mod, batch, None, lq, lk, device=q.device)
    gqa = q.shape[1] != k.shape[1]
    if q.is_cuda:
        return _compiled_flex()(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale, enable_gqa=gqa)
    with warnings.catch_warnings():  # the CPU path is uncompiled on purpose (see the module docstring)
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale, enable_gqa=gqa)

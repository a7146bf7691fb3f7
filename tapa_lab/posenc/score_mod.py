"""Shared machinery of the PEs that modify the score tile: additive position biases (T5, Kerple, FIRE) and CoPE.

A subclass of :class:`_ScoreModEncoding` defines :meth:`_ScoreModEncoding.score_mod`, applied to each block of masked
scores by :func:`tapa_lab.kernels.score_mod_torch.score_mod_attention_torch`. A subclass of :class:`_PositionBias`
defines only :meth:`_PositionBias.head_bias`, an elementwise function of the head and the absolute positions, which
also runs as FlexAttention's ``score_mod`` (:func:`tapa_lab.kernels.flex.flex_bias_attention`). Backends: ``auto`` takes
FlexAttention on CUDA (float64 excepted) and the blockwise PyTorch path elsewhere; ``torch`` always the blockwise
path; ``triton`` always FlexAttention (compiled to Triton kernels on CUDA; on CPU uncompiled and forward only).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tapa_lab.kernels.flex import flex_bias_attention
from tapa_lab.kernels.score_mod_torch import score_mod_attention_torch
from tapa_lab.posenc.base import PositionalEncoding


class _ScoreModEncoding(PositionalEncoding):
    """A PE that rewrites the masked, scaled scores q.k / sqrt(D) of each block (see the module docstring)."""

    def score_mod(self, scores: Tensor, q: Tensor, query_positions: Tensor, key_positions: Tensor) -> Tensor:
        """The modified scores of a block.

        Args:
            scores: ``(B, H, R, K)`` scaled scores, ``-inf`` at invisible keys.
            q: ``(B, H, R, D)`` the block's queries.
            query_positions: ``(R,)`` absolute positions of the queries; key_positions: ``(K,)`` of the keys.

        Returns:
            ``(B, H, R, K)``.
        """
        raise NotImplementedError

    def attend(self, q: Tensor, k: Tensor, v: Tensor, positions: Tensor, document_ids: Tensor | None = None) -> Tensor:
        return score_mod_attention_torch(q, k, v, positions, scale=self.softmax_scale, score_mod=self.score_mod,
                                         document_ids=document_ids)

    def pair_scores(self, q: Tensor, k: Tensor, query: Tensor, key: Tensor) -> Tensor:
        length = q.shape[1]
        positions = torch.arange(length, device=q.device)
        qd, kd = q.double(), k.double()
        scores = (qd @ kd.mT) * self.softmax_scale  # (H, L, L)
        scores = scores.masked_fill(positions[None, :] > positions[:, None], float("-inf"))
        return self.score_mod(scores[None], qd[None], positions, positions)[0][:, query, key].double()


class _PositionBias(_ScoreModEncoding):
    """A PE that adds a bias depending on the absolute positions of query and key: S + b_h(i, j)."""

    def head_bias(self, head: Tensor, query: Tensor, key: Tensor) -> Tensor:
        """b_h(i, j), elementwise over broadcastable integer tensors, with scalar loads of the parameters only (so
        that it compiles as FlexAttention's ``score_mod``).

        Args:
            head: head indices h; query: absolute query positions i; key: absolute key positions j.

        Returns:
            The broadcast shape; only pairs with j <= i matter.
        """
        raise NotImplementedError

    def position_bias(self, query: Tensor, key: Tensor) -> Tensor:
        """The bias of every head: ``(H, *broadcast shape of query and key)``; a subclass may vectorise it."""
        heads = torch.arange(self.n_heads, device=query.device).view(-1, *([1] * max(query.dim(), key.dim())))
        return self.head_bias(heads, query[None], key[None])

    def score_mod(self, scores: Tensor, q: Tensor, query_positions: Tensor, key_positions: Tensor) -> Tensor:
        return scores + self.position_bias(query_positions[:, None], key_positions[None, :])  # (H, R, K) broadcast

    def uses_flex(self, q: Tensor) -> bool:
        """Whether :meth:`attend` takes FlexAttention for inputs like ``q`` (see the module docstring)."""
        return self.backend == "triton" or (self.backend == "auto" and q.is_cuda and q.dtype != torch.float64)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, positions: Tensor, document_ids: Tensor | None = None) -> Tensor:
        if not self.uses_flex(q):
            return super().attend(q, k, v, positions, document_ids)
        return flex_bias_attention(q, k, v, positions, scale=self.softmax_scale, bias=self.head_bias,
                                   document_ids=document_ids)

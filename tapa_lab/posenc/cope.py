"""CoPE: contextual position encoding (Golovneva et al. 2024, "Contextual Position Encoding: Learning to Count
What's Important", arXiv 2405.18719, section 3 and appendix B).

Positions are counted by the content: each key j gets a gate g_ij = sigmoid(q_i . k_j / sqrt(D)) from query i, and
the position of key j seen from i is the sum of the gates from j to i; it indexes, by linear interpolation between
integer positions, a learned table e[0 .. npos_max - 1] shared by the heads (one table per layer, initialised to 0):

    p_ij = sum_{t = j}^{i} g_it  (clamped at npos_max - 1),   z_ij = q_i . e[p_ij]
         = (ceil(p) - p) q_i . e[floor(p)] + (p - floor(p)) q_i . e[ceil(p)]
    score(i, j) = q_i . k_j / sqrt(D) + z_ij

Masked keys (future, other documents) have gate 0, so p_ij depends only on query i and keys j .. i: KV-cache decoding
gives the same scores as a full forward, and shifting every position changes nothing. The cumulative sum runs over
the keys of a query row, so CoPE is not an elementwise ``score_mod`` and has no FlexAttention path; it runs on the
blockwise PyTorch path (:mod:`tapa_lab.kernels.score_mod_torch`), which materialises one block of rows at a time and
recomputes it in the backward: memory O(chunk x Lk) per head, time O(L^2 (D + npos_max)) on every backend.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tapa_lab.errors import require
from tapa_lab.kernels import Backend
from tapa_lab.posenc.score_mod import _ScoreModEncoding


class CoPE(_ScoreModEncoding):
    """Contextual position encoding.

    Args:
        npos_max: number of integer positions with an embedding; contextual positions are clamped at npos_max - 1;
            >= 2 (paper: 64 for language modelling).
        backend: accepted for a uniform interface; CoPE always runs on the blockwise PyTorch path.
    """

    def __init__(self, npos_max: int = 64, backend: Backend = "auto") -> None:
        super().__init__(backend)
        require(npos_max >= 2, "model.posenc.init_args.npos_max", ">= 2", npos_max)
        self.npos_max = npos_max

    def bind(self, n_heads: int, n_kv_heads: int, head_dim: int) -> None:
        super().bind(n_heads, n_kv_heads, head_dim)
        self.pos_emb = nn.Parameter(torch.zeros(self.npos_max, head_dim))  # (npos_max, D)

    def contextual_positions(self, scores: Tensor) -> Tensor:
        """p_ij from masked scores ``(..., R, K)`` (``-inf`` where invisible): the reversed cumulative gate sum."""
        gates = torch.sigmoid(scores)
        return gates.flip(-1).cumsum(-1).flip(-1).clamp(max=self.npos_max - 1)

    def score_mod(self, scores: Tensor, q: Tensor, query_positions: Tensor, key_positions: Tensor) -> Tensor:
        position = self.contextual_positions(scores)  # (B, H, R, K)
        logits = q @ self.pos_emb.to(q.dtype).T  # (B, H, R, npos_max): q_i . e[p] at integer p
        floor = position.floor()
        weight = position - floor
        at_floor = logits.gather(-1, floor.long())
        at_ceil = logits.gather(-1, position.ceil().long())
        return scores + at_ceil * weight + at_floor * (1 - weight)

    def extra_repr(self) -> str:
        return f"npos_max={self.npos_max}, {super().extra_repr()}"

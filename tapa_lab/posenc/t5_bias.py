"""T5 relative position bias: a learned scalar per head and distance bucket (Raffel et al. 2020, "Exploring the Limits
of Transfer Learning with a Unified Text-to-Text Transformer", JMLR 21, arXiv 1910.10683, section 2.1).

    score(i, j) = q_i . k_j / sqrt(D) + b_h[bucket(i - j)]

With n = i - j (clamped at 0; a causal decoder only sees n >= 0), half of the buckets hold one distance each
(n < num_buckets / 2) and the other half cover distances up to ``max_distance`` logarithmically; every longer distance
shares the last bucket:

    bucket(n) = n                                                             if n < E = num_buckets / 2
              = min(E + floor(ln(n / E) / ln(max_distance / E) (num_buckets - E)), num_buckets - 1)   otherwise

``bidirectional=True`` is the encoder's variant (half the buckets for future keys, which a causal model never uses).
Convention: T5 itself drops the 1/sqrt(D) of q.k (folded into its initialisation); here q.k keeps it, as for every PE
of the lab, and the bias is added unscaled.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tapa_lab.errors import require
from tapa_lab.kernels import Backend
from tapa_lab.posenc.score_mod import _PositionBias


def t5_bucket(distance: Tensor, bidirectional: bool, num_buckets: int, max_distance: int) -> Tensor:
    """T5's bucket of each relative distance ``i - j`` (any shape, int64); as transformers' and x-transformers'."""
    n = distance.long()
    offset = torch.zeros_like(n)
    if bidirectional:
        num_buckets //= 2
        offset = (n < 0).long() * num_buckets
        n = n.abs()
    else:
        n = n.clamp_min(0)
    exact = num_buckets // 2
    log_ratio = torch.log(n.float() / exact) / math.log(max_distance / exact)
    large = (exact + (log_ratio * (num_buckets - exact)).long()).clamp_max(num_buckets - 1)
    return offset + torch.where(n < exact, n, large)


class T5RelativeBias(_PositionBias):
    """T5's bucketed relative position bias, one table per layer.

    Args:
        num_buckets: number of distance buckets; >= 2 (>= 4 when bidirectional). T5: 32.
        max_distance: distances from here on share the last bucket; > num_buckets / 2 (one-sided). T5: 128.
        bidirectional: the encoder's bucketing (half the buckets for future keys); false for a decoder (T5's).
        backend: ``auto`` (FlexAttention on CUDA, the blockwise PyTorch path elsewhere), ``triton`` (FlexAttention)
            or ``torch`` (blockwise).
    """

    def __init__(self, num_buckets: int = 32, max_distance: int = 128, bidirectional: bool = False,
                 backend: Backend = "auto") -> None:
        super().__init__(backend)
        min_buckets = 4 if bidirectional else 2
        require(num_buckets >= min_buckets, "model.posenc.init_args.num_buckets",
                f">= {min_buckets} (bidirectional={bidirectional})", num_buckets)
        exact = (num_buckets // 2 if bidirectional else num_buckets) // 2
        require(max_distance > exact, "model.posenc.init_args.max_distance",
                f"> {exact} (the buckets of one distance each)", max_distance)
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional

    def bind(self, n_heads: int, n_kv_heads: int, head_dim: int) -> None:
        super().bind(n_heads, n_kv_heads, head_dim)
        self.table = nn.Parameter(torch.randn(self.num_buckets, n_heads) * 0.02)  # (buckets, H)

    def head_bias(self, head: Tensor, query: Tensor, key: Tensor) -> Tensor:
        return self.table[t5_bucket(query - key, self.bidirectional, self.num_buckets, self.max_distance), head]

    def extra_repr(self) -> str:
        return (f"num_buckets={self.num_buckets}, max_distance={self.max_distance}, "
                f"bidirectional={self.bidirectional}, {super().extra_repr()}")

"""FIRE: functional interpolation for relative positional encoding (Li et al. 2023, "Functional Interpolation for
Relative Positions Improves Long Context Transformers", ICLR 2024, arXiv 2310.04418, eq. 4 and appendix).

A learned MLP f: R -> R^H of the log-transformed distance, progressively interpolated by the query position:

    score(i, j) = q_i . k_j / sqrt(D) + f(psi(i - j) / psi(max(L, i)))_h,    psi(x) = ln(c x + 1)

with a learnable c > 0 (used as |c|) and a learnable threshold L = |l L0| (l learned, L0 = ``init_threshold`` fixed),
so that for i > L the input lies in [0, 1] whatever the length. As the authors' appendix code: f is
Linear(1, width) -> ReLU -> Linear(width, H), the denominator gets + eps, positions are absolute (the query at
absolute position i uses max(L, i)); so FIRE is not translation invariant past the threshold, but a query's scores
depend only on its own absolute position and its keys', which keeps KV-cache decoding exact.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from tapa_lab.errors import require
from tapa_lab.kernels import Backend
from tapa_lab.posenc.score_mod import _PositionBias


class FIRE(_PositionBias):
    """FIRE position bias, one MLP per layer.

    Args:
        mlp_width: hidden width of the MLP f; >= 1 (paper: 32).
        init_c: initial value of c in psi(x) = ln(c x + 1); > 0 (paper: 0.1).
        init_threshold: L0, the fixed scale of the learned threshold L = |l L0| (l starts at 1); > 0 (paper: 512).
        eps: added to the denominator psi(max(L, i)); > 0 (paper: 1e-6).
        backend: ``auto`` (FlexAttention on CUDA, the blockwise PyTorch path elsewhere), ``triton`` (FlexAttention)
            or ``torch`` (blockwise).
    """

    translation_invariant = False

    def __init__(self, mlp_width: int = 32, init_c: float = 0.1, init_threshold: float = 512.0, eps: float = 1e-6,
                 backend: Backend = "auto") -> None:
        super().__init__(backend)
        require(mlp_width >= 1, "model.posenc.init_args.mlp_width", ">= 1", mlp_width)
        require(init_c > 0, "model.posenc.init_args.init_c", "> 0", init_c)
        require(init_threshold > 0, "model.posenc.init_args.init_threshold", "> 0", init_threshold)
        require(eps > 0, "model.posenc.init_args.eps", "> 0", eps)
        self.mlp_width = mlp_width
        self.init_c = init_c
        self.init_threshold = init_threshold
        self.eps = eps

    def bind(self, n_heads: int, n_kv_heads: int, head_dim: int) -> None:
        super().bind(n_heads, n_kv_heads, head_dim)
        self.mlp = nn.Sequential(nn.Linear(1, self.mlp_width), nn.ReLU(), nn.Linear(self.mlp_width, n_heads))
        self.c = nn.Parameter(torch.tensor(float(self.init_c)))
        self.threshold_scale = nn.Parameter(torch.tensor(1.0))

    def normalized_distance(self, query: Tensor, key: Tensor) -> Tensor:
        """psi(i - j) / psi(max(L, i)), broadcast over ``query`` and ``key`` (absolute positions)."""
        c = self.c.abs()
        threshold = (self.threshold_scale * self.init_threshold).abs()
        i = query.to(c.dtype)
        distance = torch.log(c * (i - key.to(c.dtype)).abs() + 1)
        normalizer = torch.log(c * torch.maximum(i, threshold) + 1) + self.eps
        return distance / normalizer

    def position_bias(self, query: Tensor, key: Tensor) -> Tensor:
        x = self.normalized_distance(query, key)
        return self.mlp(x[..., None]).movedim(-1, 0)  # (H, ...): the MLP as matmuls

    def head_bias(self, head: Tensor, query: Tensor, key: Tensor) -> Tensor:
        x = self.normalized_distance(query, key)
        first, last = cast(nn.Linear, self.mlp[0]), cast(nn.Linear, self.mlp[2])  # built by bind
        out = last.bias[head]
        for unit in range(self.mlp_width):  # the MLP unit by unit: scalar loads only, as FlexAttention compiles it
            out = out + last.weight[head, unit] * torch.relu(first.weight[unit, 0] * x + first.bias[unit])
        return out

    def extra_repr(self) -> str:
        return (f"mlp_width={self.mlp_width}, init_c={self.init_c}, init_threshold={self.init_threshold}, "
                f"{super().extra_repr()}")

"""The building blocks of a Llama-style decoder: RMSNorm, SwiGLU MLP and the pre-norm transformer block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tapa_lab.model.attention import Attention
from tapa_lab.model.cache import Cache
from tapa_lab.posenc.base import PositionalEncoding


class RMSNorm(nn.Module):
    """Root-mean-square layer norm (Zhang & Sennrich 2019), computed in fp32. ``(..., d) -> (..., d)``."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * self.weight.float()).to(x.dtype)


class SwiGLU(nn.Module):
    """Gated MLP: W2 (silu(W1 x) * W3 x) (Shazeer 2020, "GLU Variants Improve Transformer"); no biases."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x)). ``(B, L, d) -> (B, L, d)``."""

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, hidden_dim: int, posenc: PositionalEncoding,
                 norm_eps: float, layer_idx: int = 0) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(dim, norm_eps)
        self.attn = Attention(dim, n_heads, n_kv_heads, posenc, layer_idx)
        self.mlp_norm = RMSNorm(dim, norm_eps)
        self.mlp = SwiGLU(dim, hidden_dim)

    def forward(self, x: Tensor, positions: Tensor, cache: Cache | None = None,
                document_ids: Tensor | None = None) -> Tensor:
        """``positions (Lk,)``: key positions (see :meth:`Attention.forward`); ``cache``: earlier keys and values;
        ``document_ids (B, Lk)``: intra-document masking."""
        x = x + self.attn(self.attn_norm(x), positions, cache, document_ids)
        return x + self.mlp(self.mlp_norm(x))

"""Grouped-query self-attention that delegates all position handling to its positional encoding."""

from __future__ import annotations

from torch import Tensor, nn

from tapa_lab.model.cache import Cache
from tapa_lab.model.split_linear import HeadSplitLinear
from tapa_lab.posenc.base import PositionalEncoding


class Attention(nn.Module):
    """Causal grouped-query attention (Ainslie et al. 2023, arXiv 2305.13245); no biases.

    The PE decides how positions enter (rotate q/k, bias the scores, or change the score): this module only projects
    and calls ``posenc.attend``.

    Args:
        dim: model width d.
        n_heads: query heads H; ``dim % n_heads == 0``.
        n_kv_heads: key/value heads Hkv; ``n_heads % n_kv_heads == 0``.
        posenc: a PE instance, bound here to this layer's head geometry (the caller passes a fresh copy per layer).
        layer_idx: this layer's index in the decoder, its slot in a KV cache.
    """

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, posenc: PositionalEncoding, layer_idx: int = 0
                 ) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.layer_idx = layer_idx
        self.head_dim = dim // n_heads
        self.wq: nn.Linear | HeadSplitLinear = nn.Linear(dim, n_heads * self.head_dim, bias=False)
        self.wk: nn.Linear | HeadSplitLinear = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(n_heads * self.head_dim, dim, bias=False)
        posenc.bind(n_heads, n_kv_heads, self.head_dim)  # after the projections: the same random stream as before
        parts = posenc.qk_parts()  # e.g. TAPA's amplitude and phase rows, each its own parameter
        if parts:
            self.wq = HeadSplitLinear.from_linear(self.wq, n_heads, parts)
            self.wk = HeadSplitLinear.from_linear(self.wk, n_kv_heads, parts)
        self.posenc = posenc

    def project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Project ``x (B, L, d)`` to q ``(B, H, L, D)``, k and v ``(B, Hkv, L, D)``, before any PE."""
        b, length, _ = x.shape
        q = self.wq(x).view(b, length, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, L, D)
        k = self.wk(x).view(b, length, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, L, D)
        v = self.wv(x).view(b, length, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, L, D)
        return q, k, v

    def forward(self, x: Tensor, positions: Tensor, cache: Cache | None = None,
                document_ids: Tensor | None = None) -> Tensor:
        """``x (B, L, d)`` -> ``(B, L, d)``.

        Args:
            x: the new tokens' hidden states.
            positions: ``(Lk,)`` absolute key positions, ``Lk = L`` plus the tokens in ``cache``; x sits at the last L.
            cache: keys and values of earlier tokens (before the PE); this layer's new ones are appended to it.
            document_ids: ``(B, Lk)`` document index of every key (queries: the last L); a query attends only to keys
                of its own document. ``None``: no document masking.
        """
        b, length, _ = x.shape
        q, k, v = self.project_qkv(x)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, Hkv, Lk, D): cached then new
        out = self.posenc.attend(q, k, v, positions, document_ids=document_ids)  # (B, H, L, D)
        return self.wo(out.transpose(1, 2).reshape(b, length, self.n_heads * self.head_dim))

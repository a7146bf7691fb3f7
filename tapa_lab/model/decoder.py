"""DecoderLM: a Llama-style decoder-only language model with a pluggable positional encoding.

token embedding -> n_layers x [RMSNorm -> attention(PE) -> RMSNorm -> SwiGLU] -> RMSNorm -> logits.
Sizes live in YAML presets (experiments/model/*.yaml); the PE is any :class:`~tapa_lab.posenc.PositionalEncoding`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn

from tapa_lab.errors import require
from tapa_lab.model.blocks import Block, RMSNorm
from tapa_lab.model.cache import Cache
from tapa_lab.model.split_linear import HeadSplitLinear
from tapa_lab.posenc.base import PositionalEncoding


@dataclass
class DecoderConfig:
    """Shape of the decoder."""

    d_model: int = 128
    """Model width d; a multiple of n_heads."""
    n_layers: int = 2
    """Number of transformer blocks."""
    n_heads: int = 4
    """Query heads per layer; head dim D = d_model / n_heads."""
    n_kv_heads: int | None = None
    """Key/value heads for grouped-query attention; a divisor of n_heads. null means n_heads (multi-head)."""
    mlp_hidden_dim: int | None = None
    """SwiGLU hidden width; null means 8/3 d_model rounded up to a multiple of 64 (Llama)."""
    tie_embeddings: bool = True
    """Share the token embedding and the output projection."""
    norm_eps: float = 1e-5
    """RMSNorm epsilon."""
    init_std: float = 0.02
    """Standard deviation of the normal weight init (residual projections are scaled by 1/sqrt(2 n_layers))."""

    def validate(self) -> None:
        """Raise :class:`~tapa_lab.errors.ConfigError` naming the first field out of range."""
        require(self.n_layers >= 1, "model.architecture.n_layers", ">= 1", self.n_layers)
        require(self.n_heads >= 1, "model.architecture.n_heads", ">= 1", self.n_heads)
        require(self.d_model >= 1 and self.d_model % self.n_heads == 0, "model.architecture.d_model",
                f"a positive multiple of n_heads={self.n_heads}", self.d_model)
        require(self.kv_heads >= 1 and self.n_heads % self.kv_heads == 0, "model.architecture.n_kv_heads",
                f"null or a divisor of n_heads={self.n_heads}", self.n_kv_heads)
        require(self.mlp_hidden_dim is None or self.mlp_hidden_dim >= 1, "model.architecture.mlp_hidden_dim",
                "null or >= 1", self.mlp_hidden_dim)
        require(self.init_std > 0, "model.architecture.init_std", "> 0", self.init_std)

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def hidden_dim(self) -> int:
        if self.mlp_hidden_dim is not None:
            return self.mlp_hidden_dim
        return 64 * math.ceil(8 * self.d_model / 3 / 64)


class DecoderLM(nn.Module):
    """Decoder-only language model.

    Args:
        vocab_size: number of token ids.
        config: the decoder's shape.
        posenc: the positional encoding; each layer gets its own bound copy, and a model-level copy adds absolute
            positions to the token embeddings (:meth:`PositionalEncoding.embed`; the identity for relative PEs).
    """

    def __init__(self, vocab_size: int, config: DecoderConfig, posenc: PositionalEncoding) -> None:
        super().__init__()
        config.validate()
        require(vocab_size >= 1, "model.vocab_size", ">= 1", vocab_size)
        self.config = config
        self.embed = nn.Embedding(vocab_size, config.d_model)
        self.posenc = copy.deepcopy(posenc)  # model-level copy: absolute PEs add to the embeddings (PE.embed)
        self.posenc.bind_embedding(config.d_model)
        self.blocks = nn.ModuleList(
            Block(config.d_model, config.n_heads, config.kv_heads, config.hidden_dim, copy.deepcopy(posenc),
                  config.norm_eps, layer_idx)
            for layer_idx in range(config.n_layers)
        )
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.head = nn.Linear(config.d_model, vocab_size, bias=False)
        if config.tie_embeddings:
            self.head.weight = self.embed.weight
        self.reset_parameters()

    @property
    def layers(self) -> list[Block]:
        """The transformer blocks in order, typed (``blocks`` is the ``nn.ModuleList`` that registers them)."""
        return cast("list[Block]", list(self.blocks))

    def reset_parameters(self) -> None:
        """Normal(0, init_std) for every matrix but the PE's (a PE initialises its own parameters); output projections
        of residual branches scaled by 1/sqrt(2 L); then each layer's PE adjusts its q and k projections
        (:meth:`PositionalEncoding.init_qk_`)."""
        std = self.config.init_std
        residual_std = std / math.sqrt(2 * self.config.n_layers)
        seen: set[int] = set()
        for module_name, module in self.named_modules():  # the order of named_parameters(): the same random draws
            if isinstance(module, HeadSplitLinear):  # drawn as one interleaved matrix, as an nn.Linear would be
                module.copy_weight_(torch.empty_like(module.weight).normal_(mean=0.0, std=std))
                continue
            for param_name, param in module.named_parameters(prefix=module_name, recurse=False):
                if id(param) in seen or param.dim() < 2 or "posenc." in param_name:  # PE parameters keep
                    continue                                                           # the PE's own init
                seen.add(id(param))
                is_residual_out = param_name.endswith("attn.wo.weight") or param_name.endswith("mlp.w2.weight")
                nn.init.normal_(param, mean=0.0, std=residual_std if is_residual_out else std)
        with torch.no_grad():
            for block in self.layers:  # the PE may rescale the parts of q and k it gives a role to (TAPA)
                wq, wk = block.attn.wq.weight, block.attn.wk.weight
                block.attn.posenc.init_qk_(wq, wk)
                for projection, weight in ((block.attn.wq, wq), (block.attn.wk, wk)):
                    if isinstance(projection, HeadSplitLinear):
                        projection.copy_weight_(weight)

    def forward(self, tokens: Tensor, positions: Tensor | None = None, cache: Cache | None = None,
                document_ids: Tensor | None = None) -> Tensor:
        """Next-token logits, optionally continuing from a KV cache (:mod:`tapa_lab.model.cache`).

        Args:
            tokens: ``(B, L)`` token ids.
            positions: ``(L,)`` consecutive absolute positions of ``tokens`` (default ``past .. past + L - 1``, with
                ``past`` the number of tokens in ``cache``, 0 without one).
            cache: keys and values of the tokens before ``tokens`` (a :class:`~tapa_lab.model.cache.KVCache` or a
                ``transformers.DynamicCache``); this call appends those of ``tokens`` to it.
            document_ids: ``(B, Lk)`` document index of every key (the cached tokens, then ``tokens``): a token
                attends only to earlier tokens of its own document (``data.document_mask``); ``None``: to all.

        Returns:
            ``(B, L, vocab_size)`` logits.
        """
        length = tokens.shape[1]
        past = 0 if cache is None else cache.get_seq_length()
        if positions is None:
            positions = torch.arange(past, past + length, device=tokens.device)
        key_positions = positions if past == 0 else positions[0] + torch.arange(-past, length, device=tokens.device)
        x = self.posenc.embed(self.embed(tokens), positions)  # (B, L, d)
        for block in self.blocks:
            x = block(x, key_positions, cache, document_ids)
        return self.head(self.norm(x))

"""KVCache: the keys and values of the tokens already seen, for incremental decoding.

The cache holds the raw projections, *before* the positional encoding. Each decoding step appends the new tokens' k
and v, then calls ``posenc.attend(q_new, k_all, v_all, positions_all)`` with ``Lq < Lk`` (queries at the last ``Lq``
of the ``Lk`` key positions), which every PE and both kernels accept. So every PE is cache-correct without
PE-specific code: a PE that scores by content and distance (TAPA, ALiBi, NoPE) reads the cached keys as they are, and
one that transforms keys by position (RoPE and its scaled variants) re-rotates all cached keys at every step. That
re-rotation costs ``O(Lk D)`` per head and step, the same order as the attention itself (``O(Lk D)`` for one query).

The protocol is duck-typed to ``transformers``' ``Cache`` (``update`` and ``get_seq_length``), so the model takes
this cache in the lab and ``transformers.DynamicCache`` through the Hugging Face wrapper (:mod:`tapa_lab.hf`).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor


class Cache(Protocol):
    """What :class:`~tapa_lab.model.DecoderLM` needs from a cache (``transformers.DynamicCache`` satisfies it)."""

    def update(self, key: Tensor, value: Tensor, layer_idx: int) -> tuple[Tensor, Tensor]:
        """Append ``key``, ``value`` ``(B, Hkv, L, D)`` to layer ``layer_idx``; return all of its keys and values."""

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Number of tokens cached in layer ``layer_idx``."""


class KVCache:
    """Per-layer key and value tensors ``(B, Hkv, Lk, D)``, grown by concatenation along the length."""

    def __init__(self) -> None:
        self.keys: list[Tensor] = []
        self.values: list[Tensor] = []

    def update(self, key: Tensor, value: Tensor, layer_idx: int) -> tuple[Tensor, Tensor]:
        """Append one step's keys and values to a layer.

        Args:
            key: ``(B, Hkv, L, D)`` new keys before the PE.
            value: ``(B, Hkv, L, Dv)`` new values.
            layer_idx: the layer; layers are filled in order 0, 1, ... on the first step.

        Returns:
            ``(keys, values)`` of that layer, ``(B, Hkv, Lk, D)`` and ``(B, Hkv, Lk, Dv)``, the new ones last.
        """
        if layer_idx == len(self.keys):
            self.keys.append(key)
            self.values.append(value)
        elif layer_idx < len(self.keys):
            self.keys[layer_idx] = torch.cat([self.keys[layer_idx], key], dim=2)
            self.values[layer_idx] = torch.cat([self.values[layer_idx], value], dim=2)
        else:
            raise IndexError(f"KVCache.update: layer {layer_idx} before layer {len(self.keys)} was cached.")
        return self.keys[layer_idx], self.values[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Number of tokens cached in layer ``layer_idx`` (0 before the first step)."""
        return self.keys[layer_idx].shape[2] if layer_idx < len(self.keys) else 0

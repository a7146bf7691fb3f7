"""A q or k projection whose per-head rows are split into named parameters (TAPA's amplitude and phase parts).

The PE names the parts of each head's D dimensions it gives a role to (:meth:`PositionalEncoding.qk_parts
<tapa_lab.posenc.base.PositionalEncoding.qk_parts>`); the projection then holds one parameter per part, so an
optimizer group can give it its own learning rate (``model.optim.groups``, e.g. ``match: "*.wq.phase"``). The map is
the one an ``nn.Linear`` with the interleaved weight computes: for TAPA with Da = 2, Dp = 2 and two heads, rows
``[a0 a0 p0 p0 a1 a1 p1 p1]`` of ``weight`` are rows of ``amplitude`` (a) and ``phase`` (p), head by head.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class HeadSplitLinear(nn.Module):
    """Bias-free linear map ``d -> heads * D`` with each head's output dims split into named parameters.

    Args:
        in_features: d, the model width.
        heads: number of heads (H for q, Hkv for k).
        parts: ``((name, dims), ...)`` in the order the dims appear in a head; ``sum(dims) = D``.
    """

    def __init__(self, in_features: int, heads: int, parts: tuple[tuple[str, int], ...]) -> None:
        super().__init__()
        self.in_features, self.heads, self.parts = in_features, heads, parts
        self.head_dim = sum(dims for _, dims in parts)
        for name, dims in parts:
            self.register_parameter(name, nn.Parameter(torch.empty(heads * dims, in_features)))
        # nn.Linear's default init on the whole matrix: the same random stream as the unsplit projection
        self.copy_weight_(nn.init.kaiming_uniform_(torch.empty(heads * self.head_dim, in_features), a=math.sqrt(5)))

    @classmethod
    def from_linear(cls, linear: nn.Linear, heads: int, parts: tuple[tuple[str, int], ...]) -> HeadSplitLinear:
        """The split of a bias-free ``linear`` (its weight copied into the parts; no random draw)."""
        with torch.random.fork_rng(devices=[]):  # the init below is overwritten: leave the global stream alone
            split = cls(linear.in_features, heads, parts)
        split.copy_weight_(linear.weight.detach())
        return split

    @property
    def weight(self) -> Tensor:
        """The interleaved ``(heads * D, d)`` weight (a new tensor built from the parts; writes do not reach them:
        use :meth:`copy_weight_`)."""
        blocks = [getattr(self, name).view(self.heads, dims, self.in_features) for name, dims in self.parts]
        return torch.cat(blocks, dim=1).reshape(self.heads * self.head_dim, self.in_features)  # (heads * D, d)

    def forward(self, x: Tensor) -> Tensor:
        """``x (..., d)`` -> ``(..., heads * D)``."""
        return F.linear(x, self.weight)

    @torch.no_grad()
    def copy_weight_(self, weight: Tensor) -> None:
        """Set the parts from an interleaved ``(heads * D, d)`` weight."""
        for name, part in self._split(weight).items():
            getattr(self, name).copy_(part)

    def _split(self, weight: Tensor) -> dict[str, Tensor]:
        rows = weight.view(self.heads, self.head_dim, self.in_features)  # (heads, D, d)
        out, start = {}, 0
        for name, dims in self.parts:
            out[name] = rows[:, start:start + dims].reshape(self.heads * dims, self.in_features)
            start += dims
        return out

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # A checkpoint written before the split holds one `weight`: read it into the parts.
        if prefix + "weight" in state_dict and all(prefix + name not in state_dict for name, _ in self.parts):
            for name, part in self._split(state_dict.pop(prefix + "weight")).items():
                state_dict[prefix + name] = part
        super()._load_from_state_dict(state_dict, prefix, *args)

    def extra_repr(self) -> str:
        parts = ", ".join(f"{name}={dims}" for name, dims in self.parts)
        return f"in_features={self.in_features}, heads={self.heads}, {parts}"

"""RoPE: rotary position embedding (Su et al. 2021, "RoFormer", arXiv 2104.09864).

q and k are rotated pairwise by angles ``position * w_d``, ``w_d = base^(-2d/R)`` over the ``R`` rotary dimensions, so
q_m.k_n depends on m - n only. Pairs follow the GPT-NeoX/Llama layout: dimension ``d`` pairs with ``d + R/2``.
Context-extension variants (PI, NTK-aware, YaRN, Llama 3) live in ``rope_scaling.py`` and ``rope_llama3.py`` and
override :meth:`RoPE.inv_freq`.
The rotation itself is :func:`tapa_lab.kernels.rope_rotate`: a fused Triton kernel on the Triton backend, PyTorch
(:func:`tapa_lab.kernels.rope_torch.rotate`) otherwise.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tapa_lab.errors import require
from tapa_lab.kernels import Backend, rope_rotate
from tapa_lab.posenc.base import PositionalEncoding


class RoPE(PositionalEncoding):
    """Rotary position embedding.

    Args:
        base: the frequency base; w_d = base^(-2d/R). Llama 2 uses 1e4, Llama 3 5e5.
        rotary_fraction: fraction of each head's dimensions that rotate (partial rotary, as GPT-NeoX); in (0, 1].
        backend: rotation and attention implementation: ``auto`` (Triton on CUDA, PyTorch elsewhere), ``triton`` or
            ``torch``.
    """

    def __init__(self, base: float = 10000.0, rotary_fraction: float = 1.0, backend: Backend = "auto") -> None:
        super().__init__(backend)
        require(base > 1, "model.posenc.init_args.base", "> 1", base)
        require(0 < rotary_fraction <= 1, "model.posenc.init_args.rotary_fraction", "in (0, 1]", rotary_fraction)
        self.base = base
        self.rotary_fraction = rotary_fraction
        self.rotary_dim = 0

    def bind(self, n_heads: int, n_kv_heads: int, head_dim: int) -> None:
        super().bind(n_heads, n_kv_heads, head_dim)
        require(head_dim % 2 == 0, "head dim (model.architecture.d_model / n_heads)", "even for RoPE", head_dim)
        rotary_dim = int(round(self.rotary_fraction * head_dim)) // 2 * 2
        require(rotary_dim >= 2, "model.posenc.init_args.rotary_fraction",
                f">= 2/{head_dim} so that at least one pair rotates", self.rotary_fraction)
        self.rotary_dim = rotary_dim

    def base_inv_freq(self) -> Tensor:
        """Unscaled frequencies ``w_d = base^(-2d/R)``, ``(R/2,)`` float64."""
        d = torch.arange(0, self.rotary_dim, 2, dtype=torch.float64)
        return self.base ** (-d / self.rotary_dim)

    def inv_freq(self) -> Tensor:
        """Frequencies actually used, ``(R/2,)`` float64; context-extension variants override this."""
        return self.base_inv_freq()

    def attention_factor(self) -> float:
        """Factor applied to both q and k after rotation (YaRN's temperature); 1 for plain RoPE."""
        return 1.0

    def cos_sin(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """cos and sin of ``positions * w``, each ``(L, R/2)`` float64 (exact angles even at long positions)."""
        angles = positions.to(torch.float64)[:, None] * self.inv_freq().to(positions.device)[None, :]
        return angles.cos(), angles.sin()

    def transform_qk(self, q: Tensor, k: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        cos, sin = self.cos_sin(positions)  # (Lk, R/2) each; queries sit at the last Lq positions
        lq = q.shape[2]
        factor = self.attention_factor()
        q = rope_rotate(q, cos[-lq:], sin[-lq:], scale=factor, backend=self.backend)
        k = rope_rotate(k, cos, sin, scale=factor, backend=self.backend)
        return q, k

    def extra_repr(self) -> str:
        return f"base={self.base}, rotary_fraction={self.rotary_fraction}, {super().extra_repr()}"

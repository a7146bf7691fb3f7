"""xPos: RoPE with an exponential decay per frequency (Sun et al. 2022, "A Length-Extrapolatable Transformer",
arXiv 2212.10554, section 3.2).

Pair d of q at position n is rotated by n w_d and scaled by zeta_d^(n / scale_base); pair d of k at position m by
m w_d and zeta_d^(-m / scale_base), so the score of (n, m) is RoPE's times zeta_d^((n - m) / scale_base) per pair:

    zeta_d = (2d / R + gamma) / (1 + gamma),  gamma = 0.4,  d = 0 .. R/2 - 1

The scales are folded into RoPE's cos and sin tables, so xPos runs on RoPE's fused rotation. Only n - m matters, so
the exponents are centred on the middle key position c (q gets zeta^((n - c)/scale_base), k zeta^(-(m - c)/scale_base),
as rotary-embedding-torch) to keep them in range: float32 holds up to about 60K keys at scale_base 512.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tapa_lab.errors import require
from tapa_lab.kernels import Backend, rope_rotate
from tapa_lab.posenc.rope import RoPE

GAMMA = 0.4


class XPos(RoPE):
    """RoPE with xPos's exponential decay.

    Args:
        scale_base: the decay's length scale; > 0 (paper: 512).
        base: RoPE's frequency base.
        rotary_fraction: fraction of each head's dimensions that rotate (and decay); in (0, 1].
        backend: rotation and attention implementation: ``auto`` (Triton on CUDA, PyTorch elsewhere), ``triton`` or
            ``torch``.
    """

    def __init__(self, scale_base: float = 512.0, base: float = 10000.0, rotary_fraction: float = 1.0,
                 backend: Backend = "auto") -> None:
        super().__init__(base, rotary_fraction, backend)
        require(scale_base > 0, "model.posenc.init_args.scale_base", "> 0", scale_base)
        self.scale_base = scale_base

    def zeta(self) -> Tensor:
        """Per-pair decay bases zeta_d, ``(R/2,)`` float64."""
        d = torch.arange(0, self.rotary_dim, 2, dtype=torch.float64)
        return (d / self.rotary_dim + GAMMA) / (1 + GAMMA)

    def transform_qk(self, q: Tensor, k: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        cos, sin = self.cos_sin(positions)  # (Lk, R/2) each
        centre = positions[positions.shape[0] // 2]
        power = (positions - centre).to(torch.float64)[:, None] / self.scale_base  # (Lk, 1)
        decay = self.zeta().to(positions.device)[None, :] ** power  # (Lk, R/2)
        lq = q.shape[2]
        q = rope_rotate(q, cos[-lq:] * decay[-lq:], sin[-lq:] * decay[-lq:], backend=self.backend)
        k = rope_rotate(k, cos / decay, sin / decay, backend=self.backend)
        return q, k

    def extra_repr(self) -> str:
        return f"scale_base={self.scale_base}, {super().extra_repr()}"

"""TAPA: token-aware phase attention ("Positional Encoding via Token-Aware Phase Attention", arXiv 2509.12635).

Each head of q and k (dimension D) splits into an amplitude part (first Da = round(theta D) dims) and a phase part
(the remaining Dp = D - Da dims); the score replaces RoPE's rotation by a content-dependent phase (paper eq. 12):

    score(i, j) = (qA_i . kA_j / sqrt(Da)) * cos(2 pi |i - j|^alpha * phi(qP_i, kP_j))

followed by the causal mask, softmax and the full-width V. The phase variants override :meth:`TAPA.phase_vectors`,
which returns vectors whose (scaled) dot product is phi, so every variant runs on the same fused kernel:
quadratic (default) phi = qP.kP / sqrt(Dp); linear (paper eq. 16) phi = (sum qP + sum kP) / sqrt(Dp); static
phi = c_h, a learned scalar per head. Maths, gradients, numerics: ../../shared/design/TAPA.md.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tapa_lab.errors import require
from tapa_lab.kernels import Backend, tapa_attention
from tapa_lab.posenc.base import PositionalEncoding


class TAPA(PositionalEncoding):
    """Token-aware phase attention with the quadratic phase phi = qP . kP / sqrt(Dp).

    Args:
        alpha: distance exponent in |i - j|^alpha; > 0 (paper: 0.1). The initial value when ``learnable_alpha``.
        theta: fraction of each head's dimensions used for the amplitude, Da = round(theta D); in (0, 1) and such that
            1 <= Da <= D - 1 (paper: 0.5).
        two_pi: keep the paper's 2 pi factor in the phase (set false to compare with code that omits it).
        learnable_alpha: train one alpha per head (kept positive through a log parameterisation); not in the paper.
        chunk_size: on the PyTorch path, queries processed per block (memory O(chunk x L) per head instead of
            O(L^2)); ``null`` lets the kernel choose. Ignored by the Triton path, which is always blockwise.
        backend: attention implementation: ``auto`` (Triton on CUDA, PyTorch elsewhere), ``triton`` or ``torch``.
    """

    def __init__(self, alpha: float = 0.1, theta: float = 0.5, two_pi: bool = True, learnable_alpha: bool = False,
                 chunk_size: int | None = None, backend: Backend = "auto") -> None:
        super().__init__(backend)
        require(alpha > 0, "posenc.alpha", "> 0", alpha)
        require(0 < theta < 1, "posenc.theta", "in the open interval (0, 1)", theta)
        require(chunk_size is None or chunk_size >= 1, "posenc.chunk_size", "null or >= 1", chunk_size)
        self.alpha = alpha
        self.theta = theta
        self.two_pi = two_pi
        self.learnable_alpha = learnable_alpha
        self.chunk_size = chunk_size
        self.amp_dim = 0
        self.phase_dim = 0

    def bind(self, n_heads: int, n_kv_heads: int, head_dim: int) -> None:
        super().bind(n_heads, n_kv_heads, head_dim)
        amp_dim = round(self.theta * head_dim)
        require(1 <= amp_dim <= head_dim - 1, "posenc.theta",
                f"such that Da = round(theta * {head_dim}) is in [1, {head_dim - 1}] (got Da = {amp_dim})", self.theta)
        self.amp_dim, self.phase_dim = amp_dim, head_dim - amp_dim
        if self.learnable_alpha:
            self.log_alpha = nn.Parameter(torch.full((n_heads,), math.log(self.alpha)))

    def head_alpha(self) -> float | Tensor:
        """The distance exponent: the float ``alpha``, or the per-head ``(H,)`` tensor when learnable."""
        return self.log_alpha.exp() if self.learnable_alpha else self.alpha

    def phase_vectors(self, q_phase: Tensor, k_phase: Tensor) -> tuple[Tensor, Tensor, float]:
        """Vectors whose scaled dot product is the phase phi.

        Args:
            q_phase: ``(B, H, Lq, Dp)``; k_phase: ``(B, Hkv, Lk, Dp)``.

        Returns:
            ``(q', k', scale)`` with ``phi(i, j) = scale * q'_i . k'_j``.
        """
        return q_phase, k_phase, 1.0 / math.sqrt(self.phase_dim)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, positions: Tensor) -> Tensor:
        da = self.amp_dim
        q_phase, k_phase, phase_scale = self.phase_vectors(q[..., da:], k[..., da:])
        return tapa_attention(q[..., :da], k[..., :da], q_phase, k_phase, v, alpha=self.head_alpha(),
                              amp_scale=1.0 / math.sqrt(da), phase_scale=phase_scale, two_pi=self.two_pi,
                              backend=self.backend, chunk_size=self.chunk_size)

    def pair_scores(self, q: Tensor, k: Tensor, query: Tensor, key: Tensor) -> Tensor:
        da = self.amp_dim
        q_phase, k_phase, phase_scale = self.phase_vectors(q[None, :, :, da:], k[None, :, :, da:])
        amplitude = (q[:, query, :da].double() * k[:, key, :da].double()).sum(-1) / math.sqrt(da)  # (H, n)
        phase = phase_scale * (q_phase[0][:, query].double() * k_phase[0][:, key].double()).sum(-1)  # (H, n)
        alpha = self.head_alpha()
        alpha = alpha.detach().double()[:, None] if isinstance(alpha, Tensor) else alpha
        reach = (2 * math.pi if self.two_pi else 1.0) * (query - key).double()[None, :].pow(alpha)  # (H or 1, n)
        return amplitude * torch.cos(reach * phase)

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, theta={self.theta}, two_pi={self.two_pi}, "
                f"learnable_alpha={self.learnable_alpha}, {super().extra_repr()}")


class TAPALinearPhase(TAPA):
    """TAPA with the linear phase of the paper's ablation (eq. 16): phi = (sum(qP_i) + sum(kP_j)) / sqrt(Dp).

    Written as the dot product of [sum qP, 1] and [1, sum kP], so it runs on the same kernel.
    Arguments as :class:`TAPA`.
    """

    def phase_vectors(self, q_phase: Tensor, k_phase: Tensor) -> tuple[Tensor, Tensor, float]:
        q_sum = q_phase.sum(-1, keepdim=True)
        k_sum = k_phase.sum(-1, keepdim=True)
        q_vec = torch.cat([q_sum, torch.ones_like(q_sum)], dim=-1)  # (B, H, Lq, 2)
        k_vec = torch.cat([torch.ones_like(k_sum), k_sum], dim=-1)  # (B, Hkv, Lk, 2)
        return q_vec, k_vec, 1.0 / math.sqrt(self.phase_dim)


class TAPAStaticPhase(TAPA):
    """TAPA with a content-independent phase: phi = c_h, one learned scalar per head (not in the paper).

    Isolates the "token-aware" part of TAPA: the amplitude still uses the first Da dims; the phase dims are unused.

    Args:
        phase_init: initial value of every c_h; nonzero (at 0 the gradient of cos vanishes).
        alpha, theta, two_pi, learnable_alpha, chunk_size, backend: as :class:`TAPA`.
    """

    def __init__(self, phase_init: float = 0.1, alpha: float = 0.1, theta: float = 0.5, two_pi: bool = True,
                 learnable_alpha: bool = False, chunk_size: int | None = None, backend: Backend = "auto") -> None:
        super().__init__(alpha, theta, two_pi, learnable_alpha, chunk_size, backend)
        require(phase_init != 0, "posenc.phase_init", "nonzero", phase_init)
        self.phase_init = phase_init

    def bind(self, n_heads: int, n_kv_heads: int, head_dim: int) -> None:
        super().bind(n_heads, n_kv_heads, head_dim)
        self.static_phase = nn.Parameter(torch.full((n_heads,), float(self.phase_init)))

    def phase_vectors(self, q_phase: Tensor, k_phase: Tensor) -> tuple[Tensor, Tensor, float]:
        b, h, lq, _ = q_phase.shape
        q_vec = self.static_phase.to(q_phase.dtype).view(1, h, 1, 1).expand(b, h, lq, 1)  # (B, H, Lq, 1)
        k_vec = torch.ones_like(k_phase[..., :1])  # (B, Hkv, Lk, 1)
        return q_vec, k_vec, 1.0

"""TAPA's other phase functions (the same fused kernel, :class:`~tapa_lab.posenc.tapa.TAPA`'s options): the paper's
linear phase (its ablation, eq. 16) and a content-independent static phase (not in the paper).

Each overrides :meth:`TAPA.phase_vectors` with vectors whose scaled dot product is its phase phi.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tapa_lab.errors import require
from tapa_lab.kernels import Backend
from tapa_lab.posenc.phase_schedule import PhaseSchedule
from tapa_lab.posenc.tapa import TAPA, PhaseNorm


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
        phase_temperature, learnable_temperature, amp_init_scale, phase_init_scale, phase_norm, phase_offset,
            phase_schedule: as :class:`TAPA` (the phase rows and their normalisation are unused here).
    """

    def __init__(self, phase_init: float = 0.1, alpha: float = 0.1, theta: float = 0.5, two_pi: bool = True,
                 learnable_alpha: bool = False, chunk_size: int | None = None, backend: Backend = "auto",
                 phase_temperature: float = 1.0, learnable_temperature: bool = False, amp_init_scale: float = 1.0,
                 phase_init_scale: float = 1.0, phase_norm: PhaseNorm = "none",
                 phase_offset: float | None = None, phase_schedule: PhaseSchedule | None = None) -> None:
        super().__init__(alpha, theta, two_pi, learnable_alpha, chunk_size, backend, phase_temperature,
                         learnable_temperature, amp_init_scale, phase_init_scale, phase_norm, phase_offset,
                         phase_schedule)
        require(phase_init != 0, "model.posenc.init_args.phase_init", "nonzero", phase_init)
        self.phase_init = phase_init

    def bind(self, n_heads: int, n_kv_heads: int, head_dim: int) -> None:
        super().bind(n_heads, n_kv_heads, head_dim)
        self.static_phase = nn.Parameter(torch.full((n_heads,), float(self.phase_init)))

    def phase_vectors(self, q_phase: Tensor, k_phase: Tensor) -> tuple[Tensor, Tensor, float]:
        b, h, lq, _ = q_phase.shape
        q_vec = self.static_phase.to(q_phase.dtype).view(1, h, 1, 1).expand(b, h, lq, 1)  # (B, H, Lq, 1)
        k_vec = torch.ones_like(k_phase[..., :1])  # (B, Hkv, Lk, 1)
        return q_vec, k_vec, 1.0

"""TAPA: token-aware phase attention ("Positional Encoding via Token-Aware Phase Attention", arXiv 2509.12635).

Each head of q and k (dimension D) splits into an amplitude part (first Da = round(theta D) dims) and a phase part
(the remaining Dp = D - Da dims); the score replaces RoPE's rotation by a content-dependent phase (paper eq. 12):

    score(i, j) = (qA_i . kA_j / sqrt(Da)) * cos(2 pi |i - j|^alpha * phi(qP_i, kP_j))

followed by the causal mask, softmax and the full-width V. The phase variants override :meth:`TAPA.phase_vectors`,
which returns vectors whose (scaled) dot product is phi, so every variant runs on the same fused kernel:
quadratic (default) phi = qP.kP / sqrt(Dp); linear (paper eq. 16) phi = (sum qP + sum kP) / sqrt(Dp); static
phi = c_h, a learned scalar per head (those two: :mod:`tapa_lab.posenc.tapa_phases`). Maths, gradients, numerics:
../../shared/design/TAPA.md.

Options for diagnosing TAPA (not in the paper; every default reproduces the paper bit for bit):

- Phase temperature tau_h (``phase_temperature``, ``learnable_temperature``): the phase is divided by tau,

      score(i, j) = A_ij * cos(2 pi |i - j|^alpha * phi(qP_i, kP_j) / tau_h).

  Fixed: one tau for every head, folded into the kernel's phase scale. Learnable: one tau per head, trained through
  ``log tau`` (kept positive, no weight decay) and applied by multiplying the phase query vectors by ``1/tau_h``
  before the kernel (a per-token operation, so a KV cache sees the same scores).
- Initial scale of the amplitude and phase parts (``amp_init_scale`` s_A, ``phase_init_scale`` s_P): after the model's
  normal init (std sigma) the rows of W_q and W_k that make the amplitude part of each head are multiplied by s_A and
  those of the phase part by s_P (via :meth:`PositionalEncoding.init_qk_`), so qA, kA start with std s_A sigma |x| and
  qP, kP with s_P sigma |x|: the amplitude A starts s_A^2 times and the phase phi s_P^2 times their default size.
- Phase normalisation (``phase_norm``, qk-norm style: Henry et al. 2020, arXiv 2010.04245; Dehghani et al. 2023,
  arXiv 2302.05442): before the phase is formed, qP and kP are RMS-normalised over their Dp dims,

      qP <- g_q * qP / sqrt(mean(qP^2) + eps),   kP <- g_k * kP / sqrt(mean(kP^2) + eps),   eps = 1e-6,

  in fp32, so each has norm sqrt(Dp) (times the gains) and phi = qP . kP / sqrt(Dp) lies in [-sqrt(Dp), sqrt(Dp)].
  ``rms``: no gains (g = 1); ``rms_gain``: learnable gains g_q, g_k of shape (Dp,) per layer (shared by the heads),
  initialised at 1. It bounds the phase whatever the scale of W_q, W_k, separating "how fast the phase turns" from the
  growth of q and k. The linear phase sums the normalised vectors; the static phase ignores them.
- Phase offset (``phase_offset``): a learned constant c_h per head added to the content phase,

      score(i, j) = A_ij * cos(2 pi |i - j|^alpha * (phi(qP_i, kP_j) + c_h) / tau_h),

  so a head can have a coherent distance kernel (what the static phase learns quickly) and a content-dependent part.
  Run on the same kernel as one more phase dimension: [q', c_h / scale] . [k', 1] * scale = phi + c_h.
- Phase schedule (``phase_schedule``): tau annealed over training steps from ``start`` to ``end`` (cosine or linear;
  :mod:`tapa_lab.posenc.phase_schedule`), applied like the learnable temperature (q' times 1/tau(t), a buffer set at
  every step and kept in checkpoints) and logged as ``posenc/phase_temperature``.
- Parameter groups: the amplitude and phase rows of W_q and W_k are the parameters ``attn.wq.amplitude``,
  ``attn.wq.phase``, ``attn.wk.amplitude``, ``attn.wk.phase`` (:meth:`TAPA.qk_parts`), so ``model.optim.groups`` can
  give the phase its own learning rate (:mod:`tapa_lab.lit.param_groups`).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from tapa_lab.errors import require
from tapa_lab.kernels import Backend, tapa_attention
from tapa_lab.posenc.base import PositionalEncoding
from tapa_lab.posenc.phase_schedule import PhaseSchedule

PhaseNorm = Literal["none", "rms", "rms_gain"]
"""Normalisation of the phase vectors: none (the paper), RMS, or RMS with learnable gains."""
PHASE_NORMS = ("none", "rms", "rms_gain")
PHASE_NORM_EPS = 1e-6


class TAPA(PositionalEncoding):
    """Token-aware phase attention with the quadratic phase phi = qP . kP / sqrt(Dp).

    Args:
        alpha: distance exponent in |i - j|^alpha; > 0 (paper: 0.1). The initial value when ``learnable_alpha``.
        theta: fraction of each head's dimensions used for the amplitude, Da = round(theta D); in (0, 1) and such that
            1 <= Da <= D - 1 (paper: 0.5).
        two_pi: keep the paper's 2 pi factor in the phase (set false to compare with code that omits it).
        learnable_alpha: train one alpha per head (kept positive through a log parameterisation); not in the paper.
        chunk_size: on the PyTorch path, queries processed per block (memory O(chunk x L) per head instead of
            O(L^2)); ``null`` lets the kernel choose. Ignored by the Triton path and the fused CPU kernel (both
            always blockwise, with their own tiles).
        backend: attention implementation: ``auto`` (Triton on CUDA; on CPU the fused C++ kernel, or the blockwise
            PyTorch path with ``learnable_alpha`` or document masking), ``triton`` or ``torch`` (the blockwise path).
        phase_temperature: tau, the phase is divided by it; > 0 (paper: 1). The initial value when
            ``learnable_temperature``.
        learnable_temperature: train one tau per head (through log tau); not in the paper.
        amp_init_scale: factor on the initial weights of the amplitude rows of W_q and W_k; > 0 (paper: 1).
        phase_init_scale: factor on the initial weights of the phase rows of W_q and W_k; > 0 (paper: 1).
        phase_norm: ``none`` (paper), ``rms`` (RMS-normalise qP and kP before the phase) or ``rms_gain`` (the same
            with learnable per-dimension gains); see the module docstring.
        phase_offset: initial value of a learned per-head constant c_h added to the phase; nonzero (at 0 its
            gradient through the cosine vanishes with the content phase's); null: no offset (the paper).
        phase_schedule: anneal tau over training steps (``{start: 4, end: 1, steps: 1000, shape: cosine}``); null:
            a constant tau (the paper). Replaces ``phase_temperature`` (leave it at 1) and ``learnable_temperature``.
    """

    phase_inverse_temperature: Tensor
    """``()`` 1 / tau(step) of the phase schedule (a buffer, only with ``phase_schedule``)."""

    def __init__(self, alpha: float = 0.1, theta: float = 0.5, two_pi: bool = True, learnable_alpha: bool = False,
                 chunk_size: int | None = None, backend: Backend = "auto", phase_temperature: float = 1.0,
                 learnable_temperature: bool = False, amp_init_scale: float = 1.0, phase_init_scale: float = 1.0,
                 phase_norm: PhaseNorm = "none", phase_offset: float | None = None,
                 phase_schedule: PhaseSchedule | None = None) -> None:
        super().__init__(backend)
        require(alpha > 0, "model.posenc.init_args.alpha", "> 0", alpha)
        require(0 < theta < 1, "model.posenc.init_args.theta", "in the open interval (0, 1)", theta)
        require(chunk_size is None or chunk_size >= 1, "model.posenc.init_args.chunk_size", "null or >= 1", chunk_size)
        require(phase_temperature > 0, "model.posenc.init_args.phase_temperature", "> 0", phase_temperature)
        require(amp_init_scale > 0, "model.posenc.init_args.amp_init_scale", "> 0", amp_init_scale)
        require(phase_init_scale > 0, "model.posenc.init_args.phase_init_scale", "> 0", phase_init_scale)
        require(phase_norm in PHASE_NORMS, "model.posenc.init_args.phase_norm", "one of none, rms, rms_gain",
                phase_norm)
        require(phase_offset is None or (phase_offset != 0 and math.isfinite(phase_offset)),
                "model.posenc.init_args.phase_offset", "null or a finite nonzero number", phase_offset)
        self.alpha = alpha
        self.theta = theta
        self.two_pi = two_pi
        self.learnable_alpha = learnable_alpha
        self.chunk_size = chunk_size
        self.phase_temperature = phase_temperature
        self.learnable_temperature = learnable_temperature
        self.amp_init_scale = amp_init_scale
        self.phase_init_scale = phase_init_scale
        self.phase_norm = phase_norm
        require(phase_schedule is None or (phase_temperature == 1.0 and not learnable_temperature),
                "model.posenc.init_args.phase_schedule", "null when phase_temperature != 1 or learnable_temperature "
                "(the schedule sets tau)", phase_schedule)
        self.phase_offset = phase_offset
        self.phase_schedule = phase_schedule
        self.amp_dim = 0
        self.phase_dim = 0

    def bind(self, n_heads: int, n_kv_heads: int, head_dim: int) -> None:
        super().bind(n_heads, n_kv_heads, head_dim)
        amp_dim = round(self.theta * head_dim)
        require(1 <= amp_dim <= head_dim - 1, "model.posenc.init_args.theta",
                f"such that Da = round(theta * {head_dim}) is in [1, {head_dim - 1}] (got Da = {amp_dim})", self.theta)
        self.amp_dim, self.phase_dim = amp_dim, head_dim - amp_dim
        if self.learnable_alpha:
            self.log_alpha = nn.Parameter(torch.full((n_heads,), math.log(self.alpha)))
        if self.learnable_temperature:
            self.log_temperature = nn.Parameter(torch.full((n_heads,), math.log(self.phase_temperature)))
        if self.phase_norm == "rms_gain":
            self.q_phase_gain = nn.Parameter(torch.ones(self.phase_dim))
            self.k_phase_gain = nn.Parameter(torch.ones(self.phase_dim))
        if self.phase_offset is not None:
            self.phase_bias = nn.Parameter(torch.full((n_heads,), float(self.phase_offset)))
        if self.phase_schedule is not None:  # 1 / tau(step), set by on_train_step; saved with the weights
            self.register_buffer("phase_inverse_temperature", torch.tensor(1.0 / self.phase_schedule.start))

    def on_train_step(self, step: int) -> dict[str, float]:
        """Set tau to the schedule's value at ``step`` (no schedule, or the model-level copy that is never bound:
        nothing); returns ``{"phase_temperature": tau}``."""
        if self.phase_schedule is None or self.phase_dim == 0:
            return {}
        temperature = self.phase_schedule.temperature(step)
        self.phase_inverse_temperature.fill_(1.0 / temperature)
        return {"phase_temperature": temperature}

    def qk_parts(self) -> tuple[tuple[str, int], ...]:
        """``amplitude`` (the first Da dims of each head) and ``phase`` (the other Dp): the parameters
        ``attn.wq.amplitude``, ``attn.wq.phase``, ``attn.wk.amplitude``, ``attn.wk.phase`` of every layer."""
        return (("amplitude", self.amp_dim), ("phase", self.phase_dim))

    def init_qk_(self, wq: Tensor, wk: Tensor) -> None:
        """Scale the amplitude rows of each head of W_q, W_k by ``amp_init_scale`` and the phase rows by
        ``phase_init_scale`` (no-op at the defaults)."""
        for weight, heads in ((wq, self.n_heads), (wk, self.n_kv_heads)):
            rows = weight.view(heads, self.head_dim, -1)  # (heads, D, d_model)
            if self.amp_init_scale != 1.0:
                rows[:, :self.amp_dim].mul_(self.amp_init_scale)
            if self.phase_init_scale != 1.0:
                rows[:, self.amp_dim:].mul_(self.phase_init_scale)

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

    def normalise_phase(self, x: Tensor, gain: Tensor | None) -> Tensor:
        """RMS normalisation of phase vectors ``(..., Dp)`` over the last dim, in fp32, times ``gain`` ``(Dp,)``."""
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + PHASE_NORM_EPS)
        return (normed if gain is None else normed * gain.float()).to(x.dtype)

    def phase_operands(self, q_phase: Tensor, k_phase: Tensor) -> tuple[Tensor, Tensor, float]:
        """The kernel's phase operands: :meth:`phase_vectors` of the (optionally normalised) phase parts, with the
        optional offset as one more dimension and the temperature applied.

        Args:
            q_phase: ``(B, H, Lq, Dp)``; k_phase: ``(B, Hkv, Lk, Dp)``.

        Returns:
            ``(q', k', scale)`` with ``(phi(i, j) + c_h) / tau_h = scale * q'_i . k'_j``.
        """
        if self.phase_norm != "none":
            gains = (self.q_phase_gain, self.k_phase_gain) if self.phase_norm == "rms_gain" else (None, None)
            q_phase, k_phase = self.normalise_phase(q_phase, gains[0]), self.normalise_phase(k_phase, gains[1])
        q_vec, k_vec, scale = self.phase_vectors(q_phase, k_phase)
        if self.phase_offset is not None:
            b, h, lq, _ = q_vec.shape
            offset = (self.phase_bias / scale).to(q_vec.dtype).view(1, h, 1, 1).expand(b, h, lq, 1)  # (B, H, Lq, 1)
            q_vec = torch.cat([q_vec, offset], dim=-1)
            k_vec = torch.cat([k_vec, torch.ones_like(k_vec[..., :1])], dim=-1)
        if self.learnable_temperature:
            inverse = self.log_temperature.neg().exp().to(q_vec.dtype).view(1, -1, 1, 1)  # (1, H, 1, 1)
            q_vec = q_vec * inverse
        elif self.phase_schedule is not None:
            q_vec = q_vec * self.phase_inverse_temperature.to(q_vec.dtype)
        elif self.phase_temperature != 1.0:
            scale = scale / self.phase_temperature
        return q_vec, k_vec, scale

    def attend(self, q: Tensor, k: Tensor, v: Tensor, positions: Tensor, document_ids: Tensor | None = None) -> Tensor:
        da = self.amp_dim
        q_phase, k_phase, phase_scale = self.phase_operands(q[..., da:], k[..., da:])
        return tapa_attention(q[..., :da], k[..., :da], q_phase, k_phase, v, alpha=self.head_alpha(),
                              amp_scale=1.0 / math.sqrt(da), phase_scale=phase_scale, two_pi=self.two_pi,
                              backend=self.backend, chunk_size=self.chunk_size, document_ids=document_ids)

    def pair_components(self, q: Tensor, k: Tensor, query: Tensor, key: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The three factors of the score of chosen (query, key) pairs, per head, in float64:
        ``score = amplitude * cos(reach * phase)``.

        Args:
            q: ``(H, L, D)`` queries before the PE; k: ``(H, L, D)`` keys before the PE (already one per query head).
            query, key: ``(n,)`` positions, ``key <= query``.

        Returns:
            ``(amplitude, phase, reach)``: ``(H, n)`` qA.kA / sqrt(Da); ``(H, n)`` phi / tau (the phase after the
            optional normalisation and temperature); ``(H or 1, n)`` 2 pi |i - j|^alpha (without 2 pi when
            ``two_pi`` is false).
        """
        da = self.amp_dim
        q_phase, k_phase, phase_scale = self.phase_operands(q[None, :, :, da:], k[None, :, :, da:])
        amplitude = (q[:, query, :da].double() * k[:, key, :da].double()).sum(-1) / math.sqrt(da)  # (H, n)
        phase = phase_scale * (q_phase[0][:, query].double() * k_phase[0][:, key].double()).sum(-1)  # (H, n)
        return amplitude, phase, self.reach(query - key)

    def reach(self, distance: Tensor) -> Tensor:
        """``2 pi |d|^alpha`` (or ``|d|^alpha`` without ``two_pi``) for distances ``(n,)``: ``(H or 1, n)`` float64."""
        alpha = self.head_alpha()
        alpha = alpha.detach().double()[:, None] if isinstance(alpha, Tensor) else alpha
        return (2 * math.pi if self.two_pi else 1.0) * distance.double().abs()[None, :].pow(alpha)

    def pair_scores(self, q: Tensor, k: Tensor, query: Tensor, key: Tensor) -> Tensor:
        amplitude, phase, reach = self.pair_components(q, k, query, key)
        return amplitude * torch.cos(reach * phase)

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, theta={self.theta}, two_pi={self.two_pi}, "
                f"learnable_alpha={self.learnable_alpha}, phase_temperature={self.phase_temperature}, "
                f"learnable_temperature={self.learnable_temperature}, amp_init_scale={self.amp_init_scale}, "
                f"phase_init_scale={self.phase_init_scale}, phase_norm={self.phase_norm}, "
                f"phase_offset={self.phase_offset}, phase_schedule={self.phase_schedule}, {super().extra_repr()}")

"""A schedule for TAPA's phase temperature: tau annealed from ``start`` to ``end`` over ``steps`` training steps.

With tau(t) the phase is divided by tau(t) (:class:`~tapa_lab.posenc.tapa.TAPA`'s ``phase_temperature``), so a large
``start`` keeps the cosine near 1 (TAPA close to NoPE, where it trains stably) while the model learns, and the phase
takes its full size as tau reaches ``end``:

    tau(t) = end + (start - end) * s(min(1, t / steps)),   s(p) = (1 + cos(pi p)) / 2  (cosine)  or  1 - p  (linear)

After ``steps`` tau stays at ``end``. Not in the paper (whose TAPA is tau = 1 throughout: no schedule, the default).
The current 1/tau is a buffer of the PE, set at every training step and saved in checkpoints, so evaluating,
exporting or decoding from a checkpoint uses the value it was trained with (``end`` once the schedule is over), the
same for every token of a KV cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from tapa_lab.errors import require

FIELD = "model.posenc.init_args.phase_schedule"


@dataclass
class PhaseSchedule:
    """Phase temperature annealed over training steps."""

    start: float = 4.0
    """tau at step 0; > 0."""
    end: float = 1.0
    """tau from ``steps`` on; > 0 (1: the paper's phase)."""
    steps: int = 1000
    """Training steps from ``start`` to ``end``; >= 1."""
    shape: Literal["cosine", "linear"] = "cosine"
    """``cosine`` (slow at both ends) or ``linear``."""

    def __post_init__(self) -> None:
        require(self.start > 0 and math.isfinite(self.start), f"{FIELD}.start", "a finite number > 0", self.start)
        require(self.end > 0 and math.isfinite(self.end), f"{FIELD}.end", "a finite number > 0", self.end)
        require(self.steps >= 1, f"{FIELD}.steps", ">= 1", self.steps)
        require(self.shape in ("cosine", "linear"), f"{FIELD}.shape", "cosine or linear", self.shape)

    def temperature(self, step: int) -> float:
        """tau at training step ``step`` (>= 0)."""
        progress = min(1.0, max(0, step) / self.steps)
        weight = 0.5 * (1 + math.cos(math.pi * progress)) if self.shape == "cosine" else 1 - progress
        return self.end + (self.start - self.end) * weight

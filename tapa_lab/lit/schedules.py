"""Learning-rate schedules stepped once per optimizer step, and the bridge from LightningCLI's ``--lr_scheduler``.

The lab's default is linear warm-up then cosine (``model.optim``, :func:`tapa_lab.lit.module.warmup_cosine`).
:class:`WarmupStableDecay` is warm-up, a constant plateau, then a short decay at the end (WSD: Hu et al. 2024,
MiniCPM; Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations"). As a YAML
fragment (experiments/optim/wsd.yaml)::

    lr_scheduler:
      class_path: tapa_lab.lit.schedules.WarmupStableDecay
      init_args: {decay_fraction: 0.2, decay: 1-sqrt}
"""

from __future__ import annotations

import importlib
import inspect
import math
from typing import Any, Literal

import torch
from lightning.pytorch.cli import instantiate_class
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau

from tapa_lab.errors import ConfigError, require

Decay = Literal["linear", "cosine", "1-sqrt"]


class WarmupStableDecay(LambdaLR):
    """Warm-up-stable-decay: linear warm-up to the peak, the peak until the last ``decay_fraction`` of training, then
    a decay to ``min_lr_ratio * lr``.

    Args:
        optimizer: the optimizer (given by the lab; not a YAML field).
        total_steps: optimizer steps of the whole run; null: the run's (``trainer.estimated_stepping_batches``).
        warmup_steps: linear warm-up steps from 0 to the peak; null: ``model.optim.warmup_steps``.
        decay_fraction: fraction of ``total_steps`` spent in the final decay, in (0, 1].
        min_lr_ratio: the learning rate at the end, as a fraction of the peak.
        decay: shape of the decay: ``linear``, ``cosine`` or ``1-sqrt`` (1 - sqrt(progress)).
        last_epoch: the index of the last step (-1: a new schedule); Lightning restores it on resume.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int | None = None,
                 warmup_steps: int | None = None, decay_fraction: float = 0.2, min_lr_ratio: float = 0.0,
                 decay: Decay = "linear", last_epoch: int = -1) -> None:
        require(total_steps is not None and total_steps > 0, "lr_scheduler.init_args.total_steps", "> 0",
                total_steps)
        require(warmup_steps is not None and warmup_steps >= 0, "lr_scheduler.init_args.warmup_steps", ">= 0",
                warmup_steps)
        require(0 < decay_fraction <= 1, "lr_scheduler.init_args.decay_fraction", "in (0, 1]", decay_fraction)
        require(0 <= min_lr_ratio <= 1, "lr_scheduler.init_args.min_lr_ratio", "in [0, 1]", min_lr_ratio)
        require(decay in ("linear", "cosine", "1-sqrt"), "lr_scheduler.init_args.decay", "linear, cosine or 1-sqrt",
                decay)
        assert total_steps is not None and warmup_steps is not None  # checked by require above
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.decay_steps = max(1, round(decay_fraction * total_steps))
        self.min_lr_ratio = min_lr_ratio
        self.decay = decay
        super().__init__(optimizer, self.multiplier, last_epoch)

    def multiplier(self, step: int) -> float:
        """Learning rate at ``step`` as a fraction of the peak."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        decay_start = self.total_steps - self.decay_steps
        if step < decay_start:
            return 1.0
        progress = min(1.0, (step - decay_start) / self.decay_steps)
        remaining = {"linear": 1 - progress, "cosine": 0.5 * (1 + math.cos(math.pi * progress)),
                     "1-sqrt": 1 - math.sqrt(progress)}[self.decay]
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * remaining


def instantiate_scheduler(optimizer: torch.optim.Optimizer, spec: dict[str, Any], total_steps: int,
                          warmup_steps: int) -> LRScheduler:
    """Build a ``--lr_scheduler`` (``{"class_path": ..., "init_args": {...}}``) for ``optimizer``.

    A scheduler whose ``total_steps`` or ``warmup_steps`` argument is left null (or unset) gets the run's: the
    optimizer steps of the whole run (``OneCycleLR`` and :class:`WarmupStableDecay` need them) and
    ``model.optim.warmup_steps``.

    Raises:
        ConfigError: naming ``lr_scheduler`` for ``ReduceLROnPlateau``: the lab steps schedulers every optimizer step,
            and a plateau scheduler needs a validation metric at each of them.
    """
    module, _, name = spec["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    if issubclass(cls, ReduceLROnPlateau):
        raise ConfigError(f"lr_scheduler = {spec['class_path']} is not allowed: the lab steps the schedule every "
                          "optimizer step, and ReduceLROnPlateau needs a validation metric at each one; use a "
                          "step-based schedule (e.g. tapa_lab.lit.schedules.WarmupStableDecay).")
    init_args = dict(spec.get("init_args") or {})
    parameters = inspect.signature(cls).parameters
    for key, value in (("total_steps", total_steps), ("warmup_steps", warmup_steps)):
        if key in parameters and init_args.get(key) is None:
            init_args[key] = value
    return instantiate_class(optimizer, {"class_path": spec["class_path"], "init_args": init_args})

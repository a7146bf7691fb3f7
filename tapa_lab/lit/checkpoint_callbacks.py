"""Checkpoint callbacks: ``last.ckpt`` on a time or step interval, and the model identity stored in each checkpoint.

The CLI's ``checkpoint`` callback writes ``best-<step>.ckpt`` and ``last.ckpt`` at each validation;
:class:`IntervalCheckpoint` (``interval_checkpoint`` in the CLI) also refreshes ``last.ckpt`` every ``minutes`` of
training (10 by default) or every ``every_n_train_steps`` steps, and at the end of training, so a killed run resumed
with ``--ckpt_path last`` loses at most that interval. :class:`RunIdentity` stores the PE and the architecture in
each checkpoint, so ``fit --ckpt_path`` can refuse a checkpoint of another model before touching the run folder.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from tapa_lab.errors import require


class IntervalCheckpoint(ModelCheckpoint):
    """Saves last.ckpt on a time or step interval and when training ends, so a killed run loses little.

    Only ``last.ckpt`` is written: every ``minutes`` of training, or every ``every_n_train_steps`` steps.

    Args:
        minutes: wall-clock minutes between saves (> 0); ``null`` with ``every_n_train_steps`` null saves at the end
            of training only.
        every_n_train_steps: save every this many optimizer steps instead (>= 1); overrides ``minutes``.
        dirpath: the checkpoint folder; ``null`` is the run folder's ``checkpoints/`` (as the ``checkpoint``
            callback's).
    """

    def __init__(self, minutes: float | None = 10.0, every_n_train_steps: int | None = None,
                 dirpath: str | None = None) -> None:
        require(minutes is None or minutes > 0, "interval_checkpoint.minutes", "> 0 or null", minutes)
        require(every_n_train_steps is None or every_n_train_steps >= 1, "interval_checkpoint.every_n_train_steps",
                ">= 1 or null", every_n_train_steps)
        interval = timedelta(minutes=minutes) if minutes is not None and every_n_train_steps is None else None
        super().__init__(dirpath=dirpath, save_last=True, save_top_k=0, every_n_train_steps=every_n_train_steps,
                         train_time_interval=interval, every_n_epochs=0, save_on_train_epoch_end=True,
                         enable_version_counter=False)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class RunIdentity(L.Callback):
    """Stores ``identity`` (the PE class and arguments and the architecture; see
    :func:`tapa_lab.lit.resume.run_identity`) in every checkpoint, under ``callbacks["RunIdentity"]``.

    Args:
        identity: plain JSON describing the model.
    """

    def __init__(self, identity: dict[str, Any]) -> None:
        self.identity = identity

    def state_dict(self) -> dict[str, Any]:
        return dict(self.identity)

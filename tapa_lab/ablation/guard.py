"""NonFiniteLossGuard: stop a run whose training loss is NaN or infinite, and say so in a file the runner reads."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightning as L

from tapa_lab.ablation.layout import DIVERGED_FILE


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


class NonFiniteLossGuard(L.Callback):
    """Check the training loss after every step (cheap, unlike ``trainer.detect_anomaly``).

    On a NaN or infinite loss it writes ``diverged.json`` (step and loss) into the run folder and raises
    :class:`DivergedError`, so the process exits with an error and the ablation runner records the cell as diverged.
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        value = float(loss.detach()) if loss is not None else float("nan")
        if math.isfinite(value):
            return
        if trainer.is_global_zero and trainer.log_dir is not None:
            path = Path(trainer.log_dir) / DIVERGED_FILE
            path.write_text(json.dumps({"step": trainer.global_step, "loss": str(value)}))
        raise DivergedError(f"training loss is {value} at step {trainer.global_step}")

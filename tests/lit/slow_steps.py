"""A callback that slows training down, so a test can kill a ``fit`` subprocess mid-run (imported by class path)."""

from __future__ import annotations

import time

import lightning as L


class SlowSteps(L.Callback):
    """Sleeps ``seconds`` after every training batch.

    Args:
        seconds: the pause per step.
    """

    def __init__(self, seconds: float = 0.1) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, *args) -> None:
        time.sleep(self.seconds)

"""``metrics.jsonl``: every metric a run logs, written by the lab into its run folder whatever Lightning logger it uses.

One line per logging call, exactly what the run's logger receives (same step, same values)::

    {"step": 9, "epoch": 0, "train/loss": 4.83, "train/perplexity": 125.2}
    {"step": 9, "epoch": 0, "val/loss": 4.71, "val/perplexity": 111.0}

``step`` is Lightning's logging step (the optimizer step the metric belongs to, counted from 0, as in TensorBoard);
``epoch`` is the epoch it was logged in. A run resumed from a checkpoint at global step ``G`` first drops the lines
with ``step >= G`` (logged after that checkpoint was written), so the file always matches the checkpoint it continues.
The grid runner and the report read it with :func:`read_metrics`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import lightning as L
from lightning.pytorch.loggers import Logger

METRICS_FILE = "metrics.jsonl"


class _JsonLinesLogger(Logger):
    """The Lightning logger behind :class:`MetricsFile`: appends one JSON line per ``log_metrics`` call.

    Args:
        path: the ``metrics.jsonl`` file.
        trainer: the trainer (for the epoch of metrics logged with an explicit step).
        writes: false on every rank but global rank 0 (they receive the same metrics and write nothing).
    """

    def __init__(self, path: Path, trainer: L.Trainer, writes: bool) -> None:
        super().__init__()
        self.path = path
        self.trainer = trainer
        self.writes = writes
        self._stream: IO[str] | None = None

    @property
    def name(self) -> str:
        return "metrics_file"

    @property
    def version(self) -> int:
        return 0

    @property
    def save_dir(self) -> str:
        return str(self.path.parent)

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Hyperparameters are in the run's ``config.yaml``; nothing to write."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if not self.writes:
            return
        if self._stream is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._stream = self.path.open("a", buffering=1)  # line-buffered: a killed run keeps every whole line
        epoch = metrics.get("epoch", self.trainer.current_epoch)
        record = {"step": int(step if step is not None else self.trainer.global_step), "epoch": int(epoch),
                  **{tag: value for tag, value in metrics.items() if tag != "epoch"}}
        self._stream.write(json.dumps(record) + "\n")
        self._stream.flush()

    def truncate(self, step: int) -> None:
        """Drop the lines with ``step >= step`` (rewritten atomically)."""
        self.close()
        if not self.writes or not self.path.is_file():
            return
        lines = self.path.read_text().splitlines(keepends=True)
        kept = [line for line, record in zip(lines, map(_parse, lines), strict=True)
                if record is not None and record["step"] < step]
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text("".join(kept))
        os.replace(partial, self.path)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


class MetricsFile(L.Callback):
    """Writes every logged metric (train, validation, test; with step and epoch) to ``<run dir>/metrics.jsonl``.

    It adds a small logger next to the run's own (TensorBoard, CSV, MLflow, W&B or none), so the file holds exactly
    what that logger receives. Only global rank 0 writes. At the start of training the lines with a step at or after
    the resumed global step are dropped (all of them for a run started from scratch).

    Attributes:
        run_dir: the run folder; ``None``: ``trainer.log_dir`` (the CLI sets it to the lab's run folder).
    """

    def __init__(self, run_dir: str | Path | None = None) -> None:
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._logger: _JsonLinesLogger | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        folder = self.run_dir if self.run_dir is not None else trainer.log_dir  # log_dir is collective: all ranks
        if self._logger is None and folder is not None:
            self._logger = _JsonLinesLogger(Path(folder) / METRICS_FILE, trainer, trainer.is_global_zero)
            trainer.loggers = [*trainer.loggers, self._logger]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._logger is not None:
            self._logger.truncate(trainer.global_step)  # global_step is the restored one here

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._logger is not None:
            self._logger.close()
            trainer.loggers = [logger for logger in trainer.loggers if logger is not self._logger]
            self._logger = None


def _parse(line: str) -> dict[str, Any] | None:
    """One line of the file, or ``None`` for a blank or cut-off line (a run killed while writing)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and "step" in record else None


def read_metrics(run_dir: str | Path, tags: Iterable[str] | None = None) -> dict[str, dict[int, float]]:
    """Read a run folder's ``metrics.jsonl`` as ``{tag: {step: value}}``.

    Args:
        run_dir: the run folder (``checkpoints/<name>/version_<n>``, or a grid cell's ``run`` folder).
        tags: the tags to read (e.g. ``["train/loss", "val/loss"]``); every one is a key of the result, with an
            empty dict if it was never logged. ``None``: every tag in the file, ``epoch`` included.

    Returns:
        ``{tag: {step: value}}``, steps as logged (0-based optimizer steps). A step logged twice keeps the later value.
        Non-finite values come back as ``nan``/``inf`` floats. An empty dict per tag (or ``{}`` with ``tags=None``)
        when the file does not exist yet.
    """
    wanted = None if tags is None else list(tags)
    series: dict[str, dict[int, float]] = {tag: {} for tag in wanted or []}
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return series
    with path.open() as stream:
        for line in stream:
            record = _parse(line)
            if record is None:
                continue
            step = int(record.pop("step"))
            for tag, value in record.items():
                if (wanted is None or tag in series) and isinstance(value, int | float):
                    series.setdefault(tag, {})[step] = float(value)
    return series


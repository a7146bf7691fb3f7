"""Lab callbacks: token throughput and the reproducibility record of each run."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar, ThroughputMonitor
from torch import Tensor

from tapa_lab.data.atomic import write_text_atomic
from tapa_lab.data.document_ids import split_batch


def _batch_size(batch: Tensor | tuple[Tensor, Tensor]) -> int:
    return split_batch(batch)[0].shape[0]


def _batch_tokens(batch: Tensor | tuple[Tensor, Tensor]) -> int:
    tokens = split_batch(batch)[0]
    return tokens.shape[0] * (tokens.shape[1] - 1)


class TokenThroughputMonitor(ThroughputMonitor):
    """Lightning's ThroughputMonitor for token batches ``(B, L + 1)``: logs samples/s and tokens/s (``items_per_sec``).

    Args:
        window_size: number of batches the rates are averaged over.
    """

    def __init__(self, window_size: int = 20) -> None:
        super().__init__(batch_size_fn=_batch_size, length_fn=_batch_tokens, window_size=window_size)


class StepProgressBar(RichProgressBar):
    """Lightning's rich progress bar, labelled by optimizer step when ``trainer.max_steps`` ends training.

    Runs bounded by steps have no last epoch (Lightning's label would read ``Epoch 0/-2``); this bar reads
    ``Epoch 0 · step 120/200`` instead.
    """

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        if trainer.max_steps is None or trainer.max_steps < 0:
            return super()._get_train_description(current_epoch)
        description = f"Epoch {current_epoch} · step {trainer.global_step}/{trainer.max_steps}"
        return f"{description:{len(self.validation_description)}}"

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.train_progress_bar_id is not None and self.progress is not None:
            self.progress.update(self.train_progress_bar_id,
                                 description=self._get_train_description(trainer.current_epoch))
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


def git_state(root: Path) -> dict[str, Any]:
    """The commit and dirty flag of the git checkout at ``root`` (``None`` values outside a checkout)."""

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def package_versions() -> dict[str, str | None]:
    """Versions of the packages a result depends on."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("tapa-lab", "torch", "lightning", "triton", "jsonargparse", "datasets", "torchmetrics"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


class RunRecord(L.Callback):
    """Writes ``run_record_<stage>.json`` (e.g. ``run_record_fit.json``) into the run folder when a stage starts.

    This is PROTOCOLS.md's reproducibility record.

    The record holds the seed, git commit and dirty flag, package versions, device, the data provenance (corpus
    manifest hash, tokenizer, split sizes) and the parameter count. A later run of the stage in the same folder (a
    resume) keeps the file's first record and appends its own to the list under ``resumes``.

    Attributes:
        run_dir: the run folder; ``None``: ``trainer.log_dir`` (the CLI sets it to the lab's run folder, which is not
            the log_dir of an MLflow or W&B logger).
    """

    def __init__(self, run_dir: str | Path | None = None) -> None:
        self.run_dir = run_dir

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # trainer.log_dir is a collective call (it broadcasts): every rank must make it
        log_dir = self.run_dir if self.run_dir is not None else trainer.log_dir
        if not trainer.is_global_zero or log_dir is None:
            return
        device = trainer.strategy.root_device
        datamodule = getattr(trainer, "datamodule", None)  # attached by Lightning, not declared on Trainer
        record = {
            "stage": stage,
            "seed": _current_seed(),
            "git": git_state(Path(__file__).resolve().parent),
            "versions": package_versions(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "accelerator": device.type,
            "world_size": trainer.world_size,
            "precision": str(trainer.precision),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "parameters": sum(p.numel() for p in pl_module.parameters()),
            "data": datamodule.provenance() if datamodule is not None else None,
        }
        describe = getattr(pl_module, "describe_param_groups", None)
        if stage == "fit" and callable(describe):
            record["param_groups"] = describe()
        stage = getattr(stage, "value", stage)
        path = Path(log_dir) / f"run_record_{stage}.json"
        resumed = stage != "fit" or any((path.parent / "checkpoints").glob("*.ckpt"))  # else a fresh start
        if path.is_file() and resumed:  # keep the first record
            first = json.loads(path.read_text())
            first.setdefault("resumes", []).append(record)
            record = first
        write_text_atomic(path, json.dumps(record, indent=2, default=str))


def _current_seed() -> int | None:
    """The seed ``seed_everything`` set in this process, if any."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None else None

"""One phase of one grid cell in a child ``tapa-lab`` process: train it (or resume it from ``last.ckpt``) or
evaluate it, holding the cell's lock; the outcome is written to its folder
(:class:`~tapa_lab.ablation.results.CellResult`).

What a local worker (:class:`tapa_lab.ablation.runner.LocalLauncher`) and a cluster task
(:mod:`tapa_lab.ablation.cluster`) both run; the order of cells is the runner's.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Literal

from tapa_lab.ablation.curves import VAL_AT_LENGTH
from tapa_lab.ablation.expand import Cell
from tapa_lab.ablation.layout import (
    CONFIG_FILE,
    DIVERGED_FILE,
    EVALUATED_MARKER,
    LOG_FILE,
    TRAINED_MARKER,
    cell_dir,
    last_checkpoint,
    run_dir,
    write_atomic,
)
from tapa_lab.ablation.process import CellBusy, CellLock, lab_process, own_cell
from tapa_lab.ablation.results import CellResult, eval_metrics, read_eval, read_result
from tapa_lab.lit.metrics_file import read_metrics

TRAINING_SCALARS = ("train/loss", "val/loss", "val/perplexity")

Phase = Literal["train", "eval"]


def run_phase(phase: Phase, cell: Cell, out_dir: Path, threads: int, results: dict[str, CellResult],
              fit_args: tuple[str, ...] = ()) -> CellResult:
    """One phase of one cell in a child of this process: what a local worker and a cluster task both run.

    The parent cell's result (training) or the cell's own (evaluation) comes from ``results``, else its folder.
    """
    if phase == "train":
        parent = None
        if cell.init_from is not None:
            parent = (results.get(cell.init_from) or read_result(out_dir, cell.init_from)
                      or CellResult(cell.init_from, "pending", "not run yet"))
        return train_cell(cell, out_dir, threads, parent, fit_args)
    trained = results.get(cell.cell_id) or read_result(out_dir, cell.cell_id)
    assert trained is not None, f"cell {cell.cell_id} is evaluated only once trained (_to_evaluate)"
    return evaluate_cell(cell, out_dir, threads, trained)


def train_cell(cell: Cell, out_dir: Path, threads: int, parent: CellResult | None,
               fit_args: tuple[str, ...] = ()) -> CellResult:
    """Train one cell (or resume it from ``last.ckpt``) unless it has trained already; a failure is recorded.

    ``fit_args`` are appended to ``tapa-lab fit --config <cell>/config.yaml`` (a cluster task's environment plugin).
    The cell's lock is held throughout; a cell whose lock another process holds is reported ``skipped`` (and its
    files are left alone).
    """
    try:
        with own_cell(cell_dir(out_dir, cell.cell_id)) as lock:
            return _train_owned(cell, out_dir, threads, parent, lock, fit_args)
    except CellBusy as busy:
        return CellResult(cell.cell_id, "skipped", str(busy))


def _train_owned(cell: Cell, out_dir: Path, threads: int, parent: CellResult | None, lock: CellLock,
                 fit_args: tuple[str, ...]) -> CellResult:
    folder = cell_dir(out_dir, cell.cell_id)
    previous = read_result(out_dir, cell.cell_id)
    if previous is not None and previous.status in ("finished", "diverged"):
        return previous
    run = run_dir(out_dir, cell.cell_id)
    checkpoint = last_checkpoint(out_dir, cell.cell_id)
    if (folder / TRAINED_MARKER).is_file():  # trained, but its evaluation failed: train no further
        wall = previous.wall_s if previous else {}
        return CellResult(cell.cell_id, "finished", None, training_metrics(run), wall).write(folder)
    if parent is not None and parent.status != "finished":
        return CellResult(cell.cell_id, "skipped", f"its parent cell {parent.cell_id} is {parent.status}").write(
            folder)
    wall = dict(previous.wall_s) if previous else {}
    command = ["fit", "--config", str(folder / CONFIG_FILE), *fit_args]
    if checkpoint.is_file():
        command += ["--ckpt_path", "last"]
    elif run.exists():
        shutil.rmtree(run)  # an attempt that stopped before its first checkpoint: start clean
    start = time.perf_counter()
    code = lab_process(command, folder / LOG_FILE, threads, lock)
    wall["train"] = wall.get("train", 0.0) + time.perf_counter() - start
    metrics = training_metrics(run)
    if code == 0 and checkpoint.is_file():
        write_atomic(folder / TRAINED_MARKER, str(os.stat(checkpoint).st_mtime_ns))  # after the checkpoint it marks
        return CellResult(cell.cell_id, "finished", None, metrics, wall).write(folder)
    if (run / DIVERGED_FILE).is_file():
        diverged = json.loads((run / DIVERGED_FILE).read_text())
        return CellResult(cell.cell_id, "diverged", f"training loss {diverged['loss']} at step {diverged['step']}",
                          metrics, wall).write(folder)
    error = _error_line(folder / LOG_FILE, code) if code != 0 else f"training ended without writing {checkpoint}"
    return CellResult(cell.cell_id, "failed", error, metrics, wall).write(folder)


def evaluate_cell(cell: Cell, out_dir: Path, threads: int, trained: CellResult) -> CellResult:
    """Run ``tapa-lab eval`` on a trained cell unless the same evaluation is there already; add its metrics."""
    try:
        with own_cell(cell_dir(out_dir, cell.cell_id)) as lock:
            return _evaluate_owned(cell, out_dir, threads, trained, lock)
    except CellBusy as busy:
        return CellResult(cell.cell_id, "skipped", str(busy).replace("trained", "evaluated"))


def _evaluate_owned(cell: Cell, out_dir: Path, threads: int, trained: CellResult, lock: CellLock) -> CellResult:
    folder = cell_dir(out_dir, cell.cell_id)
    evaluation = cell.evaluation
    assert evaluation is not None, f"cell {cell.cell_id} asks for no evaluation (_to_evaluate)"
    fingerprint = evaluation.fingerprint()
    marker = folder / EVALUATED_MARKER
    wall = dict(trained.wall_s)
    run = run_dir(out_dir, cell.cell_id)
    if not (marker.is_file() and marker.read_text() == fingerprint):
        start = time.perf_counter()
        code = lab_process(["eval", "--run", str(run), *evaluation.command_args()], folder / LOG_FILE, threads,
                           lock)
        wall["eval"] = time.perf_counter() - start
        if code != 0:
            return CellResult(cell.cell_id, "failed", "evaluation: " + _error_line(folder / LOG_FILE, code),
                              trained.metrics, wall).write(folder)
        write_atomic(marker, fingerprint)
    metrics = {**training_metrics(run), **eval_metrics(read_eval(run))}
    return CellResult(cell.cell_id, "finished", None, metrics, wall, evaluated=True).write(folder)


def training_metrics(run: Path) -> dict[str, float]:
    """Last ``train/loss``, last and best ``val/loss`` (and of each ``val/loss@<m>x`` of ``data.val_multiples``), last
    ``val/perplexity`` and the steps trained, from the run's ``metrics.jsonl`` (whatever logger the run used; a resumed
    run's file matches the checkpoint it continued)."""
    series = read_metrics(run)
    kept = {tag: values for tag, values in series.items()
            if values and (tag in TRAINING_SCALARS or VAL_AT_LENGTH.fullmatch(tag))}
    metrics = {tag: values[max(values)] for tag, values in kept.items()}
    for tag, values in kept.items():
        if tag.startswith("val/loss"):
            metrics[f"{tag}_best"] = min(values.values())
    if kept.get("train/loss"):
        metrics["steps"] = float(max(kept["train/loss"]) + 1)
    return metrics


def _error_line(log: Path, code: int) -> str:
    """The last error-looking line of a log (what the report shows), else the exit code."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error:" in line]
    return (errors[-1] if errors else f"exit code {code}")[:500]

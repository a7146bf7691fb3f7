"""The grid runner: train and evaluate every cell in its own ``tapa-lab`` process, resumably and failure-isolated.

The grid's output folder is described in :mod:`tapa_lab.ablation.layout`; cell processes and cell ownership in
:mod:`tapa_lab.ablation.process`.

Order: stage by stage; within a stage every cell trains first; then, if an axis is swept with ``select``, only the
cells at each group's selected level are evaluated (the test split is touched by the chosen settings only), else every
cell is. A rerun skips finished and diverged cells (a deterministic run diverges again), resumes an interrupted
training from its ``last.ckpt``, runs evaluations that are missing or were asked differently, and retries failed
cells; a cell another runner is working on (its lock is held) is skipped and named. Each process gets
``cores // workers`` torch threads (OMP_NUM_THREADS): the same grid with the same workers on the same machine gives
the same numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from tapa_lab.ablation.curves import VAL_AT_LENGTH
from tapa_lab.ablation.expand import Cell
from tapa_lab.ablation.layout import (
    CONFIG_FILE,
    DIVERGED_FILE,
    EVALUATED_MARKER,
    GRID_COPY,
    HISTORY_FILE,
    INDEX_FILE,
    LOG_FILE,
    TRAINED_MARKER,
    cell_dir,
    last_checkpoint,
    run_config,
    run_dir,
    write_atomic,
    write_info,
)
from tapa_lab.ablation.process import CellBusy, CellLock, kill_children, lab_process, own_cell
from tapa_lab.ablation.results import CellResult, Row, eval_metrics, read_eval, read_result, selected_rows
from tapa_lab.ablation.spec import Grid
from tapa_lab.lit.metrics_file import read_metrics

TRAINING_SCALARS = ("train/loss", "val/loss", "val/perplexity")


def prepare_folder(grid: Grid, cells: list[Cell], out_dir: Path) -> None:
    """Write the grid copy, the index of its cells and each cell's ``config.yaml`` and ``cell.json`` (atomically: a
    cell another runner is training reads the same content)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / GRID_COPY, grid.path.read_text())
    write_atomic(out_dir / INDEX_FILE, json.dumps([cell.cell_id for cell in cells], indent=1))
    for cell in cells:
        cell_dir(out_dir, cell.cell_id).mkdir(parents=True, exist_ok=True)
        config = yaml.safe_dump(run_config(cell.config, out_dir, cell.cell_id), sort_keys=False)
        write_atomic(cell_dir(out_dir, cell.cell_id) / CONFIG_FILE, config)
        write_info(out_dir, cell)


def record_invocation(out_dir: Path, command: str, workers: int, started: datetime, wall_s: float,
                      threads: int) -> None:
    """Append one line to ``history.jsonl`` (the report states commands and wall times from it)."""
    entry = {"command": command, "started": started.strftime("%Y-%m-%d %H:%M UTC"), "wall_s": wall_s,
             "workers": workers, "threads": threads, "cores": _cores()}
    with (out_dir / HISTORY_FILE).open("a") as stream:
        stream.write(json.dumps(entry) + "\n")


def threads_per_worker(workers: int) -> int:
    """Torch threads of each cell process: the cores this process may use, shared by the workers."""
    return max(1, _cores() // workers)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


Phase = Literal["train", "eval"]


class Launcher(Protocol):
    """Runs one phase of a stage's cells somewhere (here: :class:`LocalLauncher`; on a cluster:
    :class:`tapa_lab.ablation.cluster.ClusterLauncher`) and puts a result for every given cell into ``results``."""

    def __enter__(self) -> Launcher: ...

    def __exit__(self, *exc: object) -> None: ...

    def run(self, phase: Phase, stage: str, cells: list[Cell], results: dict[str, CellResult]) -> None: ...


def run_cells(grid: Grid, cells: list[Cell], out_dir: Path, workers: int = 1, console: Console | None = None,
              evaluate: bool = True, launcher: Launcher | None = None) -> list[CellResult]:
    """Train every cell, then evaluate the selected ones, stage by stage.

    Args:
        grid: the grid (its swept axis decides which cells are evaluated).
        cells: the grid's cells in run order (:func:`~tapa_lab.ablation.expand.expand`).
        out_dir: the grid's output folder (:func:`prepare_folder` has written it).
        workers: processes run at once by the local launcher; each gets :func:`threads_per_worker` threads.
        console: where the progress display goes.
        evaluate: run the evaluations (false trains only; a later run evaluates).
        launcher: where cells run (default: :class:`LocalLauncher` with ``workers`` processes).

    Returns:
        One result per cell, in the order of ``cells`` (``pending`` for cells a launcher left queued).
    """
    console = console or Console()
    results: dict[str, CellResult] = {}
    with launcher or LocalLauncher(out_dir, workers, console) as launch:
        for stage in dict.fromkeys(cell.stage for cell in cells):
            stage_cells = [cell for cell in cells if cell.stage == stage]
            launch.run("train", stage, stage_cells, results)
            if evaluate and all(results[cell.cell_id].status != "pending" for cell in stage_cells):  # queued: later
                launch.run("eval", stage, _to_evaluate(grid, stage_cells, results, out_dir), results)
    return [results[cell.cell_id] for cell in cells]


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


class LocalLauncher:
    """Runs cells as child processes of this one, ``workers`` at a time, with a progress display."""

    def __init__(self, out_dir: Path, workers: int, console: Console):
        self.out_dir = out_dir
        self.workers = workers
        self.threads = threads_per_worker(workers)
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())
        self.progress = Progress(*columns, console=console)

    def __enter__(self) -> LocalLauncher:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def run(self, phase: Phase, stage: str, cells: list[Cell], results: dict[str, CellResult]) -> None:
        """Run ``phase`` of ``cells``; their results go into ``results``."""
        title = (f"{stage}: training ({self.workers} worker(s) x {self.threads} thread(s))" if phase == "train"
                 else f"{stage}: evaluation")
        overall = self.progress.add_task(title, total=len(cells))

        def step(cell: Cell) -> CellResult:
            name = escape(f"{cell.stage}: {cell.label()}, seed {cell.seed} [{cell.cell_id}]")
            task = self.progress.add_task(f"  {phase} {name}", total=None)
            try:
                result = run_phase(phase, cell, self.out_dir, self.threads, results)
            finally:
                self.progress.remove_task(task)
            style = "green" if result.status == "finished" else "red"
            note = escape(f": {result.error}") if result.error else ""
            self.progress.console.print(f"[{style}]{phase} {result.status}[/] {name}{note}")
            self.progress.advance(overall)
            return result

        _map(self.workers, step, cells, results)


def _map(workers: int, function: Callable[[Cell], CellResult], cells: list[Cell],
         results: dict[str, CellResult]) -> None:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            for cell, result in zip(cells, pool.map(function, cells), strict=True):
                results[cell.cell_id] = result
        except BaseException:
            kill_children()  # else the pool's shutdown would wait for them
            raise


def _to_evaluate(grid: Grid, cells: list[Cell], results: dict[str, CellResult], out_dir: Path) -> list[Cell]:
    """The finished cells that ask for an evaluation, at the selected level of the swept axis."""
    rows = [Row(**vars(cell.info()), result=results[cell.cell_id]) for cell in cells]
    keep = {row.cell_id for row in selected_rows(grid, rows)}
    return [cell for cell in cells if cell.cell_id in keep and cell.evaluation is not None
            and results[cell.cell_id].status == "finished"]


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

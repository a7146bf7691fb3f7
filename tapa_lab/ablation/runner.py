"""The grid runner: train and evaluate every cell in its own ``tapa-lab`` process, resumably and failure-isolated.

The grid's output folder is described in :mod:`tapa_lab.ablation.layout`; one cell's training and evaluation in
:mod:`tapa_lab.ablation.cell_run`; cell processes and cell ownership in :mod:`tapa_lab.ablation.process`.

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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from tapa_lab.ablation.cell_run import Phase, run_phase
from tapa_lab.ablation.expand import Cell
from tapa_lab.ablation.layout import (
    CONFIG_FILE,
    GRID_COPY,
    HISTORY_FILE,
    INDEX_FILE,
    cell_dir,
    run_config,
    write_atomic,
    write_info,
)
from tapa_lab.ablation.process import kill_children
from tapa_lab.ablation.results import CellResult, Row, selected_rows
from tapa_lab.ablation.spec import Grid


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

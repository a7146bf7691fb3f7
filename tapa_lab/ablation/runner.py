"""The grid runner: train and evaluate every cell in its own ``tapa-lab`` process, resumably and failure-isolated.

Layout of a grid's output folder (``checkpoints/ablations/<grid name>/`` by default)::

    grid.yaml                    the grid file as run
    cells.json                   the cell ids in run order
    history.jsonl                one line per invocation: command, start, wall time, workers, threads
    cells/<cell id>/config.yaml  the cell's resolved config: `tapa-lab fit --config <it>` trains the cell
    cells/<cell id>/cell.json    stage, levels, seed, parent cell
    cells/<cell id>/run/         the Lightning run folder (events, checkpoints/, run_record_*.json, eval/)
    cells/<cell id>/log.txt      the processes' output
    cells/<cell id>/result.json  status, error, metrics, wall times (see results.CellResult)
    cells/<cell id>/trained      training finished; ``evaluated`` holds the fingerprint of the evaluation done
    report/                      written by report.write_report

Order: stage by stage; within a stage every cell trains first; then, if an axis is swept with ``select``, only the
cells at each group's selected level are evaluated (the test split is touched by the chosen settings only), else every
cell is. A rerun skips finished and diverged cells (a deterministic run diverges again), resumes an interrupted
training from its ``last.ckpt``, runs evaluations that are missing or were asked differently, and retries failed
cells. Each process gets ``cores // workers`` torch threads (OMP_NUM_THREADS): the same grid with the same workers on
the same machine gives the same numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tapa_lab.ablation.grid import Cell, Evaluation, Grid, cell_dir, run_config
from tapa_lab.ablation.guard import DIVERGED_FILE
from tapa_lab.ablation.results import (
    HISTORY_FILE,
    INDEX_FILE,
    CellResult,
    Row,
    eval_metrics,
    read_eval,
    read_result,
    selected_rows,
)

TRAINING_SCALARS = ("train/loss", "val/loss", "val/perplexity")
TRAINED_MARKER = "trained"
EVALUATED_MARKER = "evaluated"


def prepare_folder(grid: Grid, cells: list[Cell], out_dir: Path) -> None:
    """Write the grid copy, the index of its cells and each cell's ``config.yaml`` and ``cell.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(grid.path, out_dir / "grid.yaml")
    (out_dir / INDEX_FILE).write_text(json.dumps([cell.cell_id for cell in cells], indent=1))
    for cell in cells:
        folder = cell_dir(out_dir, cell.cell_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.yaml").write_text(yaml.safe_dump(run_config(cell, out_dir), sort_keys=False))
        info = {"cell_id": cell.cell_id, "stage": cell.stage, "levels": cell.levels, "seed": cell.seed,
                "init_from": cell.init_from}
        (folder / "cell.json").write_text(json.dumps(info, indent=2))


def record_invocation(out_dir: Path, command: str, workers: int, started: datetime, wall_s: float) -> None:
    """Append one line to ``history.jsonl`` (the report states commands and wall times from it)."""
    entry = {"command": command, "started": started.strftime("%Y-%m-%d %H:%M UTC"), "wall_s": wall_s,
             "workers": workers, "threads": threads_per_worker(workers), "cores": _cores()}
    with (out_dir / HISTORY_FILE).open("a") as stream:
        stream.write(json.dumps(entry) + "\n")


def threads_per_worker(workers: int) -> int:
    """Torch threads of each cell process: the cores this process may use, shared by the workers."""
    return max(1, _cores() // workers)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_cells(grid: Grid, cells: list[Cell], out_dir: Path, workers: int = 1, console: Console | None = None,
              evaluate: bool = True) -> list[CellResult]:
    """Train every cell, then evaluate the selected ones, stage by stage, ``workers`` processes at a time.

    Args:
        grid: the grid (its swept axis decides which cells are evaluated).
        cells: the grid's cells in run order (:func:`~tapa_lab.ablation.grid.expand`).
        out_dir: the grid's output folder (:func:`prepare_folder` has written it).
        workers: processes run at once; each gets :func:`threads_per_worker` threads.
        console: where the progress display goes.
        evaluate: run the evaluations (false trains only; a later run evaluates).

    Returns:
        One result per cell, in the order of ``cells``.
    """
    console = console or Console()
    threads = threads_per_worker(workers)
    results: dict[str, CellResult] = {}
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        def step(phase: str, cell: Cell, overall: int) -> CellResult:
            name = escape(f"{cell.stage}: {cell.label}, seed {cell.seed} [{cell.cell_id}]")
            task = progress.add_task(f"  {phase} {name}", total=None)
            try:
                parent = results.get(cell.init_from) if cell.init_from else None
                if phase == "train":
                    result = train_cell(cell, out_dir, threads, parent)
                else:
                    result = evaluate_cell(cell, out_dir, threads, results[cell.cell_id])
            finally:
                progress.remove_task(task)
            style = "green" if result.status == "finished" else "red"
            note = escape(f": {result.error}") if result.error else ""
            progress.console.print(f"[{style}]{phase} {result.status}[/] {name}{note}")
            progress.advance(overall)
            return result

        for stage in dict.fromkeys(cell.stage for cell in cells):
            stage_cells = [cell for cell in cells if cell.stage == stage]
            overall = progress.add_task(f"{stage}: training ({workers} worker(s) x {threads} thread(s))",
                                        total=len(stage_cells))
            _map(workers, lambda cell, o=overall: step("train", cell, o), stage_cells, results)
            to_evaluate = _to_evaluate(grid, stage_cells, results, out_dir) if evaluate else []
            if evaluate:
                overall = progress.add_task(f"{stage}: evaluation", total=len(to_evaluate))
                _map(workers, lambda cell, o=overall: step("eval", cell, o), to_evaluate, results)
    return [results[cell.cell_id] for cell in cells]


def _map(workers: int, function: Callable[[Cell], CellResult], cells: list[Cell],
         results: dict[str, CellResult]) -> None:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for cell, result in zip(cells, pool.map(function, cells), strict=True):
            results[cell.cell_id] = result


def _to_evaluate(grid: Grid, cells: list[Cell], results: dict[str, CellResult], out_dir: Path) -> list[Cell]:
    """The finished cells that ask for an evaluation, at the selected level of the swept axis."""
    rows = [Row(cell.cell_id, cell.stage, cell.levels, cell.seed, results[cell.cell_id]) for cell in cells]
    keep = {row.cell_id for row in selected_rows(grid, rows)}
    return [cell for cell in cells if cell.cell_id in keep and cell.evaluation is not None
            and results[cell.cell_id].status == "finished"]


def train_cell(cell: Cell, out_dir: Path, threads: int, parent: CellResult | None) -> CellResult:
    """Train one cell (or resume it from ``last.ckpt``) unless it has trained already; a failure is recorded."""
    folder = cell_dir(out_dir, cell.cell_id)
    previous = read_result(out_dir, cell.cell_id)
    if previous is not None and previous.status in ("finished", "diverged"):
        return previous
    run = folder / "run"
    if (folder / TRAINED_MARKER).is_file():  # trained, but its evaluation failed: train no further
        return CellResult(cell.cell_id, "finished", None, training_metrics(run), previous.wall_s).write(folder)
    if parent is not None and parent.status != "finished":
        return CellResult(cell.cell_id, "skipped", f"its parent cell {parent.cell_id} is {parent.status}").write(
            folder)
    wall = dict(previous.wall_s) if previous else {}
    command = ["fit", "--config", str(folder / "config.yaml")]
    if (run / "checkpoints" / "last.ckpt").is_file():
        command += ["--ckpt_path", "last"]
    elif run.exists():
        shutil.rmtree(run)  # an attempt that stopped before its first checkpoint: start clean
    start = time.perf_counter()
    code = _lab_process(command, folder / "log.txt", threads)
    wall["train"] = wall.get("train", 0.0) + time.perf_counter() - start
    metrics = training_metrics(run)
    if code == 0:
        (folder / TRAINED_MARKER).write_text("")
        return CellResult(cell.cell_id, "finished", None, metrics, wall).write(folder)
    if (run / DIVERGED_FILE).is_file():
        diverged = json.loads((run / DIVERGED_FILE).read_text())
        return CellResult(cell.cell_id, "diverged", f"training loss {diverged['loss']} at step {diverged['step']}",
                          metrics, wall).write(folder)
    return CellResult(cell.cell_id, "failed", _error_line(folder / "log.txt", code), metrics, wall).write(folder)


def evaluate_cell(cell: Cell, out_dir: Path, threads: int, trained: CellResult) -> CellResult:
    """Run ``tapa-lab eval`` on a trained cell unless the same evaluation is there already; add its metrics."""
    folder = cell_dir(out_dir, cell.cell_id)
    evaluation: Evaluation = cell.evaluation
    marker = folder / EVALUATED_MARKER
    wall = dict(trained.wall_s)
    run = folder / "run"
    if not (marker.is_file() and marker.read_text() == evaluation.fingerprint()):
        start = time.perf_counter()
        code = _lab_process(["eval", "--run", str(run), *evaluation.command_args()], folder / "log.txt", threads)
        wall["eval"] = time.perf_counter() - start
        if code != 0:
            return CellResult(cell.cell_id, "failed", "evaluation: " + _error_line(folder / "log.txt", code),
                              trained.metrics, wall).write(folder)
        marker.write_text(evaluation.fingerprint())
    metrics = {**training_metrics(run), **eval_metrics(read_eval(run))}
    return CellResult(cell.cell_id, "finished", None, metrics, wall, evaluated=True).write(folder)


def training_metrics(run: Path) -> dict[str, float]:
    """Last ``train/loss``, last and best ``val/loss``, last ``val/perplexity`` and the steps trained."""
    series: dict[str, dict[int, float]] = {tag: {} for tag in TRAINING_SCALARS}
    for events in sorted(run.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in TRAINING_SCALARS:
            if tag in accumulator.Tags()["scalars"]:
                series[tag].update({e.step: e.value for e in accumulator.Scalars(tag)})
    metrics = {tag: values[max(values)] for tag, values in series.items() if values}
    if series["val/loss"]:
        metrics["val/loss_best"] = min(series["val/loss"].values())
    if series["train/loss"]:
        metrics["steps"] = float(max(series["train/loss"]) + 1)
    return metrics


def _lab_process(args: list[str], log: Path, threads: int) -> int:
    """Run ``tapa-lab <args>`` in a child process with ``threads`` torch threads, appending its output to ``log``."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    with log.open("a") as stream:
        stream.write(f"\n$ tapa-lab {' '.join(args)}  [{datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC]\n")
        stream.flush()
        return subprocess.run([sys.executable, "-m", "tapa_lab", *args], stdout=stream, stderr=subprocess.STDOUT,
                              env=env, check=False).returncode


def _error_line(log: Path, code: int) -> str:
    """The last error-looking line of a log (what the report shows), else the exit code."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error:" in line]
    return (errors[-1] if errors else f"exit code {code}")[:500]

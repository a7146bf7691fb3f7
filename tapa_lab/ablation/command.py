"""``tapa-lab ablation run``, ``status`` and ``report``: the grid commands."""

from __future__ import annotations

import json
import shlex
import time
import warnings
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tapa_lab.ablation.executor import SlurmOptions, check_layouts, resolve_executor
from tapa_lab.ablation.expand import expand
from tapa_lab.ablation.layout import SUBMITIT_DIR
from tapa_lab.ablation.loader import load_grid
from tapa_lab.ablation.migrate import migrate_legacy_cells
from tapa_lab.ablation.report import write_report
from tapa_lab.ablation.runner import Launcher, prepare_folder, record_invocation, run_cells, threads_per_worker
from tapa_lab.ablation.spec import Grid, GridWarning
from tapa_lab.ablation.status import grid_status
from tapa_lab.ablation.subset import restrict

DEFAULT_OUT_ROOT = Path("checkpoints") / "ablations"


def run_grid(grid: str, out_dir: str | None = None, workers: int | None = None, evaluate: bool = True,
             dry_run: bool = False, executor: Literal["local", "slurm"] = "local", slurm: SlurmOptions | None = None,
             wait: bool = True, only: dict[str, list[str | int | float]] | None = None) -> None:
    """Expand a grid, train and evaluate every cell (skipping finished ones), and write the report.

    Args:
        grid: the grid YAML, e.g. experiments/ablations/extrapolation.yaml.
        out_dir: the grid's output folder (default checkpoints/ablations/<grid name>); rerunning resumes it.
        workers: cells run at once by the local executor, each in its own process with cores // workers threads
            (default: the grid's ``workers``, else 1).
        evaluate: run ``tapa-lab eval`` after training (false trains only; rerunning later evaluates).
        dry_run: expand and validate the grid, list its cells, and stop before training.
        executor: ``local`` (processes of this one) or ``slurm`` (one job array per stage through submitit; needs
            the ``cluster`` extra and ``sbatch``).
        slurm: cluster settings of ``--executor slurm`` (they override the grid's ``executor:`` block).
        wait: with ``--executor slurm``, wait for the jobs (false: return once they are queued; ``tapa-lab ablation
            status`` follows them, and rerunning ``run`` submits what is missing, failed, or ready next).
        only: train and evaluate only the cells at these levels, ``{axis or seed: [levels]}``, e.g. ``--only '{pe:
            [alibi, kerple-power], seed: [1]}'`` (a later stage's cell keeps its parent). The folder and the report
            still cover the whole grid: a later run without it trains the rest.
    """
    console = Console()
    spec = load_grid_showing_warnings(grid, console)
    options = resolve_executor(executor, spec.executor, slurm)
    folder = Path(out_dir) if out_dir is not None else DEFAULT_OUT_ROOT / spec.name
    cells = expand(spec, folder)
    swept = spec.select_axis.name if spec.select_axis else None
    chosen = cells if only is None else restrict(cells, only, swept)
    subset = "" if only is None else f" ({len(chosen)} of {len(cells)} chosen by --only)"
    table = Table(title=f"{spec.name}: {len(chosen)} cells{subset} -> {folder}")
    for column in ("cell", "stage", "levels", "seed", "parent"):
        table.add_column(column)
    for cell in chosen:
        table.add_row(cell.cell_id, cell.stage, cell.label(), str(cell.seed), cell.init_from or "")
    console.print(table)
    if dry_run:
        return
    check_layouts(executor, {cell.cell_id: cell.config["trainer"] for cell in chosen})
    renamed = migrate_legacy_cells(cells, folder)
    if renamed:
        console.print(f"{len(renamed)} cell folders renamed from their pre-canonical ids (nothing retrained): "
                      + ", ".join(f"{old} -> {new}" for old, new in renamed))
    prepare_folder(spec, cells, folder)
    workers = workers or spec.workers
    launcher: Launcher | None = None
    if options is not None:
        from tapa_lab.ablation.cluster import ClusterLauncher, slurm_executor  # the optional `cluster` extra

        launcher = ClusterLauncher(slurm_executor(folder / SUBMITIT_DIR, options), folder,
                                   options.cpus_per_task or 1, wait, console)
    started, start = datetime.now(timezone.utc), time.perf_counter()
    results = run_cells(spec, chosen, folder, workers, console, evaluate, launcher)
    wall_s = time.perf_counter() - start
    command = ["tapa-lab", "ablation", "run", "--grid", grid, "--out_dir", str(folder), "--workers", str(workers),
               "--executor", executor] + ([] if only is None else ["--only", json.dumps(only)])
    threads = threads_per_worker(workers) if options is None else options.cpus_per_task or 1
    record_invocation(folder, shlex.join(command), workers, started, wall_s, threads)
    counts = Counter(result.status for result in results)
    console.print(f"{counts['finished']}/{len(results)} cells finished in {wall_s:.0f} s"
                  + (f"; {counts['pending']} queued or waiting" if counts["pending"] else ""))
    report = write_report(folder)
    console.print(f"report: {report}")


def status_grid(out_dir: str) -> None:
    """Show where every cell of a grid folder stands: queued, running, done, failed (with the error's last line),
    diverged, skipped, interrupted or pending, and how often it was retried.

    Args:
        out_dir: a grid output folder written by ``tapa-lab ablation run``.
    """
    console = Console()
    statuses = grid_status(Path(out_dir))
    table = Table(title=f"{out_dir}: {len(statuses)} cells")
    for column in ("cell", "stage", "levels", "seed", "status", "retried", "job", "note"):
        table.add_column(column, overflow="fold")
    styles = {"done": "green", "failed": "red", "diverged": "red", "running": "cyan", "queued": "yellow"}
    for status in statuses:
        style = styles.get(status.state, "")
        table.add_row(status.row.cell_id, status.row.stage, status.row.label(), str(status.row.seed),
                      f"[{style}]{status.state}[/]" if style else status.state, str(status.retried), status.job,
                      escape(status.note))
    console.print(table)
    counts = Counter(status.state for status in statuses)
    console.print(", ".join(f"{count} {state}" for state, count in counts.items()))


def load_grid_showing_warnings(path: str | Path, console: Console) -> Grid:
    """:func:`~tapa_lab.ablation.loader.load_grid`, printing its :class:`GridWarning` s as one line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GridWarning)
        grid = load_grid(path)
    for warning in caught:
        if issubclass(warning.category, GridWarning):
            console.print(f"[yellow]warning:[/] {escape(str(warning.message))}")
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return grid


def report_grid(out_dir: str) -> None:
    """Regenerate a grid's report (tables, statistics, plots, TensorBoard hparams) from its folder, without training.

    Works on a partial grid: cells that have not finished are listed as such, and the statistics use what finished.

    Args:
        out_dir: a grid output folder written by ``tapa-lab ablation run`` (holds grid.yaml and cells/).
    """
    Console().print(f"report: {write_report(Path(out_dir))}")

"""``tapa-lab ablation run`` and ``tapa-lab ablation report``: the grid commands."""

from __future__ import annotations

import shlex
import time
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tapa_lab.ablation.grid import expand, load_grid
from tapa_lab.ablation.report import write_report
from tapa_lab.ablation.runner import prepare_folder, record_invocation, run_cells

DEFAULT_OUT_ROOT = Path("checkpoints") / "ablations"


def run_grid(grid: str, out_dir: str | None = None, workers: int | None = None, evaluate: bool = True,
             dry_run: bool = False) -> None:
    """Expand a grid, train and evaluate every cell (skipping finished ones), and write the report.

    Args:
        grid: the grid YAML, e.g. experiments/ablations/extrapolation.yaml.
        out_dir: the grid's output folder (default checkpoints/ablations/<grid name>); rerunning resumes it.
        workers: cells run at once, each in its own process with cores // workers threads (default: the grid's
            ``workers``, else 1).
        evaluate: run ``tapa-lab eval`` after training (false trains only; rerunning later evaluates).
        dry_run: expand and validate the grid, list its cells, and stop before training.
    """
    console = Console()
    spec = load_grid(grid)
    folder = Path(out_dir) if out_dir is not None else DEFAULT_OUT_ROOT / spec.name
    cells = expand(spec, folder)
    table = Table(title=f"{spec.name}: {len(cells)} cells -> {folder}")
    for column in ("cell", "stage", "levels", "seed", "parent"):
        table.add_column(column)
    for cell in cells:
        table.add_row(cell.cell_id, cell.stage, cell.label, str(cell.seed), cell.init_from or "")
    console.print(table)
    if dry_run:
        return
    prepare_folder(spec, cells, folder)
    workers = workers or spec.workers
    started, start = datetime.now(timezone.utc), time.perf_counter()
    results = run_cells(spec, cells, folder, workers, console, evaluate)
    wall_s = time.perf_counter() - start
    command = ["tapa-lab", "ablation", "run", "--grid", grid, "--out_dir", str(folder), "--workers", str(workers)]
    record_invocation(folder, shlex.join(command), workers, started, wall_s)
    console.print(f"{sum(r.status == 'finished' for r in results)}/{len(results)} cells finished in {wall_s:.0f} s")
    report = write_report(folder)
    console.print(f"report: {report}")


def report_grid(out_dir: str) -> None:
    """Regenerate a grid's report (tables, statistics, plots, TensorBoard hparams) from its folder, without training.

    Args:
        out_dir: a grid output folder written by ``tapa-lab ablation run`` (holds grid.yaml and cells/).
    """
    Console().print(f"report: {write_report(Path(out_dir))}")

"""Reading a grid folder: each cell's result and evaluation, and the selection of the swept axis' best level."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tapa_lab.ablation.layout import EVAL_RESULTS, INDEX_FILE, RESULT_FILE, CellInfo, cell_dir, read_info, write_atomic
from tapa_lab.ablation.spec import Grid

Status = Literal["finished", "diverged", "failed", "skipped", "pending"]


@dataclass
class CellResult:
    """What became of one cell (``cells/<id>/result.json``).

    Attributes:
        cell_id: the cell's id.
        status: finished, diverged (NaN or infinite training loss), failed, skipped (its parent cell did not
            finish) or pending (not run yet).
        error: why it did not finish, or a note (e.g. an evaluation that could not run).
        metrics: training metrics (``train/loss``, ``val/loss``, ``val/loss_best``, ``val/perplexity``, ``steps``)
            and, once evaluated, ``ppl@<m>x``, ``nll@<m>x``, ``passkey``, ``passkey@<length>``.
        wall_s: seconds spent training and evaluating.
        evaluated: whether the evaluation ran (only the selected level of a swept axis is evaluated).
    """

    cell_id: str
    status: Status
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    wall_s: dict[str, float] = field(default_factory=dict)
    evaluated: bool = False

    def write(self, folder: Path) -> CellResult:
        """Save as ``<folder>/result.json`` (atomically); returns itself."""
        write_atomic(folder / RESULT_FILE, json.dumps(asdict(self), indent=2))
        return self


@dataclass(frozen=True)
class Row(CellInfo):
    """One cell of a grid folder, its identity and its result, as selection and the report see it."""

    result: CellResult

    @property
    def finished(self) -> bool:
        return self.result.status == "finished"

    @property
    def metrics(self) -> dict[str, float]:
        return self.result.metrics

    def others(self, *axes: str | None) -> tuple:
        """The stage and every level but those of ``axes``: the key of the group a selection or a pairing works in."""
        return (self.stage, *((a, level) for a, level in self.levels.items() if a not in axes))


def read_result(out_dir: Path, cell_id: str) -> CellResult | None:
    """A cell's ``result.json``, or ``None`` before its first run."""
    path = cell_dir(out_dir, cell_id) / RESULT_FILE
    return CellResult(**json.loads(path.read_text())) if path.is_file() else None


def load_rows(out_dir: Path, cell_ids: list[str] | None = None) -> list[Row]:
    """The cells of a grid folder in run order (``cells.json``), each with its result (``pending`` if none)."""
    ids = cell_ids if cell_ids is not None else json.loads((out_dir / INDEX_FILE).read_text())
    rows = []
    for cell_id in ids:
        result = read_result(out_dir, cell_id) or CellResult(cell_id, "pending", "not run yet")
        rows.append(Row(**asdict(read_info(out_dir, cell_id)), result=result))
    return rows


def read_eval(run: Path) -> dict[str, Any] | None:
    """The ``results.json`` that ``tapa-lab eval`` wrote into ``<run>/eval/``, if any."""
    path = run.joinpath(*EVAL_RESULTS)
    return json.loads(path.read_text()) if path.is_file() else None


def eval_metrics(results: dict[str, Any] | None) -> dict[str, float]:
    """Flat metrics of an evaluation: ``ppl@<m>x`` and ``nll@<m>x`` per length multiple, ``passkey`` (mean accuracy)
    and ``passkey@<length>`` (mean over depths). Values the evaluation could not compute (null) are left out."""
    if results is None:
        return {}
    metrics: dict[str, float] = {}
    for row in results.get("perplexity") or []:
        multiple = float(row["multiple"])
        name = f"{int(multiple)}x" if multiple.is_integer() else f"{multiple:g}x"
        for key, metric in (("perplexity", "ppl"), ("nll", "nll")):
            if row.get(key) is not None:
                metrics[f"{metric}@{name}"] = float(row[key])
    passkey = results.get("passkey")
    if passkey:
        metrics["passkey"] = float(passkey["mean_accuracy"])
        for length, accuracy in zip(passkey["lengths"], passkey["accuracy"], strict=True):
            metrics[f"passkey@{length}"] = float(np.mean(accuracy))
    return metrics


def select_levels(grid: Grid, rows: list[Row]) -> dict[tuple, tuple[str, float]]:
    """The best level of the swept axis per stage and combination of the other axes.

    The winner has the lowest mean of the axis' ``select`` metric over its finished seeds (levels with no finished
    seed cannot win).

    Returns:
        ``{row.others(axis): (level, mean)}``; empty when no axis is swept.
    """
    axis = grid.select_axis
    if axis is None or axis.select is None:
        return {}
    values: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        value = row.metrics.get(axis.select)
        if row.finished and isinstance(value, int | float) and math.isfinite(value):
            values[row.others(axis.name)][row.levels[axis.name]].append(value)
    return {key: min(((level, float(np.mean(v))) for level, v in by_level.items()), key=lambda item: item[1])
            for key, by_level in values.items()}


def selected_rows(grid: Grid, rows: list[Row]) -> list[Row]:
    """The rows at the selected level of the swept axis (every row when no axis is swept or nothing finished)."""
    axis = grid.select_axis
    if axis is None:
        return rows
    chosen = select_levels(grid, rows)
    return [row for row in rows if row.others(axis.name) not in chosen
            or chosen[row.others(axis.name)][0] == row.levels[axis.name]]


def rows_by_label(rows: list[Row]) -> dict[str, list[Row]]:
    """Rows by label (the seeds of one cell), in first-seen order."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.label(), []).append(row)
    return groups

"""Validation over training: each cell's validation losses at every validation step, read from its ``metrics.jsonl``.

A grid that validates at several lengths (``data.val_multiples: [1, 16]``) logs ``val/loss@1x`` and ``val/loss@16x``
at every validation; these curves answer "does the gap close with training, and when". The report plots them (mean
over seeds with the 95% t band), tabulates them at a few steps with paired tests against the baseline, and writes
every point to ``curves.csv``.

Steps are counted as optimizer steps done (the logged, 0-based step + 1): a validation after the 100th step is at 100.
"""

from __future__ import annotations

import csv
import math
import re
from collections import defaultdict
from pathlib import Path

from tapa_lab.ablation.layout import run_dir
from tapa_lab.ablation.results import Row
from tapa_lab.lit.metrics_file import read_metrics

#: Validation losses at several lengths (``data.val_multiples``): ``val/loss@4x`` and so on.
VAL_AT_LENGTH = re.compile(r"val/loss@(\d+)x")
TABLE_STEPS = 6
"""Columns of the report's table: this many validation steps, evenly spread, the last one always included."""

Curves = dict[str, dict[str, dict[int, dict[int, float]]]]
"""``{tag: {cell label: {step: {seed: value}}}}``."""


def validation_curves(out_dir: Path, rows: list[Row]) -> Curves:
    """The validation-loss curves of the finished cells of ``rows``.

    The tags are ``val/loss@<m>x`` when the runs validated at several lengths (``val/loss`` is then the same as
    ``val/loss@1x`` and left out), else ``val/loss``. Non-finite values (a diverged run) are left out.

    Returns:
        ``{tag: {cell label: {step: {seed: value}}}}``, tags in the order ``1x, 4x, 16x, ...``, labels in row order.
    """
    curves: Curves = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    for row in rows:
        if not row.finished:
            continue
        series = read_metrics(run_dir(out_dir, row.cell_id))
        tags = [tag for tag in series if VAL_AT_LENGTH.fullmatch(tag)] or [tag for tag in ["val/loss"] if tag in series]
        for tag in tags:
            for step, value in series[tag].items():
                if math.isfinite(value):
                    curves[tag][row.label()][step + 1][row.seed] = value
    return {tag: {label: dict(by_step) for label, by_step in curves[tag].items()}
            for tag in sorted(curves, key=_multiple)}


def table_steps(by_label: dict[str, dict[int, dict[int, float]]], count: int = TABLE_STEPS) -> list[int]:
    """Up to ``count`` validation steps that every cell of ``by_label`` reached: the first, and those nearest to
    ``k / (count - 1)`` of the last for ``k = 1 .. count - 1`` (3000 steps validated every 100: 100, 600, ..., 3000)."""
    common = sorted(set.intersection(*(set(by_step) for by_step in by_label.values()))) if by_label else []
    if len(common) <= count:
        return common
    def nearest(target: float) -> int:
        return min(common, key=lambda step: abs(step - target))

    return sorted({common[0], *(nearest(common[-1] * k / (count - 1)) for k in range(1, count))})


def write_curves_csv(curves: Curves, path: Path) -> Path:
    """Every point of ``curves`` as ``tag, cell, seed, step, value`` rows."""
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["tag", "cell", "seed", "step", "value"])
        for tag, by_label in curves.items():
            for label, by_step in by_label.items():
                for step, by_seed in sorted(by_step.items()):
                    for seed, value in sorted(by_seed.items()):
                        writer.writerow([tag, label, seed, step, f"{value:.6g}"])
    return path


def _multiple(tag: str) -> int:
    """``val/loss@16x`` -> 16 (``val/loss`` -> 1), for ordering."""
    match = VAL_AT_LENGTH.fullmatch(tag)
    return int(match.group(1)) if match else 1

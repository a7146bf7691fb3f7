"""The report's validation-over-training section: a figure, a CSV, and per tag a table at a few steps with the paired
difference of each candidate against its baseline (seeds paired as in :mod:`tapa_lab.ablation.report_paired`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tapa_lab.ablation.curves import table_steps, validation_curves, write_curves_csv
from tapa_lab.ablation.plots import plot_learning_curves
from tapa_lab.ablation.report_format import format_number, format_p
from tapa_lab.ablation.report_paired import baseline_pairs
from tapa_lab.ablation.results import Row, rows_by_label
from tapa_lab.ablation.spec import Grid
from tapa_lab.ablation.stats import paired_test


def curves_section(grid: Grid, rows: list[Row], stage: str, out_dir: Path, folder: Path) -> list[str]:
    """Markdown lines of the section (none when no run validated more than once); writes ``curves_<stage>.csv`` and
    ``learning_curves_<stage>.png`` into ``folder``."""
    curves = validation_curves(out_dir, rows)
    if not any(len(by_step) > 1 for by_label in curves.values() for by_step in by_label.values()):
        return []  # one validation (or none): the main table says it all
    csv_path = write_curves_csv(curves, folder / f"curves_{stage}.csv")
    figure = plot_learning_curves({tag: {label: {step: list(by_seed.values()) for step, by_seed in by_step.items()}
                                         for label, by_step in by_label.items()} for tag, by_label in curves.items()},
                                  f"{grid.name}: validation over training ({stage})",
                                  folder / f"learning_curves_{stage}.png")
    lines = ["### Validation over training", "",
             f"Mean over seeds at a few validation steps (every step: `{csv_path.name}`); rows `a - b`: the paired "
             "difference over seeds (candidate - baseline) and its t-test p.", "",
             f"![validation over training]({figure.name})", ""]
    pairs = [pair for _, _, pairs in baseline_pairs(grid, rows_by_label(rows)) for pair in pairs]
    for tag, by_label in curves.items():
        steps = table_steps(by_label)
        lines += [f"`{tag}` by step:", "", "| cell | " + " | ".join(map(str, steps)) + " |",
                  "|" + "---|" * (len(steps) + 1)]
        for label, by_step in by_label.items():
            cells = [format_number(float(np.mean(list(by_step[step].values())))) for step in steps]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        for label, base in pairs:
            if label not in by_label or base not in by_label:
                continue
            cells = []
            for step in steps:
                ours, theirs = by_label[label][step], by_label[base][step]
                seeds = sorted(set(ours) & set(theirs))
                test = paired_test([ours[s] for s in seeds], [theirs[s] for s in seeds]) if len(seeds) > 1 else None
                cells.append("-" if test is None else f"{test.mean_diff:+.3f} (p {format_p(test.t_pvalue)})")
            lines.append(f"| {label} - {base} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines

"""The report's paired tests: each candidate cell against its baseline cell (equal on every other axis), seeds paired.

A perplexity is tested on its log (``ppl@<m>x`` as ``nll@<m>x``, ``val/perplexity`` as ``val/loss``); the t-test and,
from :data:`~tapa_lab.ablation.stats.WILCOXON_MIN_PAIRS` pairs, Wilcoxon's signed-rank test, with d_z.
"""

from __future__ import annotations

import re

from tapa_lab.ablation.report_format import format_number, format_p, is_finite
from tapa_lab.ablation.results import Row, rows_by_label
from tapa_lab.ablation.spec import Grid
from tapa_lab.ablation.stats import WILCOXON_MIN_PAIRS, paired_test

PPL = re.compile(r"^ppl@(.+)x$")
"""An evaluated perplexity's metric name, ``ppl@<multiple>x``."""


def tested_metric(metric: str) -> str:
    """The metric a column is tested on: the NLL of a perplexity, the metric itself otherwise."""
    match = PPL.match(metric)
    if match:
        return f"nll@{match.group(1)}x"
    return {"val/perplexity": "val/loss", "train/perplexity": "train/loss"}.get(metric, metric)


def baseline_pairs(grid: Grid, groups: dict[str, list[Row]]) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """Per baseline ``(axis, level)`` of the report: each candidate cell's label with its baseline cell's label, the
    two equal on every other axis (each side at its own selected level of the swept axis). Seeds pair within them."""
    swept = grid.select_axis.name if grid.select_axis else None
    result = []
    for compared, baseline in ((axis, level) for axis, levels in grid.baseline.items() for level in levels):
        bases = {members[0].others(compared, swept): label for label, members in groups.items()
                 if members[0].levels.get(compared) == baseline}
        pairs = [(label, bases[key]) for label, members in groups.items() if members[0].levels.get(compared) != baseline
                 and (key := members[0].others(compared, swept)) in bases]
        result.append((compared, baseline, pairs))
    return result


def paired_tests_section(grid: Grid, rows: list[Row], metrics: list[str]) -> list[str]:
    """Markdown lines: one table of paired tests per baseline, over the tested form of ``metrics``."""
    lines: list[str] = []
    tested = list(dict.fromkeys(tested_metric(m) for m in metrics if m != "steps"))
    groups = rows_by_label(rows)
    for compared, baseline, pairs in baseline_pairs(grid, groups):
        lines += [f"Paired tests against `{compared}={baseline}` over seeds (candidate - baseline; negative is "
                  "better for losses and perplexities):", "",
                  "| cell | metric | n | mean diff | p (t) | p (Wilcoxon) | d_z |", "|---|---|---|---|---|---|---|"]
        for label, base in pairs:
            base_by_seed = {row.seed: row for row in groups[base] if row.finished}
            for test_metric in tested:
                values = [(row.metrics[test_metric], base_by_seed[row.seed].metrics[test_metric])
                          for row in groups[label] if row.finished and row.seed in base_by_seed
                          and is_finite(row.metrics.get(test_metric))
                          and is_finite(base_by_seed[row.seed].metrics.get(test_metric))]
                if not values:
                    continue
                test = paired_test([a for a, _ in values], [b for _, b in values])
                wilcoxon = (format_p(test.wilcoxon_pvalue) if test.wilcoxon_pvalue is not None
                            else f"n < {WILCOXON_MIN_PAIRS}")
                t_p, d_z = ((format_p(test.t_pvalue), format_number(test.cohens_dz)) if test.n >= 2
                            else ("n < 2", "n < 2"))  # one seed: a difference, no test
                lines.append(f"| {label} | {test_metric} | {test.n} | {test.mean_diff:+.4g} | {t_p} | {wilcoxon} | "
                             f"{d_z} |")
        lines.append("")
    return lines

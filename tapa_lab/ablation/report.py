"""The grid report, regenerated from a grid folder at any time (no training).

Writes into ``<grid folder>/report/``:

- ``metrics.csv`` and ``metrics.jsonl``: every metric of every cell and seed, with status and error;
- ``report.md``: per stage, a table of mean, standard deviation and 95% t interval over seeds per cell (each cell at
  its selected level of the swept axis, e.g. its best learning rate), paired tests of each level of the compared axis
  against the baseline, the cells that did not finish, and an appendix with the sweep;
- ``ppl_vs_length_<stage>.png`` (perplexity by evaluation length with 95% bands) and
  ``passkey_<stage>.png`` (accuracy heatmaps), when the cells were evaluated;
- ``learning_curves_<stage>.png`` and ``curves_<stage>.csv``: the validation losses over training (``val/loss@<m>x``
  with ``data.val_multiples``), with a table at a few steps and paired tests against the baseline at each;
- ``tensorboard/``: one hparams record per cell (``tensorboard --logdir <grid folder>/report/tensorboard``).

This module assembles ``report.md``; the paired tests are :mod:`~tapa_lab.ablation.report_paired`, the curves section
:mod:`~tapa_lab.ablation.report_curves`, the CSV/JSONL/TensorBoard files :mod:`~tapa_lab.ablation.report_files`, and
the number formats :mod:`~tapa_lab.ablation.report_format`.
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from tapa_lab.ablation.layout import GRID_COPY, HISTORY_FILE, REPORT_DIR, run_dir
from tapa_lab.ablation.loader import load_grid
from tapa_lab.ablation.plots import plot_passkey_heatmaps, plot_perplexity_vs_length
from tapa_lab.ablation.report_curves import curves_section
from tapa_lab.ablation.report_files import write_hparams, write_tables
from tapa_lab.ablation.report_format import format_summary, is_finite
from tapa_lab.ablation.report_paired import PPL, paired_tests_section
from tapa_lab.ablation.results import Row, load_rows, read_eval, rows_by_label, select_levels, selected_rows
from tapa_lab.ablation.spec import Grid, GridWarning
from tapa_lab.ablation.stats import WILCOXON_MIN_PAIRS

TRAINING_METRICS = ["val/loss", "val/perplexity", "train/loss"]


def write_report(out_dir: Path) -> Path:
    """Regenerate ``<out_dir>/report/`` from the cells' results; returns the path of ``report.md``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GridWarning)  # the run showed them; the report reads the copy
        grid = load_grid(out_dir / GRID_COPY, check_fragments=False)
    rows = load_rows(out_dir)
    folder = out_dir / REPORT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    write_tables(rows, folder)
    write_hparams(rows, folder / "tensorboard")
    lines = _header(grid, rows, out_dir)
    for stage in dict.fromkeys(row.stage for row in rows):
        lines += _stage_section(grid, [row for row in rows if row.stage == stage], stage, out_dir, folder,
                                len(grid.stages) > 1)
    lines += _problems(rows)
    lines += _appendix(grid, rows)
    markdown = folder / "report.md"
    markdown.write_text("\n".join(lines) + "\n")
    return markdown


def _header(grid: Grid, rows: list[Row], out_dir: Path) -> list[str]:
    history = _history(out_dir)
    record = _run_record(out_dir, rows)
    counts: defaultdict[str, int] = defaultdict(int)
    for row in rows:
        counts[row.result.status] += 1
    lines = [f"# Ablation grid `{grid.name}`", "", grid.description, "",
             f"- Grid file: `{grid.path.name}` (copied to `{out_dir / GRID_COPY}`); seeds {grid.seeds}; "
             f"{len(rows)} cells: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) + "."]
    if history:
        last = history[-1]
        lines.append(f"- Command: `{last['command']}` ({last['workers']} worker(s) x {last['threads']} thread(s) on "
                     f"{last.get('cores', '?')} cores); "
                     f"runs: " + "; ".join(f"{h['started']} for {h['wall_s'] / 60:.1f} min" for h in history)
                     + f" (total {sum(h['wall_s'] for h in history) / 60:.1f} min).")
    train_s = sum(row.result.wall_s.get("train", 0.0) for row in rows)
    eval_s = sum(row.result.wall_s.get("eval", 0.0) for row in rows)
    lines.append(f"- Process time summed over cells: training {train_s / 60:.1f} min, evaluation "
                 f"{eval_s / 60:.1f} min.")
    if record is not None:
        versions = ", ".join(f"{k} {v}" for k, v in record["versions"].items() if v)
        git = record["git"]
        lines.append(f"- Machine: {record['device']} ({record['accelerator']}); {versions}; git {git['commit']} "
                     f"(dirty: {git['dirty']}); deterministic algorithms: {record['deterministic']}; corpus "
                     f"{record['data']['corpus']} (manifest {str(record['data'].get('manifest_hash'))[:12]}).")
    lines += ["- Statistics: mean ± sample sd over seeds, and the 95% t interval of the mean [low, high]. Paired "
              "tests pair seeds; perplexities are tested on their log (the NLL). Wilcoxon signed-rank only with "
              f">= {WILCOXON_MIN_PAIRS} pairs (below that its exact p can never reach 0.05). d_z = mean(diff) / "
              "sd(diff).", ""]
    return lines


def _stage_section(grid: Grid, rows: list[Row], stage: str, out_dir: Path, folder: Path, named: bool) -> list[str]:
    kept = selected_rows(grid, rows)
    axis = grid.select_axis
    metrics = _metric_columns(grid, kept)
    title = f"## Stage `{stage}`" if named else "## Results"
    lines = [title, ""]
    if axis is not None:
        lines += [f"Each row at its best `{axis.name}` by mean `{axis.select}` over seeds (the sweep is in the "
                  "appendix).", ""]
    groups = rows_by_label(kept)
    header = ["cell", "n", *metrics]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, members in groups.items():
        done = [row for row in members if row.finished]
        cells = [label, str(len(done))]
        for metric in metrics:
            values = [row.metrics[metric] for row in done if is_finite(row.metrics.get(metric))]
            cells.append(format_summary(values))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += paired_tests_section(grid, kept, metrics)
    lines += _figures(grid, kept, stage, out_dir, folder)
    lines += curves_section(grid, kept, stage, out_dir, folder)
    return lines


def _figures(grid: Grid, rows: list[Row], stage: str, out_dir: Path, folder: Path) -> list[str]:
    curves: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    passkeys: dict[str, list[dict]] = defaultdict(list)
    train_len = None
    for row in rows:
        if not row.finished:
            continue
        results = read_eval(run_dir(out_dir, row.cell_id))
        if results is None:
            continue
        train_len = results["train_seq_len"]
        for entry in results.get("perplexity") or []:
            if is_finite(entry["perplexity"]):
                curves[row.label()][entry["length"]].append(entry["perplexity"])
        if results.get("passkey"):
            passkeys[row.label()].append(results["passkey"])
    lines = []
    if curves:
        path = plot_perplexity_vs_length(curves, train_len, f"{grid.name}: perplexity by length ({stage})",
                                         folder / f"ppl_vs_length_{stage}.png")
        lines += [f"![perplexity by evaluation length]({path.name})", ""]
    if passkeys:
        heatmaps = {label: (runs[0]["lengths"], runs[0]["depths"],
                            np.mean([np.asarray(run["accuracy"], dtype=float) for run in runs], axis=0))
                    for label, runs in passkeys.items()}
        path = plot_passkey_heatmaps(heatmaps, f"{grid.name}: passkey accuracy, mean over seeds ({stage})",
                                     folder / f"passkey_{stage}.png")
        lines += [f"![passkey accuracy]({path.name})", ""]
    return lines


def _problems(rows: list[Row]) -> list[str]:
    unfinished = [row for row in rows if not row.finished]
    if not unfinished:
        return ["All cells finished.", ""]
    lines = ["## Cells that did not finish", "", "| cell | stage | levels | seed | status | error |",
             "|---|---|---|---|---|---|"]
    for row in unfinished:
        error = (row.result.error or "").replace("|", "\\|")
        lines.append(f"| {row.cell_id} | {row.stage} | {row.label()} | {row.seed} | {row.result.status} | {error} |")
    return [*lines, ""]


def _appendix(grid: Grid, rows: list[Row]) -> list[str]:
    axis = grid.select_axis
    lines = []
    if axis is not None and axis.select is not None:
        chosen = select_levels(grid, rows)
        lines += [f"## Appendix: `{axis.name}` sweep (selection on mean `{axis.select}`, minimised)", "",
                  f"| cell | n | {axis.select} | selected |", "|---|---|---|---|"]
        for label, members in rows_by_label(rows).items():
            done = [row for row in members if row.finished and is_finite(row.metrics.get(axis.select))]
            key = members[0].others(axis.name)
            mark = "yes" if key in chosen and chosen[key][0] == members[0].levels[axis.name] else ""
            lines.append(f"| {label} | {len(done)} | "
                         f"{format_summary([row.metrics[axis.select] for row in done])} | {mark} |")
        lines.append("")
    lines += ["## Appendix: per-seed values", "", "Every metric of every cell and seed: `metrics.csv` (and "
              "`metrics.jsonl`) beside this file.", ""]
    return lines


def _metric_columns(grid: Grid, rows: list[Row]) -> list[str]:
    if grid.metrics:
        return list(grid.metrics)
    available = list(dict.fromkeys(name for row in rows for name in row.metrics))
    evaluated = [name for name in available if PPL.match(name) or name.startswith("passkey")]
    return [m for m in TRAINING_METRICS if m in available] + evaluated


def _history(out_dir: Path) -> list[dict[str, Any]]:
    path = out_dir / HISTORY_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _run_record(out_dir: Path, rows: list[Row]) -> dict[str, Any] | None:
    for row in rows:
        for path in sorted(run_dir(out_dir, row.cell_id).glob("run_record_*.json")):
            return json.loads(path.read_text())  # any stage's record: the machine and versions are the same
    return None

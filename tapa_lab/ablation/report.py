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
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import warnings
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries

from tapa_lab.ablation.curves import table_steps, validation_curves, write_curves_csv
from tapa_lab.ablation.layout import GRID_COPY, HISTORY_FILE, REPORT_DIR, run_dir
from tapa_lab.ablation.loader import load_grid
from tapa_lab.ablation.plots import plot_learning_curves, plot_passkey_heatmaps, plot_perplexity_vs_length
from tapa_lab.ablation.results import Row, load_rows, read_eval, select_levels, selected_rows
from tapa_lab.ablation.spec import Grid, GridWarning
from tapa_lab.ablation.stats import WILCOXON_MIN_PAIRS, paired_test, summarize

TRAINING_METRICS = ["val/loss", "val/perplexity", "train/loss"]
PPL = re.compile(r"^ppl@(.+)x$")


def write_report(out_dir: Path) -> Path:
    """Regenerate ``<out_dir>/report/`` from the cells' results; returns the path of ``report.md``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GridWarning)  # the run showed them; the report reads the copy
        grid = load_grid(out_dir / GRID_COPY, check_fragments=False)
    rows = load_rows(out_dir)
    folder = out_dir / REPORT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    _write_tables(rows, folder)
    _write_hparams(rows, folder / "tensorboard")
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
    groups = _groups(kept)
    header = ["cell", "n", *metrics]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, members in groups.items():
        done = [row for row in members if row.finished]
        cells = [label, str(len(done))]
        for metric in metrics:
            values = [row.metrics[metric] for row in done if _finite(row.metrics.get(metric))]
            cells.append(_format_summary(values))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += _tests(grid, kept, metrics)
    lines += _figures(grid, kept, stage, out_dir, folder)
    lines += _curves(grid, kept, stage, out_dir, folder)
    return lines


def _tests(grid: Grid, rows: list[Row], metrics: list[str]) -> list[str]:
    lines: list[str] = []
    tested = list(dict.fromkeys(_test_metric(m) for m in metrics if m != "steps"))
    groups = _groups(rows)
    for compared, baseline, pairs in _baseline_pairs(grid, groups):
        lines += [f"Paired tests against `{compared}={baseline}` over seeds (candidate - baseline; negative is "
                  "better for losses and perplexities):", "",
                  "| cell | metric | n | mean diff | p (t) | p (Wilcoxon) | d_z |", "|---|---|---|---|---|---|---|"]
        for label, base in pairs:
            base_by_seed = {row.seed: row for row in groups[base] if row.finished}
            for test_metric in tested:
                values = [(row.metrics[test_metric], base_by_seed[row.seed].metrics[test_metric])
                          for row in groups[label] if row.finished and row.seed in base_by_seed
                          and _finite(row.metrics.get(test_metric))
                          and _finite(base_by_seed[row.seed].metrics.get(test_metric))]
                if not values:
                    continue
                test = paired_test([a for a, _ in values], [b for _, b in values])
                wilcoxon = _p(test.wilcoxon_pvalue) if test.wilcoxon_pvalue is not None else f"n < {WILCOXON_MIN_PAIRS}"
                lines.append(f"| {label} | {test_metric} | {test.n} | {test.mean_diff:+.4g} | {_p(test.t_pvalue)} | "
                             f"{wilcoxon} | {_num(test.cohens_dz)} |")
        lines.append("")
    return lines


def _baseline_pairs(grid: Grid, groups: dict[str, list[Row]]) -> list[tuple[str, str, list[tuple[str, str]]]]:
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
            if _finite(entry["perplexity"]):
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


def _curves(grid: Grid, rows: list[Row], stage: str, out_dir: Path, folder: Path) -> list[str]:
    """Validation over training: figure, CSV, and per tag a table at a few steps with paired differences against each
    baseline (the seeds paired as in the main tests)."""
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
    pairs = [pair for _, _, pairs in _baseline_pairs(grid, _groups(rows)) for pair in pairs]
    for tag, by_label in curves.items():
        steps = table_steps(by_label)
        lines += [f"`{tag}` by step:", "", "| cell | " + " | ".join(map(str, steps)) + " |",
                  "|" + "---|" * (len(steps) + 1)]
        for label, by_step in by_label.items():
            cells = [_num(float(np.mean(list(by_step[step].values())))) for step in steps]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        for label, base in pairs:
            if label not in by_label or base not in by_label:
                continue
            cells = []
            for step in steps:
                ours, theirs = by_label[label][step], by_label[base][step]
                seeds = sorted(set(ours) & set(theirs))
                test = paired_test([ours[s] for s in seeds], [theirs[s] for s in seeds]) if len(seeds) > 1 else None
                cells.append("-" if test is None else f"{test.mean_diff:+.3f} (p {_p(test.t_pvalue)})")
            lines.append(f"| {label} - {base} | " + " | ".join(cells) + " |")
        lines.append("")
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
        for label, members in _groups(rows).items():
            done = [row for row in members if row.finished and _finite(row.metrics.get(axis.select))]
            key = members[0].others(axis.name)
            mark = "yes" if key in chosen and chosen[key][0] == members[0].levels[axis.name] else ""
            lines.append(f"| {label} | {len(done)} | "
                         f"{_format_summary([row.metrics[axis.select] for row in done])} | {mark} |")
        lines.append("")
    lines += ["## Appendix: per-seed values", "", "Every metric of every cell and seed: `metrics.csv` (and "
              "`metrics.jsonl`) beside this file.", ""]
    return lines


def _groups(rows: list[Row]) -> dict[str, list[Row]]:
    """Rows by label (the seeds of one cell), in first-seen order."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.label(), []).append(row)
    return groups


def _metric_columns(grid: Grid, rows: list[Row]) -> list[str]:
    if grid.metrics:
        return list(grid.metrics)
    available = list(dict.fromkeys(name for row in rows for name in row.metrics))
    evaluated = [name for name in available if PPL.match(name) or name.startswith("passkey")]
    return [m for m in TRAINING_METRICS if m in available] + evaluated


def _test_metric(metric: str) -> str:
    match = PPL.match(metric)
    if match:
        return f"nll@{match.group(1)}x"
    return {"val/perplexity": "val/loss", "train/perplexity": "train/loss"}.get(metric, metric)


def _format_summary(values: list[float]) -> str:
    if not values:
        return "-"
    summary = summarize(values)
    if summary.n == 1:
        return f"{_num(summary.mean)} (1 seed)"
    return f"{_num(summary.mean)} ± {summary.std:.2g} [{_num(summary.ci_low)}, {_num(summary.ci_high)}]"


def _num(value: float) -> str:
    if not math.isfinite(value):
        return "nan"
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"


def _p(value: float) -> str:
    return "nan" if not math.isfinite(value) else (f"{value:.3g}" if value >= 1e-4 else f"{value:.1e}")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _write_tables(rows: list[Row], folder: Path) -> None:
    axes = list(dict.fromkeys(axis for row in rows for axis in row.levels))
    metrics = list(dict.fromkeys(name for row in rows for name in row.metrics))
    with (folder / "metrics.jsonl").open("w") as stream:
        for row in rows:
            stream.write(json.dumps({**asdict(row), **asdict(row.result)}) + "\n")
    with (folder / "metrics.csv").open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["cell_id", "stage", *axes, "seed", "status", *metrics, "train_s", "eval_s", "error"])
        for row in rows:
            result = row.result
            writer.writerow([row.cell_id, row.stage, *(row.levels.get(a, "") for a in axes), row.seed, result.status,
                             *(row.metrics.get(m, "") for m in metrics), result.wall_s.get("train", ""),
                             result.wall_s.get("eval", ""), result.error or ""])


def _write_hparams(rows: list[Row], folder: Path) -> None:
    """One hparams record per finished cell (levels, seed, stage -> its metrics) for TensorBoard's HPARAMS tab."""
    shutil.rmtree(folder, ignore_errors=True)
    for row in rows:
        if not row.finished:
            continue
        hparams = {**row.levels, "seed": row.seed, "stage": row.stage}
        metrics = {f"hparam/{name}": value for name, value in row.metrics.items() if _finite(value)}
        with SummaryWriter(log_dir=str(folder / row.cell_id)) as writer:
            for summary in hparams_summaries(hparams, metrics):  # add_hparams would open a second writer
                writer.file_writer.add_summary(summary)
            for name, value in metrics.items():
                writer.add_scalar(name, value)


def _history(out_dir: Path) -> list[dict[str, Any]]:
    path = out_dir / HISTORY_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _run_record(out_dir: Path, rows: list[Row]) -> dict[str, Any] | None:
    for row in rows:
        for path in sorted(run_dir(out_dir, row.cell_id).glob("run_record_*.json")):
            return json.loads(path.read_text())  # any stage's record: the machine and versions are the same
    return None

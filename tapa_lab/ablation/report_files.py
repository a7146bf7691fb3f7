"""The report's machine-readable files: every metric of every cell and seed (``metrics.csv``, ``metrics.jsonl``) and
one TensorBoard hparams record per finished cell (``tensorboard/``)."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import asdict
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries

from tapa_lab.ablation.report_format import is_finite
from tapa_lab.ablation.results import Row


def write_tables(rows: list[Row], folder: Path) -> None:
    """``metrics.jsonl`` (one row and its result per line) and ``metrics.csv`` (levels, seed, status, every metric,
    seconds, error) in ``folder``."""
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


def write_hparams(rows: list[Row], folder: Path) -> None:
    """One hparams record per finished cell (levels, seed, stage -> its metrics) for TensorBoard's HPARAMS tab."""
    shutil.rmtree(folder, ignore_errors=True)
    for row in rows:
        if not row.finished:
            continue
        hparams = {**row.levels, "seed": row.seed, "stage": row.stage}
        metrics = {f"hparam/{name}": value for name, value in row.metrics.items() if is_finite(value)}
        with SummaryWriter(log_dir=str(folder / row.cell_id)) as writer:
            for summary in hparams_summaries(hparams, metrics):  # add_hparams would open a second writer
                writer.file_writer.add_summary(summary)
            for name, value in metrics.items():
                writer.add_scalar(name, value)

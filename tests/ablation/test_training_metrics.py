"""The runner reads each cell's training metrics, validation at several lengths included, from metrics.jsonl."""

from __future__ import annotations

import json

from tapa_lab.ablation.cell_run import training_metrics
from tapa_lab.lit.metrics_file import METRICS_FILE


def test_validation_losses_at_every_length_are_read_with_their_best(tmp_path):
    lines = [{"step": 0, "epoch": 0, "train/loss": 5.0},
             {"step": 1, "epoch": 0, "train/loss": 4.0},
             {"step": 1, "epoch": 0, "val/loss": 3.0, "val/loss@1x": 3.0, "val/loss@16x": 6.0},
             {"step": 3, "epoch": 0, "train/loss": 2.5},
             {"step": 3, "epoch": 0, "val/loss": 2.0, "val/loss@1x": 2.0, "val/loss@16x": 7.0, "lr-AdamW": 1e-3}]
    (tmp_path / METRICS_FILE).write_text("".join(json.dumps(line) + "\n" for line in lines))
    metrics = training_metrics(tmp_path)
    assert metrics["val/loss@16x"] == 7.0 and metrics["val/loss@16x_best"] == 6.0
    assert metrics["val/loss"] == 2.0 and metrics["val/loss_best"] == 2.0 and metrics["val/loss@1x"] == 2.0
    assert metrics["train/loss"] == 2.5 and metrics["steps"] == 4.0
    assert "lr-AdamW" not in metrics and "epoch" not in metrics

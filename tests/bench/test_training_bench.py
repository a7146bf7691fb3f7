"""The training-throughput benchmark runs end to end on CPU and writes its table."""

from __future__ import annotations

import json
from pathlib import Path

from tapa_lab.__main__ import main

REPO = Path(__file__).resolve().parents[2]


def test_bench_training_writes_json_and_markdown(tmp_path):
    main(["bench", "training", "--model_config", str(REPO / "experiments" / "model" / "tiny.yaml"),
          "--posencs", "[rope, tapa]", "--seq_lens", "[32]", "--tokens_per_batch", "64", "--steps", "1",
          "--warmup_steps", "0", "--out_dir", str(tmp_path)])
    results = json.loads((tmp_path / "training.json").read_text())["results"]
    assert [(r["posenc"], r["seq_len"], r["batch_size"]) for r in results] == [("rope", 32, 2), ("tapa", 32, 2)]
    assert all(r["tokens_per_s"] > 0 and r["step_ms"] > 0 for r in results)
    table = (tmp_path / "training.md").read_text()
    assert "| tapa | 32 | 2 |" in table and "x RoPE" in table

"""The attention benchmark runs on CPU with a tiny configuration and writes its JSON and markdown table."""

from __future__ import annotations

import json
from pathlib import Path

from tapa_lab.bench.attention import CPU_IMPLEMENTATIONS, bench_attention, causal_attention_flops


def test_flop_convention_is_flashattention_causal() -> None:
    assert causal_attention_flops(batch=2, heads=3, seq_len=10, head_dim=4) == 4 * 2 * 3 * 100 * 4 / 2


def test_cpu_smoke_run_writes_json_and_table(tmp_path: Path) -> None:
    results = bench_attention(device="cpu", seq_lens=[48, 64], head_dims=[16], n_heads=2, tokens_per_batch=128,
                              dtype="float32", max_naive_len=48, warmup_ms=1, rep_ms=1, out_dir=str(tmp_path))
    assert len(results) == 2 * len(CPU_IMPLEMENTATIONS)
    statuses = {(r["implementation"], r["seq_len"]): r["status"] for r in results}
    assert statuses[("tapa-naive", 64)].startswith("skipped")
    assert all(status == "ok" for key, status in statuses.items() if key != ("tapa-naive", 64))
    assert all(r["fwd_tflops"] > 0 and r["fwd_bwd_ms"] > 0 for r in results if r["status"] == "ok")
    table = (tmp_path / "attention.md").read_text()
    assert table.startswith("Causal attention on ") and "| tapa-torch | 64 | 16 | 2 |" in table
    assert json.loads((tmp_path / "attention.json").read_text())["results"] == results

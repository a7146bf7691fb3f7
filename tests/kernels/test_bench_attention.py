"""The attention benchmark runs on CPU with a tiny configuration and writes its JSON and markdown table; its RoPE +
SDPA baselines, eager and compiled, compute RoPE + SDPA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tapa_lab.bench.attention import (
    CPU_IMPLEMENTATIONS,
    _attention,
    bench_attention,
    causal_attention_flops,
    rope_tables,
)
from tapa_lab.kernels.rope_torch import rotate


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


@pytest.mark.slow
def test_compiled_rope_sdpa_baseline_runs_and_computes_rope_sdpa(tmp_path: Path) -> None:
    """The compiled RoPE + SDPA baseline (inductor on CPU here; its GPU numbers come from a GPU run) times both passes
    and computes what the eager RoPE + SDPA computes."""
    results = bench_attention(implementations=["rope-sdpa", "rope-sdpa-compiled"], device="cpu", seq_lens=[32],
                              head_dims=[16], n_heads=2, tokens_per_batch=64, dtype="float32", warmup_ms=1, rep_ms=1,
                              out_dir=str(tmp_path))
    assert [(r["implementation"], r["status"]) for r in results] == [("rope-sdpa", "ok"), ("rope-sdpa-compiled", "ok")]
    q, k, v = torch.randn(3, 2, 2, 32, 16, generator=torch.Generator().manual_seed(0)).unbind(0)
    cos, sin = rope_tables(32, 16, q.device)
    expected = F.scaled_dot_product_attention(rotate(q, cos, sin), rotate(k, cos, sin), v, is_causal=True)
    for name in ("rope-sdpa", "rope-sdpa-compiled"):
        torch.testing.assert_close(_attention(name, 16, 0.1, 0.5)(q, k, v), expected, msg=name)


def test_flex_and_sdpa_baselines_compute_causal_gqa_attention() -> None:
    """FlexAttention (eager on CPU, forward only there) and SDPA with 4 query heads on 2 key/value heads."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 4, 32, 16, generator=gen)
    k, v = torch.randn(2, 1, 2, 32, 16, generator=gen).unbind(0)
    expected = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), is_causal=True)
    for name in ("flex", "sdpa-flash", "sdpa-math"):
        with torch.no_grad():
            torch.testing.assert_close(_attention(name, 16, 0.1, 0.5)(q, k, v), expected, msg=name)


def test_time_budget_skips_the_cells_after_it(tmp_path: Path) -> None:
    results = bench_attention(implementations=["sdpa-math"], device="cpu", seq_lens=[16, 32], head_dims=[16],
                              n_heads=4, kv_heads=2, tokens_per_batch=32, dtype="float32", warmup_ms=1, rep_ms=1,
                              time_budget_s=0.0, out_dir=str(tmp_path))
    assert [r["status"] for r in results] == ["skipped: time_budget_s = 0.0 spent"] * 2
    assert results[0]["kv_heads"] == 2

"""The GPU acceptance run without a GPU: its modules import with ``datasets`` and ``jsonargparse`` blocked (the device
image has neither), its CPU dry run passes end to end and writes its three files, a part past its time box is killed
and recorded, and the targets judge what they are given (a missing measurement fails)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tapa_lab.bench.acceptance import _run_part
from tapa_lab.bench.acceptance_page import render
from tapa_lab.bench.acceptance_settings import GPU
from tapa_lab.bench.acceptance_targets import attention_targets, evaluate, fit_targets, kernel_targets

REPO = Path(__file__).resolve().parents[2]


def _blocked_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose PYTHONPATH shadows ``datasets`` and ``jsonargparse`` with packages that fail to import
    (inherited by every process the run starts: its parts, pytest, the spawned training cells)."""
    for name in ("datasets", "jsonargparse"):
        (tmp_path / "blocked" / name).mkdir(parents=True)
        (tmp_path / "blocked" / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked')\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "blocked"), str(REPO)])}


def test_modules_import_without_datasets_or_jsonargparse(tmp_path: Path) -> None:
    code = ("import tapa_lab.bench.acceptance, tapa_lab.bench.acceptance_parts, sys; "
            "import importlib.util as u; assert u.find_spec('datasets') is not None; "
            "assert 'datasets' not in sys.modules and 'jsonargparse' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_blocked_env(tmp_path), check=True)


def test_dry_run_of_the_fit_part_passes_without_datasets(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "tapa_lab.bench.acceptance", "--out", str(out), "--dry-run",
                           "--parts", "fit"], cwd=REPO, env=_blocked_env(tmp_path), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads((out / "acceptance.json").read_text())
    assert record["parts"]["fit"]["status"] == "ok" and record["passed"]
    assert [t["target"] for t in record["targets"]] == ["TAPA fit: loss falls"]
    assert sorted(p.name for p in out.iterdir()) == ["acceptance.json", "acceptance.log", "acceptance.md"]
    assert (out / "acceptance.md").read_text().startswith("# CPU DRY RUN")


@pytest.mark.slow
def test_whole_dry_run_passes_without_datasets(tmp_path: Path) -> None:
    """Every part on CPU (Triton's interpreter): 100-190 s on the shared 2-core machine."""
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "tapa_lab.bench.acceptance", "--out", str(out), "--dry-run"],
                          cwd=REPO, env=_blocked_env(tmp_path), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads((out / "acceptance.json").read_text())
    assert {name: part["status"] for name, part in record["parts"].items()} == dict.fromkeys(
        ("kernels", "attention", "training", "fit"), "ok")
    kernels = record["parts"]["kernels"]["result"]
    assert kernels["counts"]["PASSED"] >= 10 and "FAILED" not in kernels["counts"]
    assert any("relative_error_out" in d["properties"] for d in kernels["details"].values())
    cells = record["parts"]["attention"]["result"]["results"]
    assert all(c["status"] == "ok" for c in cells if c["implementation"] != "tapa-naive" or c["seq_len"] <= 32)
    assert all(0 < c["fwd_bwd_peak_fraction"] for c in cells if c["status"] == "ok")
    assert not [t for t in record["targets"] if t["judged"] and not t["passed"]]


def test_a_part_past_its_time_box_is_killed_and_recorded(tmp_path: Path) -> None:
    part = _run_part("fit", tmp_path, dry_run=True, budget_s=-14.0, log=tmp_path / "log")  # 1 s with the grace
    assert part["status"] == "timed out" and part["result"] is None and "killed" in part["error"]


def _cell(name: str, d: int, n: int, ms: float, status: str = "ok") -> dict:
    flops = 3.5 * 4 * n * n * d / 2
    return {"implementation": name, "head_dim": d, "seq_len": n, "batch": 1, "heads": 16, "kv_heads": 4,
            "status": status, "fwd_bwd_ms": ms, "fwd_bwd_tflops": flops / ms / 1e9}


def test_attention_targets_judge_ratios_and_missing_cells() -> None:
    cells = []
    for d in (128, 64):
        for n in GPU.attention["seq_lens"]:
            cells += [_cell("tapa-triton", d, n, 1.5), _cell("sdpa-flash", d, n, 1.0), _cell("sdpa-cudnn", d, n, 0.8)]
        cells.append(_cell("tapa-naive", d, 8192, 20.0 if d == 128 else 10.0))
    cells = [c for c in cells if not (c["implementation"] == "tapa-triton" and c["head_dim"] == 64
                                      and c["seq_len"] == 65536)]
    rows = {r["target"]: r for r in attention_targets({"results": cells}, GPU)}
    ratio = rows["TAPA fwd+bwd >= 0.6x best SDPA, D=128, L=4096"]
    assert not ratio["passed"] and ratio["value"] == "0.53x sdpa-cudnn"  # 0.8 / 1.5 against the faster backend
    assert rows["TAPA fwd+bwd >= 10x materialised TAPA, D=128, L=8192"]["passed"]  # 20 / 1.5 = 13x
    assert not rows["TAPA fwd+bwd >= 10x materialised TAPA, D=64, L=8192"]["passed"]  # 6.7x
    assert rows["TAPA fwd+bwd runs at L=65536, D=128"]["passed"]
    assert not rows["TAPA fwd+bwd runs at L=65536, D=64"]["passed"]  # the cell is missing
    assert "TAPA fwd+bwd >= 0.6x best SDPA, D=64, L=2048" not in rows  # below long_len: not a target
    assert not any(r["passed"] for r in attention_targets(None, GPU))


def test_kernel_fit_and_missing_part_targets() -> None:
    ran = {"counts": {"PASSED": 20, "SKIPPED": 1}, "timed_out": False, "returncode": 0}
    assert kernel_targets(ran)[0]["passed"]
    assert not kernel_targets({**ran, "counts": {"PASSED": 20, "FAILED": 1}, "returncode": 1})[0]["passed"]
    assert not kernel_targets({**ran, "timed_out": True})[0]["passed"]
    assert not kernel_targets({**ran, "counts": {"SKIPPED": 5}})[0]["passed"]  # nothing ran: no CUDA
    fit = {"first_loss": 5.5, "last_loss": 3.0, "steps": 200, "loss_fell": True}
    assert fit_targets(fit)[0]["passed"] and not fit_targets({**fit, "loss_fell": False})[0]["passed"]
    rows = evaluate({"kernels": None, "fit": None}, GPU)
    assert [r["passed"] for r in rows] == [False, False] and all(r["judged"] for r in rows)


def test_page_names_the_machine_and_a_failed_part() -> None:
    record = {"environment": {"machine": "NVIDIA H200", "torch": "2.11.0"}, "dry_run": False, "started": "now",
              "git": "abc", "command": "python -m tapa_lab.bench.acceptance", "passed": False, "seconds": 1.0,
              "parts": {"fit": {"status": "error", "seconds": 1.0, "budget_s": 55, "result": None,
                                "error": "Traceback ... RuntimeError: boom"}},
              "targets": fit_targets(None)}
    page = render(record)
    assert page.startswith("# GPU acceptance run on NVIDIA H200") and "**FAIL**" in page and "boom" in page

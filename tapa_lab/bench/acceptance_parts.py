"""The four parts of the GPU acceptance run, each run in its own process by :mod:`tapa_lab.bench.acceptance`.

``python -m tapa_lab.bench.acceptance_parts PART SCRATCH [--dry-run]`` runs one part and writes ``SCRATCH/PART.json``
(``{"result": ..., "error": traceback or null, "environment": ...}``). A process per part keeps a CUDA error of one
part (a sticky illegal-address error poisons the whole context) from failing the others, lets the caller kill a part
at its time box, and measures each part's peak memory alone. Nothing here imports ``datasets`` or ``jsonargparse``
(the device image has neither): presets and PE fragments are read as plain YAML.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

import torch
import yaml
from rich.console import Console

from tapa_lab.bench.acceptance_settings import DRY_RUN, GPU, Settings
from tapa_lab.bench.attention import DTYPES, bench_attention
from tapa_lab.bench.fixture_fit import fit_fixture
from tapa_lab.bench.gemm_peak import gemm_tflops
from tapa_lab.bench.training import measure_cells
from tapa_lab.errors import require
from tapa_lab.model import DecoderConfig
from tapa_lab.posenc import PositionalEncoding

REPO = Path(__file__).resolve().parents[2]
TEST_LINE = re.compile(r"^(tests/\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)")


def plain_architecture(preset: str) -> DecoderConfig:
    """``model.architecture`` of a preset YAML, as a validated :class:`DecoderConfig` (no jsonargparse)."""
    model = yaml.safe_load((REPO / preset).read_text()).get("model") or {}
    config = DecoderConfig(**(model.get("architecture") or {}))
    config.validate()
    return config


def plain_posenc(stem: str) -> dict:
    """``{"class_path", "init_args"}`` of ``experiments/posenc/<stem>.yaml`` (no jsonargparse)."""
    posenc = yaml.safe_load((REPO / "experiments" / "posenc" / f"{stem}.yaml").read_text())["model"]["posenc"]
    return {"class_path": posenc["class_path"], "init_args": dict(posenc.get("init_args") or {})}


def build_posenc(config: dict) -> PositionalEncoding:
    """The PE of a ``{"class_path", "init_args"}`` config."""
    module, name = config["class_path"].rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(**config["init_args"])


def environment(device: str) -> dict:
    """The machine and the versions the part ran with."""
    machine = (torch.cuda.get_device_name() if device == "cuda"
               else f"{platform.processor() or 'cpu'} ({torch.get_num_threads()} threads)")
    return {"machine": machine, "torch": torch.__version__, "triton": importlib.metadata.version("triton"),
            "python": platform.python_version(), "cuda": torch.version.cuda,
            "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1"}


def kernels(settings: Settings, scratch: Path, budget_s: float) -> dict:
    """The kernel tests under pytest on the part's device (quick autotuning); results read from its -v lines and
    JUnit XML (each test's relative errors are properties there). A time-out keeps the tests finished so far."""
    log, junit = scratch / "kernel_tests.log", scratch / "kernel_tests.xml"
    command = [sys.executable, "-m", "pytest", *settings.kernel_tests, "-v", "-p", "no:cacheprovider",
               f"--junitxml={junit}"]
    env = {**os.environ, "TAPA_LAB_QUICK_TUNE": "1"}
    timed_out = False
    with log.open("w") as stream:
        process = subprocess.Popen(command, cwd=REPO, stdout=stream, stderr=subprocess.STDOUT, env=env)
        try:
            process.wait(timeout=budget_s - 10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            timed_out = True
    outcomes = {m[1]: m[2] for m in map(TEST_LINE.match, log.read_text().splitlines()) if m}
    details = {}
    if junit.is_file():
        for case in ET.parse(junit).getroot().iter("testcase"):
            failure = case.find("failure") if case.find("failure") is not None else case.find("error")
            details[case.get("name")] = {
                "properties": {p.get("name"): float(p.get("value", "nan")) for p in case.iter("property")},
                "message": None if failure is None else (failure.get("message") or "")[:400]}
    counts = {outcome: list(outcomes.values()).count(outcome) for outcome in sorted(set(outcomes.values()))}
    return {"command": " ".join(command[1:]), "returncode": process.returncode, "timed_out": timed_out,
            "counts": counts, "outcomes": outcomes, "details": details,
            "log_tail": "\n".join(log.read_text().splitlines()[-30:])}


def attention(settings: Settings, scratch: Path, budget_s: float) -> dict:
    """The measured GEMM peak, then the attention benchmark (no cell starts in the last quarter of the box), with
    each cell's TFLOP/s as a fraction of that peak."""
    device = torch.device(settings.device)
    size, dtype = settings.gemm
    start = time.monotonic()
    peak = gemm_tflops(size, DTYPES[dtype], device)
    remaining = 0.75 * budget_s - (time.monotonic() - start)
    results = bench_attention(**settings.attention, device=settings.device, time_budget_s=remaining,
                              out_dir=str(scratch / "attention"))
    for cell in results:
        for pass_ in ("fwd", "fwd_bwd"):
            if cell.get(f"{pass_}_tflops") is not None:
                cell[f"{pass_}_peak_fraction"] = cell[f"{pass_}_tflops"] / peak
    return {"gemm": {"size": size, "dtype": dtype, "tflops": peak}, "results": results}


def training(settings: Settings, scratch: Path, budget_s: float) -> dict:
    """Training tokens/s of the preset per PE (bf16 autocast on CUDA), each cell in a fresh process."""
    train = settings.train
    pes = {stem: plain_posenc(stem) for stem in settings.posencs}
    results = measure_cells(plain_architecture(settings.model_config), pes, [train["seq_len"]],
                            train["tokens_per_batch"], train["steps"], train["warmup_steps"], settings.device, "auto",
                            False, Console())
    return {"model_config": settings.model_config, **train, "results": results}


def fit(settings: Settings, scratch: Path, budget_s: float) -> dict:
    """A fit of TAPA (experiments/posenc/tapa.yaml) at the preset's shape on the fixture corpus: its loss must fall."""
    posenc = build_posenc(plain_posenc("tapa"))
    result = fit_fixture(plain_architecture(settings.model_config), posenc, device=settings.device,
                         bf16=settings.bf16, **settings.fit)
    return {"model_config": settings.model_config, "posenc": "tapa", "bf16": settings.bf16, **settings.fit, **result}


RUNNERS = {"kernels": kernels, "attention": attention, "training": training, "fit": fit}
PARTS = tuple(RUNNERS)


def run_part(name: str, scratch: Path, dry_run: bool) -> None:
    """Run one part and write ``scratch/<name>.json``; an exception is recorded there, not raised."""
    require(name in PARTS, "part", f"one of {', '.join(PARTS)}", name)
    settings = DRY_RUN if dry_run else GPU
    record: dict = {"result": None, "error": None}
    try:
        record["environment"] = environment(settings.device)
        record["result"] = RUNNERS[name](settings, scratch, settings.budgets_s[name])
    except Exception:  # recorded: the caller reports the part as failed and runs the others
        record["error"] = traceback.format_exc()
    (scratch / f"{name}.json").write_text(json.dumps(record, indent=2, default=str))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Run one part of the GPU acceptance run (see acceptance.py).")
    parser.add_argument("part", choices=("kernels", "attention", "training", "fit"))
    parser.add_argument("scratch", type=Path)
    parser.add_argument("--dry-run", action="store_true")
    arguments = parser.parse_args()
    run_part(arguments.part, arguments.scratch, arguments.dry_run)

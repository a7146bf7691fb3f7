"""The GPU acceptance run (issue 18): one command that checks a lent H100/H200 end to end in at most 8 minutes.

    PYTHONPATH=. python -m tapa_lab.bench.acceptance --out DIR            # on the GPU machine, from a source checkout
    PYTHONPATH=. python -m tapa_lab.bench.acceptance --out DIR --dry-run  # CPU: interpreter, tiny shapes (a test)

Parts, each in its own process with a time box (:mod:`tapa_lab.bench.acceptance_parts`; a part that fails or times
out is recorded and the others still run):

1. kernels: the kernel tests on CUDA (tests/kernels/test_kernel_accuracy.py: fp32/fp16/bf16 against fp64 with
   METHOD.md's relative-error bounds on NaN-poisoned outputs; test_gpu_kernels.py);
2. attention: a measured bf16 GEMM peak, then forward and forward+backward of the lab's TAPA kernel, SDPA (flash and
   cuDNN backends), FlexAttention, the lab's blockwise PyTorch TAPA and the materialised reference at L = 1K..64K,
   D = 128 and 64, causal, GQA 16/4: FlashAttention-equivalent TFLOP/s and the fraction of the peak;
3. training: tokens/s of the ``base`` preset in bf16 autocast for RoPE, TAPA and ALiBi;
4. fit: 200 steps of the ``base`` shape with TAPA on the committed fixture corpus; the loss must fall.

Writes ``DIR/acceptance.json`` (everything), ``DIR/acceptance.md`` (the page, naming the GPU) and ``DIR/acceptance.log``
(every part's output): three files, inside the device tool's limits on what comes back. Exit status 0 when every
judged target passes (targets: :mod:`tapa_lab.bench.acceptance_targets`), 1 otherwise. It needs neither ``datasets``
nor ``jsonargparse`` nor a network (the device image has none of them), only the source checkout (the tests and the
fixture corpus).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tapa_lab.bench.acceptance_page import render
from tapa_lab.bench.acceptance_parts import PARTS, REPO
from tapa_lab.bench.acceptance_settings import DRY_RUN, GPU
from tapa_lab.bench.acceptance_targets import evaluate

GRACE_S = 15


def _git() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return f"{commit}{' (dirty)' if dirty else ''}" if commit else "unknown (no git metadata)"


def _run_part(name: str, scratch: Path, dry_run: bool, budget_s: float, log: Path) -> dict:
    """One part in a new process session (killed with its children past the box); its record or a failure."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    if dry_run:
        env["TRITON_INTERPRET"] = "1"
    command = [sys.executable, "-m", "tapa_lab.bench.acceptance_parts", name, str(scratch)]
    start = time.monotonic()
    with log.open("a") as stream:
        stream.write(f"\n===== part {name} (time box {budget_s:.0f} s) =====\n")
        stream.flush()
        process = subprocess.Popen(command + (["--dry-run"] if dry_run else []), cwd=REPO, env=env, stdout=stream,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            process.wait(timeout=budget_s + GRACE_S)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            timed_out = True
    seconds = time.monotonic() - start
    path = scratch / f"{name}.json"
    record = json.loads(path.read_text()) if path.is_file() else {"result": None, "environment": {}}
    if timed_out:
        record.update(status="timed out", error=f"killed after {seconds:.0f} s (time box {budget_s:.0f} s)")
    elif record.get("error") or record["result"] is None:
        record.setdefault("error", None)
        record["error"] = record["error"] or f"the part's process exited with {process.returncode}, writing nothing"
        record["status"] = "error"
    else:
        record["status"] = "ok"
    return {**record, "seconds": seconds, "budget_s": budget_s}


def run(out: Path, dry_run: bool, parts: list[str]) -> dict:
    """Run the parts, judge the targets, write the JSON, page and log under ``out``; return the record."""
    settings = DRY_RUN if dry_run else GPU
    out.mkdir(parents=True, exist_ok=True)
    log = out / "acceptance.log"
    log.write_text("")
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    start = time.monotonic()
    part_records: dict[str, dict[str, Any]] = {}
    record: dict[str, Any] = {"dry_run": dry_run, "started": started, "git": _git(),
                              "command": "python -m tapa_lab.bench.acceptance" + (" --dry-run" if dry_run else "")
                              + ("" if parts == list(PARTS) else f" --parts {','.join(parts)}"),
                              "parts": part_records}
    with tempfile.TemporaryDirectory(prefix="tapa-acceptance-") as scratch:
        for name in parts:
            part_records[name] = _run_part(name, Path(scratch), dry_run, settings.budgets_s[name], log)
            print(f"part {name}: {part_records[name]['status']} in {part_records[name]['seconds']:.0f} s",
                  flush=True)
        with log.open("a") as stream:  # the kernel tests' own log, for the failures' tracebacks
            kernel_log = Path(scratch) / "kernel_tests.log"
            if kernel_log.is_file():
                stream.write("\n===== pytest output of the kernel part =====\n" + kernel_log.read_text())
    record["environment"] = next((p["environment"] for p in part_records.values() if p.get("environment")), {})
    record["targets"] = evaluate({name: part["result"] for name, part in part_records.items()}, settings)
    record["passed"] = (all(p["status"] == "ok" for p in part_records.values())
                        and all(t["passed"] for t in record["targets"] if t["judged"]))
    record["seconds"] = time.monotonic() - start
    (out / "acceptance.json").write_text(json.dumps(record, indent=2, default=str))
    (out / "acceptance.md").write_text(render(record))
    return record


def main(argv: list[str] | None = None) -> int:
    """CLI: ``--out DIR [--dry-run] [--parts kernels,attention,training,fit]``; exit status 0 iff the run passed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for acceptance.json, .md and .log")
    parser.add_argument("--dry-run", action="store_true", help="CPU, Triton interpreter, tiny shapes")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    arguments = parser.parse_args(argv)
    parts = [p.strip() for p in arguments.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        parser.error(f"--parts: {unknown or 'nothing'} is not allowed; give a comma-separated subset of "
                     f"{', '.join(PARTS)}")
    record = run(arguments.out, arguments.dry_run, parts)
    for target in record["targets"]:
        verdict = "pass" if target["passed"] else ("FAIL" if target["judged"] else "fail (not judged)")
        print(f"{verdict:>18}  {target['target']}: {target['value']}")
    print(f"{'PASS' if record['passed'] else 'FAIL'}: wrote {arguments.out / 'acceptance.md'}")
    return 0 if record["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

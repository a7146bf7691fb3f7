"""``tapa-lab bench compile``: every Triton kernel of the lab compiled ahead of time for sm_80 and sm_90, on CPU.

For each compile (kernel, variant, target, head dim, dtype, configuration; :mod:`tapa_lab.kernels.aot_cases`): the
registers per thread and spills of its ``ptxas -v``, the shared memory it needs and whether it fits the target
(:mod:`tapa_lab.kernels.aot`). A compile that fails or does not fit makes the command exit with status 1: the autotune
lists must hold only configurations that launch. Spills are reported, not failures.
"""

from __future__ import annotations

import json
import platform
import time
from collections import defaultdict
from importlib.metadata import version
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tapa_lab.bench.table import write_report
from tapa_lab.errors import require
from tapa_lab.kernels.aot import compile_cases
from tapa_lab.kernels.aot_cases import DEFAULT_DTYPES, DTYPES, HEAD_DIMS, KERNELS, TARGETS, Case, matrix

HEADER = ["kernel", "variant", "target", "D", "dtype", "config", "regs", "spills B (st/ld)", "smem KB", "fits",
          "compile s"]
SUMMARY = ["kernel", "target", "D", "compiles", "fail or no fit", "max regs", "max smem KB", "spilling",
           "worst spill B"]


def _row(r: dict) -> list[str]:
    config = Case(**{k: r[k] for k in Case.__dataclass_fields__}).config
    cells = [r["kernel"], r["variant"], f"sm_{r['cc']}", str(r["head_dim"]), r["dtype"], config]
    if "error" in r:
        return cells + ["-", "-", "-", "ERROR", f"{r['compile_s']:.1f}"]
    return cells + [str(r["regs"]), f"{r['spill_stores']}/{r['spill_loads']}", f"{r['shared'] / 1024:.1f}",
                    "yes" if r["fits"] else "NO", f"{r['compile_s']:.1f}"]


def summarise(results: list[dict]) -> list[list[str]]:
    """One row per (kernel, target, head dim): compiles, failures, the largest registers/shared memory, spills."""
    groups = defaultdict(list)
    for r in results:
        groups[(r["kernel"], r["cc"], r["head_dim"])].append(r)
    rows = []
    for (kernel, cc, d), group in groups.items():
        ok = [r for r in group if "error" not in r]
        spilling = [r for r in ok if r["spill_stores"] or r["spill_loads"]]
        rows.append([kernel, f"sm_{cc}", str(d), str(len(group)), str(sum(not r["fits"] for r in group)),
                     str(max((r["regs"] for r in ok), default=0)),
                     f"{max((r['shared'] for r in ok), default=0) / 1024:.1f}", str(len(spilling)),
                     str(max((r["spill_stores"] + r["spill_loads"] for r in spilling), default=0))])
    return rows


def bench_compile(
    kernels: list[str] = list(KERNELS),  # noqa: B006 - read-only default shown in --help
    targets: list[int] = [80, 90],  # noqa: B006
    head_dims: list[int] = list(HEAD_DIMS),  # noqa: B006
    dtypes: list[str] = list(DEFAULT_DTYPES),  # noqa: B006
    full: bool = False,
    workers: int = 2,
    out_dir: str = "checkpoints/bench",
) -> list[dict]:
    """Compile every Triton kernel for real GPUs without one and report registers, spills and shared memory.

    Args:
        kernels: among fwd, bwd_dkdv, bwd_dq, bwd_preprocess, rope.
        targets: compute capabilities: 80 (A100), 90 (H100/H200).
        head_dims: head dims D of the model (TAPA splits them in halves).
        dtypes: fp16, bf16, fp32 (IEEE fp32 dots, as the launchers give fp32 inputs).
        full: every variant at every autotune configuration; default: every configuration of each score mode with
            GQA, and with every option on (document masking, GQA, learnable alpha), and every other variant at the
            first configuration.
        workers: compile processes.
        out_dir: where compile.json, compile.md and compile_summary.md are written (and, as they come,
            compile.partial.jsonl: the results of an interrupted run).

    Returns:
        One dict per compile (see :func:`tapa_lab.kernels.aot.compile_case`). Exits with status 1 if any compile
        fails or does not fit its target.
    """
    require(len(kernels) > 0 and set(kernels) <= set(KERNELS), "kernels", f"a non-empty subset of {list(KERNELS)}",
            kernels)
    require(len(targets) > 0 and set(targets) <= set(TARGETS), "targets", f"a non-empty subset of {list(TARGETS)}",
            targets)
    require(len(head_dims) > 0 and all(d in (32, 64, 128, 256) for d in head_dims), "head_dims",
            "a non-empty list among 32, 64, 128, 256", head_dims)
    require(len(dtypes) > 0 and set(dtypes) <= set(DTYPES), "dtypes", f"a non-empty subset of {list(DTYPES)}", dtypes)
    require(workers >= 1, "workers", ">= 1", workers)
    cases = matrix(kernels, targets, head_dims, dtypes, full)
    console = Console()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    partial = (out / "compile.partial.jsonl").open("w")  # each result as it comes: an interrupted run keeps them
    start = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("compiling", total=len(cases))

        def advance(result: dict) -> None:
            partial.write(json.dumps(result) + "\n")
            partial.flush()
            progress.update(task, advance=1, description=f"{result['kernel']} {result['variant']} sm_{result['cc']}")

        with partial:
            results, cpu_s = compile_cases(cases, workers, advance)
    wall_s = time.perf_counter() - start
    machine = f"{platform.processor() or platform.machine()}, triton {version('triton')}"
    title = (f"AOT compile of {len(cases)} kernels on {machine} ({workers} workers): {cpu_s:.0f} CPU s, "
             f"{wall_s:.0f} s wall")
    payload = {"machine": machine, "triton": version("triton"), "cases": len(cases), "cpu_s": cpu_s,
               "wall_s": wall_s, "workers": workers, "results": results}
    write_report(title, HEADER, [_row(r) for r in results], payload, out, "compile", console)
    write_report(title, SUMMARY, summarise(results), {"title": title}, out, "compile_summary", console)
    bad = [r for r in results if not r["fits"]]
    for r in bad:
        console.print(f"[red]does not launch[/red]: {' '.join(_row(r)[:6])}: {r.get('error', 'too large')}")
    if bad:
        raise SystemExit(1)
    return results

"""Ahead-of-time compilation of the lab's Triton kernels for real GPUs, on a machine without one.

``triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", cc, 32))`` runs Triton's whole
pipeline (TTIR, TTGIR, LLVM IR, PTX) and ``ptxas`` (the one Triton ships) to a cubin, with no driver. Per compile:
registers per thread and spills from the ``ptxas -v`` log of that compile (``knobs.nvidia.dump_ptxas_log``; a
compiled kernel's ``n_regs``/``n_spills`` are filled only when a driver loads it), the shared memory the launch needs
(the ``shared`` of the kernel's metadata), and whether it fits the target: shared memory within the largest dynamic
allocation of one block, at most 255 registers per thread, and the registers of the block within the 64K of an SM
(allocated in units of 8 per thread), else the launch fails with OutOfResources.

The compiles run in worker processes (``python -m tapa_lab.kernels.aot``: cases as JSON on stdin, one JSON result per
line on stdout) whose environment has no ``TRITON_INTERPRET`` (under the interpreter, ``triton.jit`` makes interpreter
objects that cannot be compiled) and a fresh Triton cache (every case really compiles and runs ptxas).
The cases: :mod:`tapa_lab.kernels.aot_cases`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import queue
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable

from tapa_lab.kernels.aot_cases import MAX_REGISTERS_PER_THREAD, REGISTERS_PER_SM, TARGETS, Case, specialisation

_USED = re.compile(r"Used (\d+) registers")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def parse_ptxas_log(log: str) -> dict[str, int]:
    """Registers per thread, spill stores/loads and stack frame (bytes) of the one entry function of a ``ptxas -v``
    log. Raises ``ValueError`` unless the log describes exactly one function."""
    used, frames = _USED.findall(log), _FRAME.findall(log)
    if len(used) != 1 or len(frames) != 1:
        raise ValueError(f"expected the ptxas -v log of one function, got {len(used)} register and {len(frames)} "
                         f"spill lines:\n{log}")
    stack, stores, loads = (int(x) for x in frames[0])
    return {"regs": int(used[0]), "spill_stores": stores, "spill_loads": loads, "stack": stack}


def fits(cc: int, shared: int, regs: int, warps: int) -> bool:
    """Whether a kernel of ``shared`` bytes and ``regs`` registers per thread launches with ``warps`` warps."""
    return (shared <= TARGETS[cc][1] and regs <= MAX_REGISTERS_PER_THREAD
            and -(-regs // 8) * 8 * 32 * warps <= REGISTERS_PER_SM)


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (ptxas)."""
    return sum(usage.ru_utime + usage.ru_stime
               for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))


def _kernel(name: str):
    """The ``JITFunction`` of a kernel (the one under its autotuner, if it has one)."""
    from triton.runtime.autotuner import Autotuner

    if name == "fwd":
        from tapa_lab.kernels.triton_fwd import _attn_fwd as kernel
    elif name == "bwd_dkdv":
        from tapa_lab.kernels.triton_bwd import _attn_bwd_dkdv as kernel
    elif name == "bwd_preprocess":
        from tapa_lab.kernels.triton_bwd import _attn_bwd_preprocess as kernel
    elif name == "bwd_dq":
        from tapa_lab.kernels.triton_bwd_dq import _attn_bwd_dq as kernel
    else:
        from tapa_lab.kernels.triton_rope import _rope_fwd as kernel
    return kernel.fn if isinstance(kernel, Autotuner) else kernel


def compile_case(case: Case) -> dict:
    """Compile one case (in a process without ``TRITON_INTERPRET``) and measure it.

    Returns:
        The case's fields, and ``regs``, ``spill_stores``, ``spill_loads``, ``stack``, ``shared`` (bytes), ``fits``,
        ``compile_s`` (wall), ``cpu_s`` (with ptxas), ``ptx_target``; or ``error`` (the compiler's message) and
        ``fits`` false.
    """
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = _kernel(case.kernel)
    signature, constexprs, divisible = specialisation(case)
    if sorted(signature) != sorted(fn.arg_names):
        raise ValueError(f"{case.kernel}: the case's arguments {sorted(set(signature) ^ set(fn.arg_names))} differ "
                         "from the kernel's parameters (aot_cases is out of date with the launcher)")
    names = list(fn.arg_names)
    attrs = {(names.index(name),): [["tt.divisibility", 16]] for name in divisible}
    source = ASTSource(fn, {name: signature[name] for name in names}, constexprs, attrs)
    knobs.nvidia.dump_ptxas_log = True
    log = io.StringIO()
    start, cpu = time.perf_counter(), _cpu_seconds()
    result = dataclasses.asdict(case)
    try:
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(source, target=GPUTarget("cuda", case.cc, 32),
                                      options={"num_warps": case.warps, "num_stages": case.stages})
    except Exception as error:  # noqa: BLE001 - any compiler failure is this case's result
        return result | {"error": f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}",
                         "fits": False, "compile_s": time.perf_counter() - start, "cpu_s": _cpu_seconds() - cpu}
    result |= parse_ptxas_log(log.getvalue())
    target = [line for line in compiled.asm["ptx"].splitlines() if line.startswith(".target")]
    return result | {"shared": compiled.metadata.shared, "compile_s": time.perf_counter() - start,
                     "cpu_s": _cpu_seconds() - cpu,
                     "ptx_target": target[0].split()[1] if target else "",
                     "fits": fits(case.cc, compiled.metadata.shared, result["regs"], case.warps)}


def _reader(stream, results: queue.Queue) -> None:
    for line in stream:
        results.put(json.loads(line))
    results.put(None)


def compile_cases(cases: list[Case], workers: int = 2, on_result: Callable[[dict], None] | None = None
                  ) -> tuple[list[dict], float]:
    """Compile ``cases`` in ``workers`` processes (round-robin shares), calling ``on_result`` as each finishes.

    Returns:
        ``(results in the order of cases, CPU seconds of the workers and their ptxas runs)``.
    """
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    shares = [cases[i::workers] for i in range(min(workers, len(cases)))]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    results: queue.Queue = queue.Queue()
    done = []
    with tempfile.TemporaryDirectory(prefix="tapa-aot-") as cache:
        env["TRITON_CACHE_DIR"] = cache
        processes = [subprocess.Popen([sys.executable, "-m", "tapa_lab.kernels.aot"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, env=env) for _ in shares]
        readers = [threading.Thread(target=_reader, args=(p.stdout, results), daemon=True) for p in processes]
        for process, share, reader in zip(processes, shares, readers, strict=True):
            reader.start()
            assert process.stdin is not None  # Popen(stdin=PIPE)
            process.stdin.write(json.dumps([dataclasses.asdict(case) for case in share]))
            process.stdin.close()
        running = len(processes)
        while running:
            result = results.get()
            if result is None:
                running -= 1
                continue
            done.append(result)
            if on_result is not None:
                on_result(result)
        codes = [process.wait() for process in processes]
    if any(codes):
        raise RuntimeError(f"an AOT compile worker failed (exit codes {codes}); its traceback is above")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    order = {case: i for i, case in enumerate(cases)}
    done.sort(key=lambda r: order[Case(**{f.name: r[f.name] for f in dataclasses.fields(Case)})])
    return done, cpu


def _worker() -> None:
    """Compile the cases given as JSON on stdin, printing one JSON result per line."""
    warnings.filterwarnings("ignore", message="TRITON_DEFAULT_FP_FUSION")
    for fields in json.loads(sys.stdin.read()):
        print(json.dumps(compile_case(Case(**fields))), flush=True)


if __name__ == "__main__":
    if "TRITON_INTERPRET" in os.environ:
        raise SystemExit("tapa_lab.kernels.aot: run without TRITON_INTERPRET (it makes the kernels uncompilable)")
    _worker()

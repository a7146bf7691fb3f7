"""Attention kernel benchmark: forward and forward+backward time, FlashAttention-equivalent TFLOP/s and peak memory.

Compares, in one process and on the same inputs, the lab's Triton kernels (TAPA, ALiBi, plain causal), PyTorch SDPA
with each backend (flash, efficient, cudnn, math), FlexAttention (a causal block mask; ``torch.compile`` with dynamic
shapes on CUDA, compiled once per process; eager, unfused, on CPU), RoPE + SDPA (the attention of a RoPE model:
rotate q and k, then SDPA) eager with the lab's rotation and as one ``torch.compile`` graph of the PyTorch rotation
and SDPA (the fair baseline for a fused TAPA kernel), the naive materialised TAPA (the reference) and the chunked
PyTorch TAPA, over sequence lengths at a fixed number of tokens per batch (PROTOCOLS.md, kernel benchmarks), with
grouped-query attention when ``kv_heads < n_heads``. FLOP convention of the FlashAttention papers: forward = 4 B H
L^2 D / 2 (causal), backward = 2.5 x forward, forward+backward = 3.5 x forward; TAPA counts the same (Da + Dp = D)
and RoPE's rotation (O(L D) work) counts nothing. On CUDA, times are the median of ``triton.testing.do_bench`` and
memory is ``torch.cuda.max_memory_allocated``; on CPU (a smoke-test mode) times are the median of wall-clock repeats
and memory is not measured. A cell that runs out of memory or has no kernel for the inputs is recorded with its
status.
"""

from __future__ import annotations

import importlib.metadata
import math
import platform
import statistics
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from rich.console import Console
from torch.nn.attention import SDPBackend, sdpa_kernel

from tapa_lab.bench.table import write_report
from tapa_lab.devices import resolve_device
from tapa_lab.errors import require
from tapa_lab.kernels import Backend, causal_attention, rope_rotate, tapa_attention
from tapa_lab.kernels.reference import tapa_attention_reference
from tapa_lab.kernels.rope_torch import rotate

SDPA_BACKENDS = {"sdpa-flash": SDPBackend.FLASH_ATTENTION, "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
                 "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION, "sdpa-math": SDPBackend.MATH}
IMPLEMENTATIONS = ("tapa-triton", "alibi-triton", "causal-triton", *SDPA_BACKENDS, "flex", "rope-sdpa",
                   "rope-sdpa-compiled", "tapa-naive", "tapa-torch", "alibi-torch")
# rope-sdpa-compiled is left out on CPU by default: inductor compiles each cell for tens of seconds there.
CPU_IMPLEMENTATIONS = ("sdpa-flash", "sdpa-math", "rope-sdpa", "tapa-naive", "tapa-torch", "alibi-torch")
ROPE_BASE = 10_000.0
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Rotation = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def rope_tables(seq_len: int, head_dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE's ``cos`` and ``sin`` ``(L, D/2)`` in fp32 for positions ``0 .. L-1`` (base 1e4; angles in fp64)."""
    inv_freq = ROPE_BASE ** (-torch.arange(0, head_dim, 2, device=device, dtype=torch.float64) / head_dim)
    angles = torch.arange(seq_len, device=device, dtype=torch.float64)[:, None] * inv_freq
    return angles.cos().float(), angles.sin().float()


def _rope_sdpa(rotation: Rotation) -> Callable[..., torch.Tensor]:
    """``(q, k, v, cos, sin) -> SDPA(rotation(q), rotation(k), v)``, causal: a RoPE model's attention."""
    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(rotation(q, cos, sin), rotation(k, cos, sin), v, is_causal=True,
                                              enable_gqa=q.shape[1] != k.shape[1])
    return run


@cache
def _compiled_flex() -> Callable[..., torch.Tensor]:
    """``flex_attention`` compiled once per process with dynamic shapes (one graph per pass, not one per length)."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=True)


def _flex() -> Attention:
    """Causal FlexAttention ``(q, k, v) -> ...``, its block mask built once per device and length."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    masks: dict[tuple[torch.device, int], object] = {}

    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        key = (q.device, q.shape[2])
        if key not in masks:
            masks[key] = create_block_mask(lambda b, h, i, j: i >= j, None, None, q.shape[2], k.shape[2], q.device)
        attend = _compiled_flex() if q.device.type == "cuda" else cast(Callable[..., torch.Tensor], flex_attention)
        return attend(q, k, v, block_mask=masks[key], enable_gqa=q.shape[1] != k.shape[1])
    return run


def _with_rope_tables(attention: Callable[..., torch.Tensor], head_dim: int) -> Attention:
    """``attention(q, k, v, cos, sin)`` as ``(q, k, v) -> ...``, the tables built once per device and length."""
    tables: dict[tuple[torch.device, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        key = (q.device, q.shape[2])
        if key not in tables:
            tables[key] = rope_tables(q.shape[2], head_dim, q.device)
        return attention(q, k, v, *tables[key])
    return run


def _attention(name: str, head_dim: int, alpha: float, theta: float) -> Attention:
    """The attention function benchmarked as ``name``, taking ``q, k, v`` of shape ``(B, H, L, D)``."""
    da = round(theta * head_dim)
    amp_scale, phase_scale = 1.0 / math.sqrt(da), 1.0 / math.sqrt(head_dim - da)
    slopes_cache: dict[torch.device, torch.Tensor] = {}

    def slopes(q: torch.Tensor) -> torch.Tensor:
        if q.device not in slopes_cache:
            exponents = torch.arange(1, q.shape[1] + 1, device=q.device, dtype=torch.float32)
            slopes_cache[q.device] = 2.0 ** (-8.0 * exponents / q.shape[1])
        return slopes_cache[q.device]

    def tapa(backend: Backend) -> Attention:
        return lambda q, k, v: tapa_attention(q[..., :da], k[..., :da], q[..., da:], k[..., da:], v, alpha=alpha,
                                              amp_scale=amp_scale, phase_scale=phase_scale, backend=backend)

    def alibi(backend: Backend) -> Attention:
        return lambda q, k, v: causal_attention(q, k, v, scale=head_dim**-0.5, alibi_slopes=slopes(q), backend=backend)

    if name == "rope-sdpa-compiled":
        torch.compiler.reset()  # each cell compiles afresh for its static shapes (no recompilation limit across cells)
        return _with_rope_tables(torch.compile(_rope_sdpa(rotate)), head_dim)

    def sdpa(backend: SDPBackend) -> Attention:
        def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=q.shape[1] != k.shape[1])
        return run

    table: dict[str, Attention] = {
        "tapa-triton": tapa("triton"),
        "alibi-triton": alibi("triton"),
        "causal-triton": lambda q, k, v: causal_attention(q, k, v, scale=head_dim**-0.5, backend="triton"),
        "tapa-naive": lambda q, k, v: tapa_attention_reference(q[..., :da], k[..., :da], q[..., da:], k[..., da:], v,
                                                               alpha, amp_scale, phase_scale),
        "rope-sdpa": _with_rope_tables(_rope_sdpa(rope_rotate), head_dim),
        "tapa-torch": tapa("torch"),
        "alibi-torch": alibi("torch"),
        "flex": _flex(),
        **{key: sdpa(backend) for key, backend in SDPA_BACKENDS.items()},
    }
    return table[name]


def causal_attention_flops(batch: int, heads: int, seq_len: int, head_dim: int) -> float:
    """FlashAttention-convention FLOPs of one causal forward pass: 4 B H L^2 D / 2."""
    return 4.0 * batch * heads * seq_len**2 * head_dim / 2


def _median_ms(fn: Callable[[], object], device: torch.device, warmup_ms: int, rep_ms: int) -> float:
    """Median time of ``fn`` in milliseconds (``do_bench`` on CUDA, wall clock on CPU)."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(max(3, min(50, int(rep_ms / 1000 / max(first, 1e-6))))):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _measure(attention: Attention, batch: int, heads: int, kv_heads: int, seq_len: int, head_dim: int,
             dtype: torch.dtype, device: torch.device, warmup_ms: int, rep_ms: int) -> dict[str, float | None]:
    """Forward and forward+backward median times and the peak memory of one cell."""
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(batch, h, seq_len, head_dim, device=device, dtype=dtype, generator=gen)
               .requires_grad_() for h in (heads, kv_heads, kv_heads))
    grad_out = torch.randn(batch, heads, seq_len, head_dim, device=device, dtype=dtype, generator=gen)

    def forward() -> None:
        with torch.no_grad():
            attention(q, k, v)

    def forward_backward() -> None:
        q.grad = k.grad = v.grad = None
        attention(q, k, v).backward(grad_out)

    peak_mb = None
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        forward_backward()
        torch.cuda.synchronize()
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    fwd_ms = _median_ms(forward, device, warmup_ms, rep_ms)
    fwd_bwd_ms = _median_ms(forward_backward, device, warmup_ms, rep_ms)
    flops = causal_attention_flops(batch, heads, seq_len, head_dim)
    return {"fwd_ms": fwd_ms, "fwd_bwd_ms": fwd_bwd_ms, "fwd_tflops": flops / fwd_ms / 1e9,
            "fwd_bwd_tflops": 3.5 * flops / fwd_bwd_ms / 1e9, "peak_memory_mb": peak_mb}


def bench_attention(
    implementations: list[str] | None = None,
    seq_lens: list[int] = [1024, 2048, 4096, 8192, 16384, 32768, 65536],  # noqa: B006 - read-only, shown in --help
    head_dims: list[int] = [64, 128],  # noqa: B006
    n_heads: int = 16,
    kv_heads: int | None = None,
    tokens_per_batch: int = 16384,
    dtype: str = "bfloat16",
    device: str = "auto",
    alpha: float = 0.1,
    theta: float = 0.5,
    max_naive_len: int = 16384,
    warmup_ms: int = 25,
    rep_ms: int = 100,
    time_budget_s: float | None = None,
    out_dir: str = "checkpoints/bench",
) -> list[dict]:
    """Benchmark the attention kernels against PyTorch SDPA and the naive and chunked PyTorch TAPA.

    Args:
        implementations: what to time, any of tapa-triton, alibi-triton, causal-triton, sdpa-flash, sdpa-efficient,
            sdpa-cudnn, sdpa-math, flex (FlexAttention), rope-sdpa (the lab's rotation, Triton on CUDA, then SDPA),
            rope-sdpa-compiled (``torch.compile`` of the PyTorch rotation and SDPA, inductor), tapa-naive, tapa-torch,
            alibi-torch;
            default: all on CUDA, the PyTorch ones but rope-sdpa-compiled on CPU.
        seq_lens: sequence lengths L (queries = keys, causal).
        head_dims: head dimensions D.
        n_heads: query heads H.
        kv_heads: key/value heads (grouped-query attention: ``n_heads`` a multiple of it); default ``n_heads``.
        tokens_per_batch: B x L held fixed across lengths (B = tokens_per_batch // L, at least 1).
        dtype: bfloat16, float16 or float32.
        device: cuda, cpu (a small smoke test of the PyTorch paths) or auto (cuda when available).
        alpha: TAPA distance exponent.
        theta: TAPA amplitude fraction, Da = round(theta D).
        max_naive_len: longest L for tapa-naive, which materialises B x H x L x L scores.
        warmup_ms: warm-up time per measurement (do_bench's ``warmup``).
        rep_ms: measuring time per measurement (do_bench's ``rep``).
        time_budget_s: no cell starts after this many seconds; the rest are recorded as skipped (default: no limit).
        out_dir: where attention.json and attention.md are written.

    Returns:
        One dict per (implementation, L, D): fwd_ms, fwd_bwd_ms, fwd_tflops, fwd_bwd_tflops, peak_memory_mb (CUDA
        only), status (ok, oom or the error) and the cell's settings.
    """
    target = resolve_device(device)
    names = implementations or list(IMPLEMENTATIONS if target.type == "cuda" else CPU_IMPLEMENTATIONS)
    for name in names:
        require(name in IMPLEMENTATIONS, "implementations", f"a list of {', '.join(IMPLEMENTATIONS)}", name)
    require(dtype in DTYPES, "dtype", f"one of {', '.join(DTYPES)}", dtype)
    kv_heads = kv_heads or n_heads
    require(kv_heads >= 1 and n_heads % kv_heads == 0, "kv_heads", f"a divisor of n_heads = {n_heads}", kv_heads)
    deadline = math.inf if time_budget_s is None else time.monotonic() + time_budget_s
    results = []
    console = Console()
    with console.status("benchmarking") as status:
        for head_dim in head_dims:
            for seq_len in seq_lens:
                batch = max(1, tokens_per_batch // seq_len)
                for name in names:
                    status.update(f"{name} at L = {seq_len}, D = {head_dim}")
                    cell = {"implementation": name, "seq_len": seq_len, "head_dim": head_dim, "batch": batch,
                            "heads": n_heads, "kv_heads": kv_heads, "dtype": dtype}
                    if name == "tapa-naive" and seq_len > max_naive_len:
                        results.append({**cell, "status": f"skipped: L > max_naive_len = {max_naive_len}"})
                        continue
                    if time.monotonic() > deadline:
                        results.append({**cell, "status": f"skipped: time_budget_s = {time_budget_s} spent"})
                        continue
                    try:
                        timing = _measure(_attention(name, head_dim, alpha, theta), batch, n_heads, kv_heads,
                                          seq_len, head_dim, DTYPES[dtype], target, warmup_ms, rep_ms)
                        results.append({**cell, **timing, "status": "ok"})
                    except torch.OutOfMemoryError:
                        results.append({**cell, "status": "oom"})
                    except RuntimeError as error:
                        results.append({**cell, "status": f"error: {str(error).splitlines()[0][:200]}"})
                    if target.type == "cuda":
                        torch.cuda.empty_cache()
    machine = (torch.cuda.get_device_name(target) if target.type == "cuda"
               else f"{platform.processor() or 'cpu'} ({torch.get_num_threads()} threads)")
    _report(results, machine, Path(out_dir), console)
    return results


def _report(results: list[dict], machine: str, out_dir: Path, console: Console) -> None:
    """Print a rich table and write attention.json and attention.md (both name the machine)."""
    header = ["implementation", "L", "D", "B", "fwd ms", "fwd TFLOP/s", "fwd+bwd ms", "fwd+bwd TFLOP/s", "peak MiB",
              "status"]

    def number(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    rows = [[r["implementation"], str(r["seq_len"]), str(r["head_dim"]), str(r["batch"]),
             number(r.get("fwd_ms"), 3), number(r.get("fwd_tflops"), 2), number(r.get("fwd_bwd_ms"), 3),
             number(r.get("fwd_bwd_tflops"), 2), number(r.get("peak_memory_mb"), 0), r["status"]] for r in results]
    versions = {"torch": torch.__version__, "triton": importlib.metadata.version("triton"),
                "python": platform.python_version()}
    write_report(f"Causal attention on {machine} (FlashAttention-equivalent TFLOP/s)", header, rows,
                 {"machine": machine, "versions": versions, "results": results}, out_dir, "attention", console)

"""The measured matrix-product ceiling: the TFLOP/s of one large square product on random data.

The attention benchmark reports each kernel's FlashAttention-equivalent TFLOP/s as a fraction of this number, measured
in the same process on the same device (METHOD.md: measure the ceiling rather than trust a datasheet; random data, not
zeros, which run faster).
"""

from __future__ import annotations

import statistics
import time

import torch


def gemm_tflops(size: int, dtype: torch.dtype, device: torch.device, repeats: int = 10) -> float:
    """Median TFLOP/s of ``repeats`` products of two random ``(size, size)`` matrices (``2 size^3`` FLOPs each).

    Args:
        size: the matrices' side (8192 fills an H100/H200).
        dtype: operand dtype (bf16 for the attention benchmark's peak).
        device: where the product runs; CUDA is timed with events after three warm-up products, CPU by wall clock.
        repeats: timed products.

    Returns:
        The median rate in TFLOP/s.
    """
    gen = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(size, size, device=device, dtype=dtype, generator=gen) for _ in range(2))
    for _ in range(3):
        torch.matmul(a, b)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            torch.matmul(a, b)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            begin = time.perf_counter()
            torch.matmul(a, b)
            times.append(time.perf_counter() - begin)
    return 2.0 * size**3 / statistics.median(times) / 1e12

"""Suite-wide setup: without CUDA, Triton kernels run through Triton's interpreter; under pytest-xdist, each worker
takes its share of the cores.

``triton.jit`` reads ``TRITON_INTERPRET`` when a kernel module is first imported, so it is set here, before any test
module is collected (the kernels import triton lazily, but a suite-wide setting keeps the order irrelevant).

With ``-n N`` each of the N workers gets ``cores // N`` torch threads, in its own process and (``OMP_NUM_THREADS``) in
the ``tapa-lab`` processes its tests start, so the workers do not oversubscribe the machine. Tests that need a given
thread count set it themselves (the golden losses, the benchmarks).
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    _threads = max(1, _cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

"""Kernel tests run the Triton kernels through Triton's interpreter on CPU (CI has no GPU).

``triton.jit`` reads ``TRITON_INTERPRET`` when a kernel is defined, i.e. when ``tapa_lab.kernels.triton_*`` is first
imported, so it is set here, before any test module of this folder is imported (``tapa_lab.kernels`` itself imports
the Triton modules lazily). With a CUDA device the kernels are compiled instead and the same tests run on the GPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"


@pytest.fixture(scope="session")
def device() -> torch.device:
    """Where the Triton kernels run: the GPU when there is one, else the CPU through the interpreter."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture
def poisoned_outputs() -> Iterator[None]:
    """Every ``torch.empty`` float tensor starts as NaN while a test runs, so an output element a kernel leaves
    unwritten stays NaN (deterministic algorithms on, warn-only, with ``fill_uninitialized_memory``; restored after)."""
    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    yield
    torch.utils.deterministic.fill_uninitialized_memory = fill
    torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


#: Set by the GPU acceptance run's kernel-test part (tapa_lab/bench/acceptance_parts.py): each autotuned kernel keeps
#: two of its configurations, its first (the expected Hopper winner) and its smallest tile (compiles for every dtype
#: and head dim), so the tests compile ~6 kernels per shape instead of ~31 and fit the run's time box. The autotuner
#: still benchmarks both and drops one that does not compile. The attention part of the run tunes over every
#: configuration.
QUICK_TUNE = os.environ.get("TAPA_LAB_QUICK_TUNE") == "1"


@pytest.fixture(scope="session", autouse=QUICK_TUNE)
def quick_tune() -> None:
    """Cut each autotuned Triton kernel's configurations to two (only with ``TAPA_LAB_QUICK_TUNE=1`` on CUDA)."""
    if not torch.cuda.is_available():
        return
    from tapa_lab.kernels.triton_bwd import _attn_bwd_dkdv
    from tapa_lab.kernels.triton_bwd_dq import _attn_bwd_dq
    from tapa_lab.kernels.triton_fwd import _attn_fwd

    for kernel in (_attn_fwd, _attn_bwd_dkdv, _attn_bwd_dq):
        smallest = min(kernel.configs, key=lambda c: (c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"], c.num_stages))
        kernel.configs = [kernel.configs[0]] + ([smallest] if smallest is not kernel.configs[0] else [])

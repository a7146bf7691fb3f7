"""Build and load the fused CPU kernel (``cpu/tapa_cpu.cpp``) on first use, with ``torch.utils.cpp_extension``.

The first TAPA call on CPU compiles it (about a minute on 2 cores; needs a C++ compiler and ``ninja``, a dependency
of the lab) into torch's extension cache (``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``); later
processes load the cached build, and concurrent first calls wait for one build (torch's file lock). The build targets
the instruction set this CPU has (AVX2 + FMA on x86-64 when present) and its name carries it, so one cache shared by
different machines never hands a build to a CPU that lacks its instructions.

When the build cannot run (no compiler, no ninja) or ``TAPA_LAB_CPU_KERNEL=0`` is set, :func:`cpu_kernel` returns
``None`` and TAPA takes the blockwise PyTorch path (identical maths, about half the speed); the first failure is logged
once with its reason.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cpu") / "tapa_cpu.cpp"
DISABLE_ENV = "TAPA_LAB_CPU_KERNEL"
#: Flags every build gets: OpenMP (``at::parallel_for`` is inline: without it the kernel runs on one thread); no
#: -ffast-math (the kernel relies on IEEE semantics), but no trapping or errno, so that the compiler vectorises the
#: elementwise loops (``#pragma omp simd``) with their selects and bit casts.
BASE_FLAGS = ("-O3", "-fopenmp", "-fno-trapping-math", "-fno-math-errno")


def _isa_flags() -> tuple[str, tuple[str, ...]]:
    """The build's instruction-set suffix and flags: AVX2 + FMA on x86-64 CPUs that have both, else the default."""
    if platform.machine() in ("x86_64", "AMD64"):
        try:
            flags = set(Path("/proc/cpuinfo").read_text().split())
        except OSError:
            flags = set()
        if {"avx2", "fma"} <= flags:
            return "avx2", ("-mavx2", "-mfma")
    return "base", ()


def disabled() -> bool:
    """Whether ``TAPA_LAB_CPU_KERNEL=0`` (or ``false``/``off``) turns the fused CPU kernel off."""
    return os.environ.get(DISABLE_ENV, "1").lower() in ("0", "false", "off")


@functools.cache
def _load() -> ModuleType | None:
    suffix, isa = _isa_flags()
    try:
        from torch.utils.cpp_extension import load

        return load(name=f"tapa_lab_cpu_{suffix}", sources=[str(SOURCE)], extra_cflags=[*BASE_FLAGS, *isa],
                    extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as error:  # no compiler, no ninja, a failed build: fall back, say why once
        reason = (str(error).strip().splitlines() or [""])[-1]  # a failed build's message ends with its cause
        log.warning("The fused TAPA CPU kernel could not be built (%s: %s); TAPA runs on the blockwise PyTorch path "
                    "(same maths, slower). Install a C++ compiler and `ninja` to build it, or set %s=0 to skip the "
                    "attempt.", type(error).__name__, reason, DISABLE_ENV)
        return None


def cpu_kernel() -> ModuleType | None:
    """The built extension (functions ``forward`` and ``backward``), or ``None`` if disabled or unbuildable."""
    return None if disabled() else _load()

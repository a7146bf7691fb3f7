"""Autotune configurations of the Triton attention kernels, built by functions and keyed on shape.

GPU configurations are sized for Hopper and Ampere: Hopper's wgmma wants at least 64 rows in the tile's M dimension per
warpgroup (4 warps), and a TAPA forward at D=128 fits 128x64 tiles with 8 warps without spilling (PROTOCOLS.md, kernel
benchmarks). Every GPU configuration compiles, fits the shared memory and registers of sm_80 and sm_90 at head dims 64
and 128: :mod:`tapa_lab.kernels.aot` compiles them ahead of time for both targets (``tapa-lab bench compile``, and
tests/kernels/test_aot_compile.py in CI). Under Triton's interpreter (``TRITON_INTERPRET=1`` when this module is
imported) each kernel gets exactly one small configuration, with different query and key block sizes so that the
tests exercise unaligned causal block boundaries. ``interpreted=False`` gives the GPU list in any process.
"""

from __future__ import annotations

import triton

from tapa_lab.kernels.launch import interpreter_enabled

#: Whether the kernels run in Triton's interpreter (``triton.jit`` decides when the kernels are defined, at import).
INTERPRETED: bool = interpreter_enabled()

#: Kernel arguments the autotuner keys on (argument dtypes are added by the autotuner itself).
TUNE_KEY = ["LQ", "LK", "DA", "DP", "DV", "MODE", "HAS_DOCS"]


def _config(block_m: int, block_n: int, num_warps: int, num_stages: int) -> triton.Config:
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n}, num_warps=num_warps, num_stages=num_stages)


def fwd_configs(interpreted: bool = INTERPRETED) -> list[triton.Config]:
    """Forward: ``BLOCK_M`` query rows per program, ``BLOCK_N`` keys per inner step."""
    if interpreted:
        return [_config(32, 16, 4, 1)]
    # 128x128 tiles at 4 stages need 224 KB of shared memory at D = 128 on sm_80 (163 KB per block) and 288 KB on
    # sm_90 (227 KB): left out (tapa-lab bench compile).
    return [_config(block_m, block_n, warps, stages)
            for block_m, block_n, warps in ((128, 64, 8), (128, 64, 4), (64, 64, 4), (128, 128, 8), (128, 32, 4))
            for stages in (2, 3, 4) if (block_m, block_n, stages) != (128, 128, 4)]


def bwd_dkdv_configs(interpreted: bool = INTERPRETED) -> list[triton.Config]:
    """dK/dV: ``BLOCK_N`` keys per program (the M side of its dots), ``BLOCK_M`` query rows per inner step."""
    if interpreted:
        return [_config(16, 32, 4, 1)]
    return [_config(block_m, block_n, warps, stages)
            for block_m, block_n, warps in ((32, 128, 8), (64, 128, 8), (64, 64, 4), (32, 64, 4))
            for stages in (2, 3)]


def bwd_dq_configs(interpreted: bool = INTERPRETED) -> list[triton.Config]:
    """dQ: ``BLOCK_M`` query rows per program, ``BLOCK_N`` keys per inner step."""
    if interpreted:
        return [_config(32, 16, 4, 1)]
    return [_config(block_m, block_n, warps, stages)
            for block_m, block_n, warps in ((128, 32, 8), (128, 64, 8), (64, 64, 4), (64, 32, 4))
            for stages in (2, 3)]

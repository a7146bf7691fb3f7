"""TAPA attention, Triton kernels (interpreter on CPU) and the blockwise PyTorch path: output and every gradient
(dq_amp, dk_amp, dq_phase, dk_phase, dv, dalpha; through the views the PEs build) against the fp64 reference.

A covering selection of L in {1, 17, 64, 100, 129}, D in {16, 32, 48, 64}, theta in {0.25, 0.5, 0.75},
alpha in {0.1, 0.5, 1.0}, GQA groups 1 and 2, Lq < Lk, non-contiguous views, the three phase variants, fixed and
learnable alpha, fp32 and fp16 (the full product would take too long under the interpreter).
"""

from __future__ import annotations

import math

import pytest
import torch
from kernel_cases import AttentionCase, assert_matches_reference, tapa_operands, tapa_reference

from tapa_lab.kernels import tapa_attention

F32, F16 = torch.float32, torch.float16

CASES = [
    AttentionCase(lq=1, lk=1, head_dim=16, theta=0.5, alpha=0.1),
    AttentionCase(lq=17, lk=17, head_dim=32, theta=0.25, alpha=0.5, kv_heads=2, head_param="learnable",
                  layout="views"),
    AttentionCase(lq=64, lk=64, head_dim=64, theta=0.75, alpha=1.0, dtype=F16),
    AttentionCase(lq=100, lk=100, head_dim=16, theta=0.5, alpha=0.1, heads=4, kv_heads=2, head_param="learnable",
                  dtype=F16, layout="views"),
    AttentionCase(lq=37, lk=129, head_dim=32, theta=0.5, alpha=0.5, heads=4, kv_heads=2, head_param="learnable"),
    AttentionCase(lq=129, lk=129, head_dim=32, theta=0.25, alpha=1.0, layout="views"),
    AttentionCase(lq=1, lk=64, head_dim=64, theta=0.5, alpha=0.1, heads=4, kv_heads=2, dtype=F16),
    AttentionCase(lq=33, lk=33, head_dim=32, theta=0.5, alpha=0.5, batch=2, head_param="learnable", phase="static"),
    AttentionCase(lq=50, lk=64, head_dim=16, theta=0.75, alpha=1.0, phase="linear", dtype=F16, layout="views"),
    AttentionCase(lq=65, lk=65, head_dim=48, theta=0.5, alpha=0.5, kv_heads=2, head_param="learnable"),
    AttentionCase(lq=64, lk=129, head_dim=32, theta=0.75, alpha=0.1, heads=4, kv_heads=2, head_param="learnable",
                  dtype=F16),
    AttentionCase(lq=100, lk=100, head_dim=64, theta=0.25, alpha=1.0, batch=2, kv_heads=2, layout="views"),
]


def _tapa(backend: str, chunk_size: int | None = None):
    def attention(case: AttentionCase, leaves: dict[str, torch.Tensor]) -> torch.Tensor:
        operands, alpha, phase_scale = tapa_operands(case, leaves)
        return tapa_attention(*operands, alpha=alpha, amp_scale=1.0 / math.sqrt(case.amp_dim),
                              phase_scale=phase_scale, backend=backend, chunk_size=chunk_size)
    return attention


@pytest.mark.parametrize("case", CASES, ids=str)
def test_triton_matches_reference(case: AttentionCase, device: torch.device) -> None:
    assert_matches_reference(_tapa("triton"), tapa_reference, case, device)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_torch_path_matches_reference(case: AttentionCase) -> None:
    assert_matches_reference(_tapa("torch", chunk_size=24), tapa_reference, case, "cpu")

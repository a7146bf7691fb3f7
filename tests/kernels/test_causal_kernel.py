"""Causal attention (plain and ALiBi), Triton kernels (interpreter on CPU) and the PyTorch path: output and every
gradient (dq, dk, dv, and d slopes when learnable) against the fp64 reference, over a covering selection of lengths,
head dims, GQA groups, Lq < Lk, non-contiguous views, fp32 and fp16."""

from __future__ import annotations

import math

import pytest
import torch
from kernel_cases import AttentionCase, assert_matches_reference, causal_operands, causal_reference

from tapa_lab.kernels import causal_attention

F16 = torch.float16

CASES = [
    AttentionCase(lq=1, lk=1, head_dim=16, head_param="none"),
    AttentionCase(lq=17, lk=17, head_dim=32, kv_heads=2, head_param="learnable", layout="views"),
    AttentionCase(lq=64, lk=64, head_dim=64, heads=4, kv_heads=2, head_param="none", dtype=F16, layout="views"),
    AttentionCase(lq=100, lk=100, head_dim=16, heads=4, kv_heads=2, head_param="fixed", dtype=F16),
    AttentionCase(lq=37, lk=129, head_dim=32, heads=4, kv_heads=2, head_param="none"),
    AttentionCase(lq=129, lk=129, head_dim=48, head_param="learnable", dtype=F16),
    AttentionCase(lq=1, lk=64, head_dim=64, heads=4, kv_heads=2, head_param="fixed", batch=2),
    AttentionCase(lq=50, lk=100, head_dim=32, head_param="learnable", layout="views"),
]


def _causal(backend: str, chunk_size: int | None = None):
    def attention(case: AttentionCase, leaves: dict[str, torch.Tensor]) -> torch.Tensor:
        (q, k, v), slopes = causal_operands(case, leaves)
        return causal_attention(q, k, v, scale=1.0 / math.sqrt(case.head_dim), alibi_slopes=slopes, backend=backend,
                                chunk_size=chunk_size)
    return attention


@pytest.mark.parametrize("case", CASES, ids=str)
def test_triton_matches_reference(case: AttentionCase, device: torch.device) -> None:
    assert_matches_reference(_causal("triton"), causal_reference, case, device)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_torch_path_matches_reference(case: AttentionCase) -> None:
    assert_matches_reference(_causal("torch", chunk_size=24), causal_reference, case, "cpu")

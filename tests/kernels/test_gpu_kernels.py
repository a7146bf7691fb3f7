"""GPU-only kernel tests: bf16 (wrong in the interpreter), long sequences, head dims 96/128, and autotuning, on outputs
poisoned with NaN (conftest's ``poisoned_outputs``). The per-dtype relative-error bounds are in test_kernel_accuracy."""

from __future__ import annotations

import math

import pytest
import torch
from kernel_cases import (
    AttentionCase,
    assert_matches_reference,
    causal_operands,
    causal_reference,
    tapa_operands,
    tapa_reference,
)

from tapa_lab.kernels import causal_attention, tapa_attention

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
              pytest.mark.usefixtures("poisoned_outputs")]

BF16 = torch.bfloat16


def _tapa(case: AttentionCase, leaves: dict[str, torch.Tensor]) -> torch.Tensor:
    operands, alpha, phase_scale = tapa_operands(case, leaves)
    return tapa_attention(*operands, alpha=alpha, amp_scale=1.0 / math.sqrt(case.amp_dim), phase_scale=phase_scale,
                          backend="triton")


def _causal(case: AttentionCase, leaves: dict[str, torch.Tensor]) -> torch.Tensor:
    (q, k, v), slopes = causal_operands(case, leaves)
    return causal_attention(q, k, v, scale=1.0 / math.sqrt(case.head_dim), alibi_slopes=slopes, backend="triton")


@pytest.mark.parametrize("case", [
    AttentionCase(lq=1000, lk=1000, head_dim=128, heads=4, kv_heads=2, alpha=0.1, dtype=BF16, layout="views",
                  head_param="learnable"),
    AttentionCase(lq=777, lk=1024, head_dim=96, heads=2, alpha=1.0, theta=0.25, dtype=BF16),
    AttentionCase(lq=513, lk=513, head_dim=64, heads=2, alpha=0.5, dtype=torch.float16, phase="linear"),
], ids=str)
def test_tapa_bf16_and_wide_heads(case: AttentionCase) -> None:
    assert_matches_reference(_tapa, tapa_reference, case, "cuda")


@pytest.mark.parametrize("case", [
    AttentionCase(lq=1000, lk=1000, head_dim=128, heads=4, kv_heads=2, head_param="learnable", dtype=BF16),
    AttentionCase(lq=300, lk=1024, head_dim=96, heads=2, head_param="none", dtype=BF16, layout="views"),
], ids=str)
def test_causal_bf16_and_wide_heads(case: AttentionCase) -> None:
    assert_matches_reference(_causal, causal_reference, case, "cuda")


def test_tapa_long_sequence_matches_blockwise_torch_path() -> None:
    """L = 8192: the Triton kernel against the chunked PyTorch path (fp32 arithmetic) on the same bf16 inputs."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, h, 8192, 128, device="cuda", generator=gen, dtype=BF16).requires_grad_()
               for h in (4, 2, 2))
    grad_out = torch.randn(1, 4, 8192, 128, device="cuda", generator=gen, dtype=BF16)
    results = []
    for backend in ("triton", "torch"):
        out = tapa_attention(q[..., :64], k[..., :64], q[..., 64:], k[..., 64:], v, alpha=0.1, amp_scale=64**-0.5,
                             phase_scale=64**-0.5, backend=backend)
        results.append([out.float(), *(g.float() for g in torch.autograd.grad(out, (q, k, v), grad_out))])
    for kernel, exact in zip(*results, strict=True):
        torch.testing.assert_close(kernel, exact, atol=3e-2 * (1 + exact.abs().max().item()), rtol=2e-2)


def test_autotuning_has_gpu_configs_and_picks_a_large_tile() -> None:
    from tapa_lab.kernels.triton_fwd import _attn_fwd

    assert len(_attn_fwd.configs) > 1
    q = torch.randn(2, 4, 2048, 128, device="cuda", dtype=BF16)
    tapa_attention(q[..., :64], q[..., :64], q[..., 64:], q[..., 64:], q, alpha=0.1, amp_scale=0.125,
                   phase_scale=0.125)
    assert _attn_fwd.best_config.kwargs["BLOCK_M"] >= 64

"""METHOD.md's accuracy check of every Triton kernel (TAPA, ALiBi, plain causal, RoPE's rotation): for the output and
every gradient, ``||kernel - fp64 reference|| / ||reference||`` under :data:`kernel_cases.RELATIVE_BOUND` (fp32 far
under 1e-3, bf16 at most 1e-2), NaN never passing, on outputs poisoned before each run.

Poisoning: with deterministic algorithms on, PyTorch fills every ``torch.empty`` float tensor with NaN
(``torch.utils.deterministic.fill_uninitialized_memory``), so an output or gradient element a kernel fails to write
stays NaN and fails the bound (fixture ``poisoned_outputs`` of conftest.py). On a GPU the cases are fp32, fp16 and
bf16 at L ~ 1K with D = 64..128, GQA and plain causal; on CPU (Triton's interpreter, where bf16 is wrong) tiny fp32
and fp16 cases, so the check runs in CI and in the acceptance run's dry run. TAPA's cases keep alpha <= 0.5: at alpha
= 1 the phase grows with the distance until fp32 rounding of the phase alone moves the output past these bounds (the
function, not the kernel: test_gpu_kernels' rule against the materialised reference in the kernel's dtype covers that
regime). Each measured error is recorded as a test property (the acceptance run reads them from its JUnit XML).
"""

from __future__ import annotations

import math

import pytest
import torch
from kernel_cases import (
    RELATIVE_BOUND,
    AttentionCase,
    causal_operands,
    causal_reference,
    relative_error,
    relative_errors,
    tapa_operands,
    tapa_reference,
)

from tapa_lab.kernels import causal_attention, rope_rotate, tapa_attention
from tapa_lab.kernels.launch import interpreter_enabled
from tapa_lab.kernels.rope_torch import rotate

CUDA = torch.cuda.is_available()
pytestmark = [pytest.mark.skipif(not CUDA and not interpreter_enabled(), reason="needs Triton to run"),
              pytest.mark.usefixtures("poisoned_outputs")]
DTYPES = (torch.float32, torch.float16, torch.bfloat16) if CUDA else (torch.float32, torch.float16)


SHAPES_CPU = [dict(lq=37, lk=37, head_dim=16, heads=2, kv_heads=1, layout="views", head_param="learnable"),
              dict(lq=21, lk=45, head_dim=32, heads=2, kv_heads=2, alpha=0.5, theta=0.25),
              dict(lq=16, lk=40, head_dim=16, heads=2, kv_heads=1, head_param="none")]
# On CUDA each (shape, dtype) compiles its own kernels, so not every pair runs: bf16 (training's dtype) gets every
# shape, fp32 and fp16 one each.
GQA_VIEWS = dict(lq=1000, lk=1000, head_dim=128, heads=4, kv_heads=2, alpha=0.1, layout="views", head_param="learnable")
CROSS = dict(lq=777, lk=1024, head_dim=64, heads=4, kv_heads=1, alpha=0.5, theta=0.25)
PLAIN = dict(lq=300, lk=1024, head_dim=96, heads=2, kv_heads=1, head_param="none", layout="views")


def _cases(shapes_by_dtype: dict[torch.dtype, list[dict]]) -> list[AttentionCase]:
    if not CUDA:
        shapes_by_dtype = {dtype: SHAPES_CPU for dtype in DTYPES}
    return [AttentionCase(**shape, dtype=dtype) for dtype, shapes in shapes_by_dtype.items() for shape in shapes]


TAPA_CASES = _cases({torch.float32: [GQA_VIEWS], torch.float16: [CROSS], torch.bfloat16: [GQA_VIEWS, CROSS]})
CAUSAL_CASES = _cases({torch.float32: [PLAIN], torch.float16: [GQA_VIEWS], torch.bfloat16: [GQA_VIEWS, PLAIN]})


def _device() -> str:
    return "cuda" if CUDA else "cpu"


def _check(errors: dict[str, float], dtype: torch.dtype, record_property) -> None:
    for name, error in errors.items():
        record_property(f"relative_error_{name}", error)
    bound = RELATIVE_BOUND[dtype]
    failures = {name: error for name, error in errors.items() if not error <= bound}  # NaN fails
    assert not failures, f"relative errors over {bound:g}: {failures} (all: {errors})"


def test_outputs_are_poisoned() -> None:
    assert torch.isnan(torch.empty(64, device=_device())).all()
    assert torch.isnan(torch.empty(8, device=_device(), dtype=torch.bfloat16)).all()


def test_a_nan_never_passes() -> None:
    exact = torch.ones(4, dtype=torch.float64)
    assert math.isnan(relative_error(torch.tensor([1.0, 1.0, math.nan, 1.0], dtype=torch.float64), exact))
    assert relative_error(exact * (1 + 1e-3), exact) == pytest.approx(1e-3)


@pytest.mark.parametrize("case", TAPA_CASES, ids=str)
def test_tapa_relative_error(case: AttentionCase, record_property) -> None:
    def kernel(case: AttentionCase, leaves: dict[str, torch.Tensor]) -> torch.Tensor:
        operands, alpha, phase_scale = tapa_operands(case, leaves)
        return tapa_attention(*operands, alpha=alpha, amp_scale=1.0 / math.sqrt(case.amp_dim),
                              phase_scale=phase_scale, backend="triton")

    _check(relative_errors(kernel, tapa_reference, case, _device()), case.dtype, record_property)


@pytest.mark.parametrize("case", CAUSAL_CASES, ids=str)
def test_causal_and_alibi_relative_error(case: AttentionCase, record_property) -> None:
    def kernel(case: AttentionCase, leaves: dict[str, torch.Tensor]) -> torch.Tensor:
        (q, k, v), slopes = causal_operands(case, leaves)
        return causal_attention(q, k, v, scale=1.0 / math.sqrt(case.head_dim), alibi_slopes=slopes, backend="triton")

    _check(relative_errors(kernel, causal_reference, case, _device()), case.dtype, record_property)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_rope_rotation_relative_error(dtype: torch.dtype, record_property) -> None:
    batch, heads, length, head_dim = (2, 4, 1024, 128) if CUDA else (1, 2, 40, 32)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, heads, length, head_dim, generator=gen, dtype=torch.float64).to(dtype).double()
    grad_out = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(dtype).double()
    angles = torch.arange(length, dtype=torch.float64)[:, None] * 1e4 ** (-torch.arange(0, head_dim, 2) / head_dim)
    exact_in = x.clone().requires_grad_()
    exact = rotate(exact_in, angles.cos(), angles.sin())
    (exact_grad,) = torch.autograd.grad(exact, exact_in, grad_out)
    kernel_in = x.to(device=_device(), dtype=dtype).requires_grad_()
    out = rope_rotate(kernel_in, angles.cos().float().to(_device()), angles.sin().float().to(_device()),
                      backend="triton")
    (grad,) = torch.autograd.grad(out, kernel_in, grad_out.to(device=_device(), dtype=dtype))
    errors = {"out": relative_error(out.detach().cpu().double(), exact.detach()),
              "dx": relative_error(grad.cpu().double(), exact_grad)}
    _check(errors, dtype, record_property)

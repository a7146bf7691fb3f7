"""The fused TAPA CPU kernel (``tapa_lab.kernels.tapa_cpu``, C++): forward and every gradient against the float64
materialised reference, with tiles that do not divide the lengths, grouped-query heads and queries at the last Lq of
Lk keys; the dispatch that chooses it; and the fallback to the blockwise path when it is disabled or cannot build."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import Tensor

from tapa_lab.kernels import cpu_build, tapa_attention
from tapa_lab.kernels.reference import tapa_attention_reference
from tapa_lab.kernels.tapa_cpu import fused_cpu_applies, tapa_attention_cpu
from tapa_lab.kernels.tapa_torch import tapa_attention_torch

B, H, HKV, DA, DP, DV = 2, 4, 2, 8, 4, 16
AMP, PHASE = DA**-0.5, 2 * math.pi * DP**-0.5

pytestmark = pytest.mark.skipif(cpu_build.cpu_kernel() is None, reason="the fused CPU kernel could not be built here")


def _inputs(lq: int, lk: int, seed: int = 0, phase_std: float = 1.0) -> list[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(B, H, lq, DA), (B, HKV, lk, DA), (B, H, lq, DP), (B, HKV, lk, DP), (B, HKV, lk, DV)]
    stds = [1.0, 1.0, phase_std, phase_std, 1.0]
    return [(torch.randn(s, generator=gen, dtype=torch.float64) * std).requires_grad_()
            for s, std in zip(shapes, stds, strict=True)]


def _rel_err(actual: Tensor, expected: Tensor) -> float:
    actual, expected = actual.detach().double(), expected.detach()
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize(("block_q", "block_k"), [(8, 16), (5, 7), (128, 256)])
@pytest.mark.parametrize(("lq", "lk"), [(100, 100), (45, 100), (1, 37)])
def test_forward_and_gradients_match_float64_reference(block_q: int, block_k: int, lq: int, lk: int) -> None:
    """fp32 kernel vs float64 reference: relative errors at fp32 rounding (the polynomial cos/sin/exp are within
    1e-6 of libm), including tiles cut by the causal edge, by ``Lq < Lk`` and by lengths no tile size divides."""
    inputs = _inputs(lq, lk, seed=lq + lk)
    grad_out = torch.randn(B, H, lq, DV, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    expected = tapa_attention_reference(*inputs, 0.3, AMP, DP**-0.5)
    want = torch.autograd.grad(expected, inputs, grad_out)
    leaves = [x.detach().float().requires_grad_() for x in inputs]
    actual = tapa_attention_cpu(*leaves, alpha=0.3, amp_scale=AMP, phase_scale=PHASE, block_q=block_q,
                                block_k=block_k)
    got = torch.autograd.grad(actual, leaves, grad_out.float())
    assert actual.dtype == torch.float32
    assert _rel_err(actual, expected) < 2e-5
    for name, g, w in zip(["q_amp", "k_amp", "q_phase", "k_phase", "v"], got, want, strict=True):
        assert g.dtype == torch.float32 and g.shape == w.shape, name
        assert _rel_err(g, w) < 5e-5, name


def test_large_phases_stay_accurate() -> None:
    """Phases of hundreds of radians (a run-away TAPA phase, tapa-diagnosis.md) still reduce exactly enough: the
    argument reduction is in turns, so the error grows only with fp32's own rounding of x."""
    inputs = _inputs(64, 64, seed=3, phase_std=6.0)
    expected = tapa_attention_reference(*inputs, 1.0, AMP, DP**-0.5)
    actual = tapa_attention_cpu(*[x.detach().float() for x in inputs], alpha=1.0, amp_scale=AMP, phase_scale=PHASE)
    assert _rel_err(actual, expected) < 1e-3
    assert _rel_err(actual, tapa_attention_torch(*[x.detach().float() for x in inputs], alpha=1.0, amp_scale=AMP,
                                                 phase_scale=PHASE).double()) < 1e-3


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_compute_in_fp32_and_return_their_dtype(dtype: torch.dtype) -> None:
    """Against the reference of the same (rounded) inputs: only the output's rounding to fp16/bf16 remains."""
    leaves = [x.detach().to(dtype).requires_grad_() for x in _inputs(40, 40, seed=11)]
    expected = tapa_attention_reference(*[x.detach().double() for x in leaves], 0.3, AMP, DP**-0.5)
    actual = tapa_attention_cpu(*leaves, alpha=0.3, amp_scale=AMP, phase_scale=PHASE)
    actual.sum().backward()
    assert actual.dtype == dtype and all(x.grad is not None and x.grad.dtype == dtype for x in leaves)
    assert _rel_err(actual, expected) < (1e-2 if dtype == torch.bfloat16 else 2e-3)


def test_kernel_is_deterministic_across_thread_counts() -> None:
    """Each task owns its output rows (forward: a query block; backward: a key/value head), so no sum depends on the
    thread schedule: 1 and 2 threads give bit-identical outputs and gradients."""
    inputs = [x.detach().float() for x in _inputs(90, 90, seed=5)]
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            leaves = [x.clone().requires_grad_() for x in inputs]
            out = tapa_attention_cpu(*leaves, alpha=0.2, amp_scale=AMP, phase_scale=PHASE, block_q=16, block_k=32)
            results.append([out, *torch.autograd.grad(out.square().sum(), leaves)])
    finally:
        torch.set_num_threads(threads)
    for first, second in zip(*results, strict=True):
        assert torch.equal(first, second)


def test_auto_dispatch_runs_the_fused_kernel_only_where_it_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    q = torch.zeros(1, 2, 4, 4)
    assert fused_cpu_applies(q, 0.1, None)
    assert not fused_cpu_applies(q, torch.ones(2), None)  # per-head (learnable) alpha: blockwise
    assert not fused_cpu_applies(q, 0.1, torch.zeros(1, 4, dtype=torch.long))  # document masking: blockwise
    assert not fused_cpu_applies(q.double(), 0.1, None)  # float64 (analysis, references): blockwise
    calls: list[str] = []
    monkeypatch.setattr("tapa_lab.kernels.dispatch.tapa_attention_cpu",
                        lambda *a, **k: calls.append("fused") or tapa_attention_cpu(*a, **k))
    inputs = [x.detach().float() for x in _inputs(20, 20)]
    fused = tapa_attention(*inputs, alpha=0.3, amp_scale=AMP, phase_scale=DP**-0.5)
    blockwise = tapa_attention(*inputs, alpha=0.3, amp_scale=AMP, phase_scale=DP**-0.5, backend="torch")
    assert calls == ["fused"]
    torch.testing.assert_close(fused, blockwise, rtol=1e-5, atol=1e-5)


def test_disabled_kernel_falls_back_to_the_blockwise_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cpu_build.DISABLE_ENV, "0")
    assert cpu_build.cpu_kernel() is None
    q = torch.zeros(1, 2, 4, 4)
    assert not fused_cpu_applies(q, 0.1, None)
    inputs = [x.detach().float() for x in _inputs(20, 20)]
    out = tapa_attention(*inputs, alpha=0.3, amp_scale=AMP, phase_scale=DP**-0.5)
    torch.testing.assert_close(out.double(), tapa_attention_reference(*[x.double() for x in inputs], 0.3, AMP,
                                                                      DP**-0.5), rtol=1e-5, atol=1e-5)


def test_failed_build_warns_once_and_returns_none(monkeypatch: pytest.MonkeyPatch, tmp_path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A build that cannot run (here: a source that does not compile, in a fresh extension folder) gives ``None`` and
    one warning that says what to install, instead of an error in the middle of training."""
    broken = tmp_path / "tapa_cpu.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(cpu_build, "SOURCE", broken)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    cpu_build._load.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=cpu_build.__name__):
            assert cpu_build.cpu_kernel() is None
            assert cpu_build.cpu_kernel() is None
    finally:
        cpu_build._load.cache_clear()
    warnings = [r for r in caplog.records if "could not be built" in r.getMessage()]
    assert len(warnings) == 1 and "ninja" in warnings[0].getMessage()

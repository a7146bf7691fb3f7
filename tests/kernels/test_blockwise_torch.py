"""The blockwise PyTorch paths: exact (fp64) agreement with the reference for block sizes that do not divide L, and
memory O(chunk x L) per head: neither the saved tensors nor any intermediate is an L x L score matrix."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tapa_lab.kernels.causal_torch import causal_attention_torch
from tapa_lab.kernels.reference import causal_attention_reference, tapa_attention_reference
from tapa_lab.kernels.tapa_torch import tapa_attention_torch

B, H, HKV, DA, DP, DV = 2, 4, 2, 8, 4, 16


def _inputs(lq: int, lk: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(B, H, lq, DA), (B, HKV, lk, DA), (B, H, lq, DP), (B, HKV, lk, DP), (B, HKV, lk, DV)]
    return [torch.randn(s, generator=gen, dtype=torch.float64, requires_grad=True) for s in shapes]


def _tapa(inputs: list[torch.Tensor], alpha: torch.Tensor, chunk_size: int | None) -> torch.Tensor:
    return tapa_attention_torch(*inputs, alpha=alpha, amp_scale=DA**-0.5, phase_scale=2 * math.pi * DP**-0.5,
                                chunk_size=chunk_size)


@pytest.mark.parametrize("chunk_size", [1, 7, 33, 1000, None])
@pytest.mark.parametrize(("lq", "lk"), [(100, 100), (45, 100)])
def test_tapa_chunks_match_reference_exactly(chunk_size: int | None, lq: int, lk: int) -> None:
    inputs = _inputs(lq, lk)
    alpha = torch.tensor([0.1, 0.5, 1.0, 0.3], dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(B, H, lq, DV, dtype=torch.float64)
    expected = tapa_attention_reference(*inputs, alpha, DA**-0.5, DP**-0.5)
    actual = _tapa(inputs, alpha, chunk_size)
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9)
    got = torch.autograd.grad(actual, [*inputs, alpha], grad_out)
    want = torch.autograd.grad(expected, [*inputs, alpha], grad_out)
    for got_input, want_input in zip(got, want, strict=True):
        torch.testing.assert_close(got_input, want_input, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("chunk_size", [1, 7, 33, 1000])
@pytest.mark.parametrize("alibi", [True, False])
def test_causal_chunks_match_reference_exactly(chunk_size: int, alibi: bool) -> None:
    q, k, _, _, v = _inputs(45, 100)
    slopes = torch.rand(H, dtype=torch.float64, requires_grad=True) if alibi else None
    leaves = [q, k, v] + ([slopes] if alibi else [])
    grad_out = torch.randn(B, H, 45, DV, dtype=torch.float64)
    expected = causal_attention_reference(q, k, v, 0.3, slopes)
    actual = causal_attention_torch(q, k, v, scale=0.3, alibi_slopes=slopes, chunk_size=chunk_size)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)
    got = torch.autograd.grad(actual, leaves, grad_out)
    want = torch.autograd.grad(expected, leaves, grad_out)
    for got_input, want_input in zip(got, want, strict=True):
        torch.testing.assert_close(got_input, want_input, rtol=1e-10, atol=1e-10)


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for x in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(x, torch.Tensor):
                self.largest = max(self.largest, x.numel())
        return out


@pytest.mark.parametrize("path", ["tapa", "alibi"])
def test_blockwise_memory_is_chunk_by_length(path: str) -> None:
    length, chunk = 256, 32
    inputs = [x.detach().float().requires_grad_() for x in _inputs(length, length)]
    saved: list[int] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda x: saved.append(x.numel()) or x, lambda x: x):
        with _LargestTensor() as mode:
            if path == "tapa":
                out = _tapa(inputs, torch.full((H,), 0.5, requires_grad=True), chunk)
            else:
                out = causal_attention_torch(inputs[0], inputs[1], inputs[4], scale=0.3,
                                             alibi_slopes=torch.rand(H, requires_grad=True), chunk_size=chunk)
            out.sum().backward()
    tile = B * H * chunk * length
    assert mode.largest <= tile < B * H * length * length // 4
    assert max(saved) <= B * H * length * max(DA, DV)

"""The lab's kernels are ``torch.library`` custom ops: their schemas, fake (shape-only) kernels and registered autograd
pass ``torch.library.opcheck`` (the Triton ops through the interpreter on CPU), and ``torch.compile(fullgraph=True)``
captures the public functions without a graph break and keeps every gradient, the per-head ALiBi slopes and TAPA
alpha included."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor
from torch.library import opcheck

import tapa_lab.kernels.triton_attention  # noqa: F401  (registers the Triton ops)
import tapa_lab.kernels.triton_rope  # noqa: F401
from tapa_lab.kernels import causal_attention, cpu_build, rope_rotate, tapa_attention
from tapa_lab.kernels.triton_score import ALIBI, PLAIN, TAPA

B, H, HKV, LQ, LK, D = 1, 4, 2, 12, 20, 8


def _leaf(*shape: int, seed: int, positive: bool = False) -> Tensor:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return (x.abs() * 0.5 + 0.1 if positive else x).requires_grad_()


def _qkv(seed: int) -> tuple[Tensor, ...]:
    """q_amp, k_amp, q_phase, k_phase, v: queries at the last LQ of LK positions, grouped-query heads."""
    return (_leaf(B, H, LQ, D, seed=seed), _leaf(B, HKV, LK, D, seed=seed + 1), _leaf(B, H, LQ, D, seed=seed + 2),
            _leaf(B, HKV, LK, D, seed=seed + 3), _leaf(B, HKV, LK, D, seed=seed + 4))


def _causal_qkv(seed: int) -> tuple[Tensor, ...]:
    """q, k, v of plain or ALiBi attention."""
    q_amp, k_amp, _, _, v = _qkv(seed)
    return q_amp, k_amp, v


def _to(device: torch.device, args: tuple | list) -> list:
    """The tensors of ``args`` on ``device`` (leaves keep requiring grad); other values as they are."""
    return [a.detach().to(device).requires_grad_(a.requires_grad) if isinstance(a, Tensor) else a for a in args]


def _documents() -> Tensor:
    return torch.tensor([[0] * 7 + [1] * 8 + [2] * 5])  # (B, LK)


def _rope_tables() -> tuple[Tensor, Tensor]:
    angles = torch.rand(LQ, D // 4, generator=torch.Generator().manual_seed(9)) * 6
    return angles.cos(), angles.sin()  # partial rotary: R = D / 2


OPS: dict[str, Callable[[], tuple[object, tuple]]] = {
    "tapa_blockwise-learnable-alpha": lambda: (torch.ops.tapa_lab.tapa_blockwise.default, (
        *_qkv(0), _leaf(H, seed=5, positive=True), 0.0, 0.35, 2.2, 8, None)),
    "tapa_blockwise-float-alpha-documents": lambda: (torch.ops.tapa_lab.tapa_blockwise.default, (
        *_qkv(10), None, 0.3, 0.35, 2.2, 8, _documents())),
    "tapa_cpu": lambda: (torch.ops.tapa_lab.tapa_cpu.default, (*_qkv(100), 0.3, 0.35, 2.2, 4, 8)),
    "causal_blockwise-alibi": lambda: (torch.ops.tapa_lab.causal_blockwise.default, (
        *_causal_qkv(20), _leaf(H, seed=25, positive=True), 0.35, 8, None)),
    "causal_blockwise-plain": lambda: (torch.ops.tapa_lab.causal_blockwise.default, (
        *_causal_qkv(30), None, 0.35, 5, None)),
    "triton_attention-tapa": lambda: (torch.ops.tapa_lab.triton_attention.default, (
        *_qkv(40), _leaf(H, seed=45, positive=True), None, TAPA.value, 0.35, 2.2)),
    "triton_attention-tapa-documents": lambda: (torch.ops.tapa_lab.triton_attention.default, (
        *_qkv(90), _leaf(H, seed=95, positive=True), _documents(), TAPA.value, 0.35, 2.2)),
    "triton_attention-alibi": lambda: (torch.ops.tapa_lab.triton_attention.default, (
        *_causal_qkv(50)[:2], None, None, _causal_qkv(50)[2], _leaf(H, seed=55, positive=True), None, ALIBI.value,
        0.35, 0.0)),
    "triton_attention-plain": lambda: (torch.ops.tapa_lab.triton_attention.default, (
        *_causal_qkv(60)[:2], None, None, _causal_qkv(60)[2], None, None, PLAIN.value, 0.35, 0.0)),
    "triton_rope": lambda: (torch.ops.tapa_lab.triton_rope.default, (
        _leaf(B, H, LQ, D, seed=70), *_rope_tables(), 1.5, False)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(OPS))
def test_custom_op_passes_opcheck(name, device):
    if name == "tapa_cpu" and (device.type != "cpu" or cpu_build.cpu_kernel() is None):
        pytest.skip("the fused CPU kernel runs on CPU tensors, where it could be built")
    op, args = OPS[name]()
    checks = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    results = opcheck(op, tuple(_to(device, args)), test_utils=checks)
    assert set(results.values()) == {"SUCCESS"}, results


def _tapa(backend: str) -> Callable[..., Tensor]:
    def attention(q_amp, k_amp, q_phase, k_phase, v, head_param):
        return tapa_attention(q_amp, k_amp, q_phase, k_phase, v, alpha=head_param, amp_scale=0.35,
                              phase_scale=0.35, backend=backend)
    return attention


def _alibi(backend: str) -> Callable[..., Tensor]:
    def attention(q_amp, k_amp, q_phase, k_phase, v, head_param):
        return causal_attention(q_amp, k_amp, v, scale=0.35, alibi_slopes=head_param, backend=backend)
    return attention


def _rope_then_attention(backend: str) -> Callable[..., Tensor]:
    cos, sin = _rope_tables()

    def attention(q_amp, k_amp, q_phase, k_phase, v, head_param):
        q = rope_rotate(q_amp, cos.to(q_amp.device), sin.to(q_amp.device), backend=backend)
        return causal_attention(q, k_amp[:, :, -LQ:], v[:, :, -LQ:], scale=0.35, backend=backend)
    return attention


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("make", [_tapa, _alibi, _rope_then_attention], ids=lambda f: f.__name__.strip("_"))
def test_compiled_attention_is_one_graph_with_eager_gradients(make, backend, device):
    """``aot_eager`` traces through Dynamo and AOTAutograd (fake tensors, the registered backward) but runs the same
    kernels, so outputs and gradients match eager to fp32 rounding."""
    torch.compiler.reset()
    leaves = _to(device, [*_qkv(80), _leaf(H, seed=85, positive=True)])
    grad_out = torch.randn(B, H, LQ, D, generator=torch.Generator().manual_seed(86)).to(device)
    results = []
    for attention in (make(backend), torch.compile(make(backend), backend="aot_eager", fullgraph=True)):
        out = attention(*leaves)
        results.append((out, *torch.autograd.grad(out, leaves, grad_out, allow_unused=True)))
    for name, eager, compiled in zip(["out", "q", "k", "q_phase", "k_phase", "v", "head_param"], *results,
                                     strict=True):
        torch.testing.assert_close(compiled, eager, msg=name)
    assert results[0][-1] is not None or make is _rope_then_attention  # the per-head parameter has a gradient

"""The kernel API: backend dispatch, its error messages, and the Triton launcher's input checks."""

from __future__ import annotations

import pytest
import torch

from tapa_lab.kernels import causal_attention, tapa_attention
from tapa_lab.kernels.cpu_build import cpu_kernel
from tapa_lab.kernels.launch import interpreter_enabled


def _qkv(lq: int = 8, lk: int = 8, heads: int = 2, kv_heads: int = 1, dim: int = 16, dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    return (torch.randn(1, heads, lq, dim, generator=gen).to(dtype),
            torch.randn(1, kv_heads, lk, dim, generator=gen).to(dtype),
            torch.randn(1, kv_heads, lk, dim, generator=gen).to(dtype))


def test_auto_on_cpu_is_the_fused_kernel_or_the_torch_path() -> None:
    """A scalar alpha runs the fused CPU kernel (same maths, its own float order: equal to rounding); a per-head alpha
    takes the blockwise torch path itself (bit-identical)."""
    q, k, v = _qkv()
    for alpha in (0.5, torch.tensor([0.2, 0.4])):
        auto = tapa_attention(q[..., :8], k[..., :8], q[..., 8:], k[..., 8:], v, alpha=alpha, amp_scale=0.3,
                              phase_scale=0.3)
        torch_path = tapa_attention(q[..., :8], k[..., :8], q[..., 8:], k[..., 8:], v, alpha=alpha, amp_scale=0.3,
                                    phase_scale=0.3, backend="torch")
        if isinstance(alpha, torch.Tensor) or cpu_kernel() is None:
            assert torch.equal(auto, torch_path)
        else:
            torch.testing.assert_close(auto, torch_path, rtol=2e-5, atol=2e-5)
    slopes = torch.tensor([0.5, 0.25])
    assert torch.equal(causal_attention(q, k, v, scale=0.25, alibi_slopes=slopes),
                       causal_attention(q, k, v, scale=0.25, alibi_slopes=slopes, backend="torch"))


def test_unknown_backend_is_rejected() -> None:
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="backend must be one of auto, triton, torch"):
        causal_attention(q, k, v, scale=0.25, backend="cuda")


def test_triton_on_cpu_without_interpreter_says_how_to_enable_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q, k, v = _qkv()
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        causal_attention(q, k, v, scale=0.25, backend="triton")


@pytest.mark.skipif(not interpreter_enabled() and not torch.cuda.is_available(), reason="needs Triton to run")
@pytest.mark.parametrize(("change", "message"), [
    ({"dtype": torch.float64}, "must share one dtype among"),
    ({"kv_heads": 3, "heads": 4}, "multiple of the key/value heads"),
    ({"lq": 9, "lk": 8}, "Lq <= Lk"),
    ({"dim": 512}, "head_dim 512"),
])
def test_launcher_names_what_is_wrong(change: dict, message: str, device: torch.device) -> None:
    q, k, v = (x.to(device) for x in _qkv(**change))
    with pytest.raises(ValueError, match=message):
        causal_attention(q, k, v, scale=0.25, backend="triton")


@pytest.mark.skipif(not interpreter_enabled() and not torch.cuda.is_available(), reason="needs Triton to run")
def test_launcher_checks_shapes_and_per_head_parameters(device: torch.device) -> None:
    q, k, v = (x.to(device) for x in _qkv())
    with pytest.raises(ValueError, match="expected \\(1, 1, 8, \\*\\) like k"):
        causal_attention(q, k, v[:, :, :5], scale=0.25, backend="triton")
    with pytest.raises(ValueError, match="one value per head"):
        causal_attention(q, k, v, scale=0.25, alibi_slopes=torch.ones(3, device=device), backend="triton")
    with pytest.raises(ValueError, match="share their head_dim"):
        tapa_attention(q[..., :8], k[..., :4], q[..., 8:], k[..., 8:], v, alpha=0.1, amp_scale=1.0, phase_scale=1.0,
                       backend="triton")

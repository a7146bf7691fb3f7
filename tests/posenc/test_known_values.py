"""Known values: RoPE-family frequencies against the papers' formulas worked by hand, ALiBi slopes, TAPA against an
explicit per-pair loop, and the configuration errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from tapa_lab.errors import ConfigError
from tapa_lab.posenc import (
    TAPA,
    ALiBi,
    Llama3RoPE,
    NTKAwareRoPE,
    PositionInterpolation,
    RoPE,
    TAPALinearPhase,
    TAPAStaticPhase,
    YaRN,
)


def bound(pe, n_heads=4, n_kv_heads=4, head_dim=8):
    pe.bind(n_heads, n_kv_heads, head_dim)
    return pe


def test_rope_is_identity_at_position_zero():
    pe = bound(RoPE(backend="torch"))
    q, k = torch.randn(1, 4, 1, 8, dtype=torch.float64), torch.randn(1, 4, 1, 8, dtype=torch.float64)
    q2, k2 = pe.transform_qk(q, k, torch.tensor([0]))
    torch.testing.assert_close(q2, q)
    torch.testing.assert_close(k2, k)


def test_rope_rotates_pairs_by_position_times_frequency():
    """Position 3, head dim 4 (pairs (0,2), (1,3)), w = (1, 0.01): the pair (x0, x2) turns by 3 radians."""
    pe = bound(RoPE(base=10000.0, backend="torch"), head_dim=4)
    x = torch.tensor([[[[1.0, 0.0, 0.0, 1.0]]]], dtype=torch.float64).expand(1, 4, 1, 4)
    rotated, _ = pe.transform_qk(x, x, torch.tensor([3]))
    expected = torch.tensor([math.cos(3), -math.sin(0.03), math.sin(3), math.cos(0.03)], dtype=torch.float64)
    torch.testing.assert_close(rotated[0, 0, 0], expected)


# Hand-worked for R = 8, base = 1e4: w = (1, 1e-1, 1e-2, 1e-3).
def test_position_interpolation_divides_frequencies():
    pe = bound(PositionInterpolation(factor=4.0))
    torch.testing.assert_close(pe.inv_freq(), torch.tensor([0.25, 0.025, 0.0025, 0.00025], dtype=torch.float64))


def test_ntk_aware_rescales_the_base():
    """base' = 1e4 * 4^(8/6) = 63496.04; w_d = base'^(-d/4): 1, 0.06300, 0.003969, 0.0002500."""
    pe = bound(NTKAwareRoPE(factor=4.0))
    expected = torch.tensor([1.0, 0.0629960525, 0.0039685026, 0.00025], dtype=torch.float64)
    torch.testing.assert_close(pe.inv_freq(), expected, rtol=1e-8, atol=0)
    # the lowest frequency is exactly the PI one, the highest is untouched (the point of NTK-aware scaling)
    assert pe.inv_freq()[-1].item() == pytest.approx(1e-3 / 4)


def test_yarn_paper_ramp_frequencies_and_temperature():
    """The paper's ramp over rotations.

    L_orig = 128: wavelengths 2 pi / w = (6.283, 62.83, 628.3, 6283); r = 128 / wavelength = (20.37, 2.037, 0.2037,
    0.02037); gamma = clamp((r - 1) / 31, 0, 1) = (0.62490, 0.033454, 0, 0); w' = (1 - gamma) w / 4 + gamma w."""
    pe = bound(YaRN(factor=4.0, original_max_len=128, beta_fast=32, beta_slow=1, ramp_over="rotations"))
    gamma = [(128 / (2 * math.pi) - 1) / 31, (128 / (2 * math.pi / 0.1) - 1) / 31, 0.0, 0.0]
    torch.testing.assert_close(pe.ramp(), torch.tensor(gamma, dtype=torch.float64))
    expected = [(1 - g) * w / 4 + g * w for g, w in zip(gamma, [1.0, 0.1, 0.01, 0.001], strict=True)]
    torch.testing.assert_close(pe.inv_freq(), torch.tensor(expected, dtype=torch.float64))
    assert pe.inv_freq()[0].item() == pytest.approx(0.718673, abs=1e-6)
    assert pe.attention_factor() == pytest.approx(0.1 * math.log(4) + 1)  # 1.13863


def test_yarn_scales_logits_by_the_temperature():
    pe = bound(YaRN(factor=4.0, original_max_len=128))
    q = torch.randn(1, 4, 1, 8, dtype=torch.float64)
    q2, _ = pe.transform_qk(q, q, torch.tensor([0]))
    torch.testing.assert_close(q2, q * (0.1 * math.log(4) + 1))


def test_alibi_slopes_for_8_and_12_heads():
    assert bound(ALiBi(), n_heads=8).slopes.tolist() == [2.0 ** -i for i in range(1, 9)]
    twelve = [2.0 ** -i for i in range(1, 9)] + [2.0 ** -0.5, 2.0 ** -1.5, 2.0 ** -2.5, 2.0 ** -3.5]
    torch.testing.assert_close(bound(ALiBi(), n_heads=12).slopes, torch.tensor(twelve))


def tapa_loop(q, k, v, alpha, theta, two_pi=True):
    """score(i,j) = qA.kA/sqrt(Da) * cos(c |i-j|^alpha qP.kP/sqrt(Dp)), one pair at a time; q,k,v (L, D) float64."""
    length, dim = q.shape
    da = round(theta * dim)
    dp = dim - da
    c = 2 * math.pi if two_pi else 1.0
    out = torch.zeros_like(v)
    for i in range(length):
        scores = []
        for j in range(i + 1):
            amplitude = float(q[i, :da] @ k[j, :da]) / math.sqrt(da)
            phase = float(q[i, da:] @ k[j, da:]) / math.sqrt(dp)
            scores.append(amplitude * math.cos(c * abs(i - j) ** alpha * phase))
        weights = torch.softmax(torch.tensor(scores, dtype=torch.float64), dim=0)
        out[i] = weights @ v[: i + 1]
    return out


@pytest.mark.parametrize("theta,alpha", list(itertools.product([0.25, 0.5, 0.75], [0.1, 0.5, 1.0])))
def test_tapa_matches_explicit_per_pair_loop(theta, alpha):
    pe = bound(TAPA(alpha=alpha, theta=theta, backend="torch"), n_heads=1, n_kv_heads=1, head_dim=8)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, 9, 8, generator=g, dtype=torch.float64) for _ in range(3))
    out = pe.attend(q, k, v, torch.arange(9))
    # |i-j|^alpha is formed in fp32 by design (TAPA.md section 4), hence 1e-6 rather than float64 round-off
    torch.testing.assert_close(out[0, 0], tapa_loop(q[0, 0], k[0, 0], v[0, 0], alpha, theta), rtol=1e-6, atol=1e-6)


def test_tapa_without_two_pi():
    pe = bound(TAPA(alpha=0.5, two_pi=False, backend="torch"), n_heads=1, n_kv_heads=1, head_dim=8)
    q, k, v = (torch.randn(1, 1, 6, 8, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(pe.attend(q, k, v, torch.arange(6))[0, 0],
                               tapa_loop(q[0, 0], k[0, 0], v[0, 0], 0.5, 0.5, two_pi=False))


def test_tapa_linear_phase_is_sum_of_phase_parts():
    """phi = (sum qP_i + sum kP_j)/sqrt(Dp): equals quadratic TAPA fed with qP' = (sum qP, 1), kP' = (1, sum kP)."""
    pe = bound(TAPALinearPhase(alpha=0.5, backend="torch"), n_heads=1, n_kv_heads=1, head_dim=8)
    q, k, v = (torch.randn(1, 1, 6, 8, dtype=torch.float64) for _ in range(3))
    out = pe.attend(q, k, v, torch.arange(6))[0, 0]
    expected = torch.zeros_like(v[0, 0])
    for i in range(6):
        scores = torch.stack([
            (q[0, 0, i, :4] @ k[0, 0, j, :4]) / 2
            * torch.cos(2 * math.pi * abs(i - j) ** 0.5 * (q[0, 0, i, 4:].sum() + k[0, 0, j, 4:].sum()) / 2)
            for j in range(i + 1)])
        expected[i] = torch.softmax(scores, 0) @ v[0, 0, : i + 1]
    torch.testing.assert_close(out, expected)


def test_tapa_static_phase_ignores_phase_dims_and_learns_its_scalar():
    pe = bound(TAPAStaticPhase(phase_init=0.3, backend="torch"), n_heads=2, n_kv_heads=2, head_dim=8)
    q, k, v = (torch.randn(1, 2, 6, 8, dtype=torch.float64) for _ in range(3))
    q2 = q.clone()
    q2[..., 4:] = torch.randn_like(q2[..., 4:])
    positions = torch.arange(6)
    torch.testing.assert_close(pe.attend(q, k, v, positions), pe.attend(q2, k, v, positions))
    pe.attend(q, k, v, positions).sum().backward()
    assert pe.static_phase.grad is not None and pe.static_phase.grad.abs().sum() > 0


def test_tapa_learnable_alpha_gets_gradient_and_stays_positive():
    pe = bound(TAPA(alpha=0.1, learnable_alpha=True, backend="torch"), n_heads=2, n_kv_heads=2, head_dim=8)
    assert torch.allclose(pe.head_alpha(), torch.full((2,), 0.1))
    q, k, v = (torch.randn(1, 2, 10, 8) for _ in range(3))
    pe.attend(q, k, v, torch.arange(10)).square().sum().backward()
    assert pe.log_alpha.grad is not None and torch.isfinite(pe.log_alpha.grad).all()
    assert pe.log_alpha.grad.abs().sum() > 0


@pytest.mark.parametrize("make,field", [
    (lambda: TAPA(theta=1.0), "model.posenc.init_args.theta"),
    (lambda: TAPA(theta=0.0), "model.posenc.init_args.theta"),
    (lambda: TAPA(alpha=0.0), "model.posenc.init_args.alpha"),
    (lambda: TAPA(alpha=-1.0), "model.posenc.init_args.alpha"),
    (lambda: YaRN(factor=0.5), "model.posenc.init_args.factor"),
    (lambda: YaRN(beta_fast=1.0, beta_slow=2.0), "model.posenc.init_args.beta_fast"),
    (lambda: YaRN(ramp_over="paper"), "model.posenc.init_args.ramp_over"),
    (lambda: PositionInterpolation(factor=0.9), "model.posenc.init_args.factor"),
    (lambda: Llama3RoPE(high_freq_factor=0.5), "model.posenc.init_args.high_freq_factor"),
    (lambda: Llama3RoPE(original_max_len=0), "model.posenc.init_args.original_max_len"),
    (lambda: RoPE(rotary_fraction=0.0), "model.posenc.init_args.rotary_fraction"),
    (lambda: RoPE(base=1.0), "model.posenc.init_args.base"),
    (lambda: TAPA(backend="cuda"), "backend"),
])
def test_out_of_range_values_name_the_field(make, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        make()


def test_bind_errors_name_the_field():
    with pytest.raises(ConfigError, match="head dim"):
        RoPE().bind(4, 4, 7)  # odd head dim
    with pytest.raises(ConfigError, match=r"model\.posenc\.init_args\.theta"):
        TAPA(theta=0.1).bind(4, 4, 4)  # Da = round(0.4) = 0
    with pytest.raises(ConfigError, match=r"model\.posenc\.init_args\.theta"):
        TAPA(theta=0.9).bind(4, 4, 4)  # Dp = 0
    with pytest.raises(ConfigError, match=r"n_kv_heads"):
        TAPA().bind(6, 4, 8)

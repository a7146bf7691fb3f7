"""TAPA's diagnosis options (phase temperature, initial scale of the amplitude and phase parts, phase normalisation,
phase offset):
the paper's defaults are unchanged bit for bit, each option has its documented value at init, gradients reach the new
parameters, and every option is cache-safe (queries at the last Lq < Lk positions see the same scores)."""

from __future__ import annotations

import math

import pytest
import torch

from tapa_lab.errors import ConfigError
from tapa_lab.kernels import tapa_attention
from tapa_lab.model import DecoderConfig, DecoderLM
from tapa_lab.posenc import TAPA, RoPE, TAPALinearPhase

H, HKV, D, L = 4, 2, 16, 24


def _qkv(seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(2, H, L, D, generator=gen, dtype=dtype), torch.randn(2, HKV, L, D, generator=gen, dtype=dtype),
            torch.randn(2, HKV, L, D, generator=gen, dtype=dtype))


def _bound(pe: TAPA) -> TAPA:
    pe.bind(H, HKV, D)
    return pe


def _paper(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, phase_factor: float = 1.0) -> torch.Tensor:
    return tapa_attention(q[..., :8], k[..., :8], q[..., 8:], k[..., 8:], v, alpha=0.1, amp_scale=8**-0.5,
                          phase_scale=phase_factor * 8**-0.5, backend="torch")


def test_defaults_are_the_paper_bit_for_bit():
    q, k, v = _qkv(dtype=torch.float32)
    pe = _bound(TAPA(backend="torch"))
    assert torch.equal(pe.attend(q, k, v, torch.arange(L)), _paper(q, k, v))
    assert not list(pe.parameters())
    torch.manual_seed(3)
    tapa_model = DecoderLM(64, DecoderConfig(d_model=64, n_heads=H, n_kv_heads=HKV), TAPA())
    torch.manual_seed(3)
    rope_model = DecoderLM(64, DecoderConfig(d_model=64, n_heads=H, n_kv_heads=HKV), RoPE())
    tapa_state = {k: t for k, t in tapa_model.state_dict().items() if not k.endswith((".amplitude", ".phase"))}
    for index, block in enumerate(tapa_model.blocks):  # TAPA's q, k projections are split into amplitude and phase
        tapa_state |= {f"blocks.{index}.attn.wq.weight": block.attn.wq.weight,
                       f"blocks.{index}.attn.wk.weight": block.attn.wk.weight}
    rope_state = rope_model.state_dict()
    assert tapa_state.keys() == rope_state.keys()
    for name, tensor in rope_state.items():
        assert torch.equal(tapa_state[name], tensor), name


def test_fixed_temperature_divides_the_phase():
    q, k, v = _qkv()
    pe = _bound(TAPA(backend="torch", phase_temperature=4.0))
    torch.testing.assert_close(pe.attend(q, k, v, torch.arange(L)), _paper(q, k, v, 0.25), rtol=1e-12, atol=1e-12)


def test_learnable_temperature_starts_at_its_value_and_gets_a_gradient():
    q, k, v = _qkv()
    pe = _bound(TAPA(backend="torch", phase_temperature=4.0, learnable_temperature=True)).double()
    assert pe.log_temperature.shape == (H,)
    torch.testing.assert_close(pe.log_temperature.exp(), torch.full((H,), 4.0, dtype=torch.float64))
    out = pe.attend(q, k, v, torch.arange(L))
    torch.testing.assert_close(out, _paper(q, k, v, 0.25), rtol=1e-6, atol=1e-6)  # log tau is stored in fp32
    out.square().sum().backward()
    grad = pe.log_temperature.grad
    assert grad is not None and torch.isfinite(grad).all() and (grad != 0).all()


def test_init_scales_multiply_the_amplitude_and_phase_rows_of_wq_and_wk():
    config = DecoderConfig(d_model=64, n_layers=1, n_heads=H, n_kv_heads=HKV)
    torch.manual_seed(5)
    plain = DecoderLM(64, config, TAPA(theta=0.25))
    torch.manual_seed(5)
    scaled = DecoderLM(64, config, TAPA(theta=0.25, amp_init_scale=3.0, phase_init_scale=0.5))
    da = 4
    for name, heads in (("wq", H), ("wk", HKV)):
        before = getattr(plain.blocks[0].attn, name).weight.view(heads, D, -1)
        after = getattr(scaled.blocks[0].attn, name).weight.view(heads, D, -1)
        torch.testing.assert_close(after[:, :da], 3.0 * before[:, :da], rtol=0, atol=0)
        torch.testing.assert_close(after[:, da:], 0.5 * before[:, da:], rtol=0, atol=0)
    assert torch.equal(plain.blocks[0].attn.wv.weight, scaled.blocks[0].attn.wv.weight)


@pytest.mark.parametrize("norm", ["rms", "rms_gain"])
def test_phase_norm_gives_unit_rms_phase_vectors_and_gains_learn(norm):
    q, k, v = _qkv()
    pe = _bound(TAPA(backend="torch", phase_norm=norm)).double()
    q_vec, k_vec, scale = pe.phase_operands(3.0 * q[..., 8:], 0.1 * k[..., 8:])
    assert math.isclose(scale, 8**-0.5)
    for x in (q_vec, k_vec):
        torch.testing.assert_close(x.pow(2).mean(-1), torch.ones(x.shape[:-1], dtype=x.dtype), rtol=0, atol=1e-3)
    out = pe.attend(q, k, v, torch.arange(L))
    q_norm, k_norm, _ = pe.phase_operands(q[..., 8:], k[..., 8:])
    expected = tapa_attention(q[..., :8], k[..., :8], q_norm, k_norm, v, alpha=0.1, amp_scale=8**-0.5,
                              phase_scale=8**-0.5, backend="torch")
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    if norm == "rms_gain":
        out.square().sum().backward()
        assert pe.q_phase_gain.grad.abs().sum() > 0 and pe.k_phase_gain.grad.abs().sum() > 0


@pytest.mark.parametrize("cls", [TAPA, TAPALinearPhase])
def test_every_option_is_cache_safe(cls):
    """Queries at the last 5 of L positions get the last 5 rows of the full attention."""
    q, k, v = _qkv(seed=1)
    pe = _bound(cls(backend="torch", phase_temperature=2.0, learnable_temperature=True, phase_norm="rms_gain",
                    amp_init_scale=2.0, phase_init_scale=0.5, phase_offset=0.2)).double()
    with torch.no_grad():
        pe.q_phase_gain.uniform_(0.5, 1.5)
        pe.log_temperature.uniform_(-1.0, 1.0)
        pe.phase_bias.uniform_(-1.0, 1.0)
    full = pe.attend(q, k, v, torch.arange(L))
    tail = pe.attend(q[:, :, -5:], k, v, torch.arange(L))
    torch.testing.assert_close(tail, full[:, :, -5:], rtol=1e-12, atol=1e-12)
    scores = pe.pair_scores(q[0], k[0].repeat_interleave(2, 0), torch.tensor([L - 1]), torch.tensor([3]))
    assert torch.isfinite(scores).all() and scores.shape == (H, 1)


@pytest.mark.parametrize("kwargs,field", [({"phase_temperature": 0.0}, "model.posenc.init_args.phase_temperature"),
                                          ({"amp_init_scale": -1.0}, "model.posenc.init_args.amp_init_scale"),
                                          ({"phase_init_scale": 0.0}, "model.posenc.init_args.phase_init_scale"),
                                          ({"phase_norm": "layer"}, "model.posenc.init_args.phase_norm"),
                                          ({"phase_offset": 0.0}, "model.posenc.init_args.phase_offset"),
                                          ({"phase_offset": math.inf}, "model.posenc.init_args.phase_offset")])
def test_bad_option_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        TAPA(**kwargs)


def test_pair_scores_follow_the_temperature():
    q, k, _ = _qkv()
    plain, hot = _bound(TAPA()), _bound(TAPA(phase_temperature=2.0))
    args = (q[0], k[0].repeat_interleave(2, 0), torch.tensor([10]), torch.tensor([2]))
    amp = (q[0, :, 10, :8] * k[0].repeat_interleave(2, 0)[:, 2, :8]).sum(-1) / math.sqrt(8)
    phase = (q[0, :, 10, 8:] * k[0].repeat_interleave(2, 0)[:, 2, 8:]).sum(-1) / math.sqrt(8)
    torch.testing.assert_close(hot.pair_scores(*args)[:, 0], amp * torch.cos(2 * math.pi * 8**0.1 * phase / 2))
    torch.testing.assert_close(plain.pair_scores(*args)[:, 0], amp * torch.cos(2 * math.pi * 8**0.1 * phase))


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_phase_offset_adds_a_learned_constant_to_every_phase(temperature):
    """score = A cos(2 pi d^alpha (phi + c_h) / tau), on the attention path and in pair_scores; c_h learns."""
    q, k, v = _qkv(seed=2)
    pe = _bound(TAPA(backend="torch", phase_offset=0.3, phase_temperature=temperature)).double()
    assert not torch.equal(pe.phase_bias, torch.zeros(H)) and pe.phase_bias.shape == (H,)
    with torch.no_grad():
        pe.phase_bias.copy_(torch.tensor([0.3, -0.2, 0.05, 1.1]))
    k_heads = k[0].repeat_interleave(2, 0)  # (H, L, D)
    query, key = torch.tril_indices(L, L)
    amp = (q[0][:, query, :8] * k_heads[:, key, :8]).sum(-1) / math.sqrt(8)  # (H, n)
    phase = (q[0][:, query, 8:] * k_heads[:, key, 8:]).sum(-1) / math.sqrt(8) + pe.phase_bias.detach()[:, None]
    expected = amp * torch.cos(2 * math.pi * (query - key).double().pow(0.1) * phase / temperature)
    torch.testing.assert_close(pe.pair_scores(q[0], k_heads, query, key), expected)
    dense = torch.full((H, L, L), float("-inf"), dtype=torch.float64)
    dense[:, query, key] = expected
    reference = dense.softmax(-1) @ v[0].repeat_interleave(2, 0)  # (H, L, D)
    out = pe.attend(q, k, v, torch.arange(L))
    torch.testing.assert_close(out[0], reference, rtol=1e-10, atol=1e-10)
    out.square().sum().backward()
    assert torch.isfinite(pe.phase_bias.grad).all() and (pe.phase_bias.grad != 0).all()

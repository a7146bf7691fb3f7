"""Phase analysis: the phase, turn and contrast it reports are TAPA's own, recomputed independently from q and k."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tapa_lab.errors import ConfigError
from tapa_lab.eval.phase import PhaseConfig, evaluate_phase
from tapa_lab.posenc import TAPA, RoPE, TAPALinearPhase, TAPAStaticPhase

LENGTH = 48


def _phase_of(model, documents, **config):
    return evaluate_phase(model, documents, PhaseConfig(**{"windows": 2, "pairs": 400, **config}), LENGTH,
                          torch.device("cpu"), lambda _n: None)


@pytest.mark.parametrize("phase_norm", ["none", "rms", "rms_gain"])
def test_pair_phase_is_the_dot_product_of_the_phase_parts(make_model, phase_norm):
    """Quadratic phase: phi = qP.kP / sqrt(Dp) / tau, from the raw projections (RMS-normalised when asked)."""
    model = make_model(TAPA(alpha=0.5, theta=0.25, backend="torch", phase_temperature=2.0, phase_norm=phase_norm))
    attn = model.blocks[0].attn
    tapa = attn.posenc  # each layer holds its own bound copy
    x = torch.randn(1, 10, 32, generator=torch.Generator().manual_seed(3))
    q, k, _ = attn.project_qkv(x)
    k = k[0].repeat_interleave(2, dim=0).double()  # (H, L, D)
    q = q[0].double()
    query, key = torch.tril_indices(10, 10)
    with torch.no_grad():
        amplitude, phase, reach = tapa.pair_components(q.float(), k.float(), query, key)
    da = tapa.amp_dim
    qp, kp = q[:, query, da:], k[:, key, da:]
    if phase_norm != "none":
        qp = qp / qp.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
        kp = kp / kp.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    expected = (qp * kp).sum(-1) / math.sqrt(tapa.phase_dim) / 2.0
    assert torch.allclose(phase, expected, rtol=1e-5, atol=1e-6)
    assert torch.allclose(amplitude, (q[:, query, :da] * k[:, key, :da]).sum(-1) / math.sqrt(da), rtol=1e-5)
    assert torch.allclose(reach, 2 * math.pi * (query - key).double()[None].pow(0.5))


def test_static_phase_turn_and_contrast_follow_the_closed_form(make_model, documents):
    """A static phase c_h is the same for every pair, so turn and contrast are exact functions of c_h."""
    model = make_model(TAPAStaticPhase(alpha=0.2, backend="torch"))
    values = torch.tensor([0.01, -0.05, 0.3, 1.2])
    for block in model.blocks:
        block.attn.posenc.static_phase.data.copy_(values)
    result = _phase_of(model, documents)
    span = 2 * math.pi * ((LENGTH - 1) ** 0.2 - 1)
    for layer in result["layers"]:
        for head, c in zip(layer["heads"], values.tolist(), strict=True):
            assert head["phase_mean"] == pytest.approx(c) and head["phase_std"] == pytest.approx(0, abs=1e-12)
            turn = abs(c) * span / math.pi
            assert head["turn_quantiles"]["50%"] == pytest.approx(turn)
            assert head["sensitive_fraction"] == float(turn >= 0.5)
            contrast = abs(math.cos(2 * math.pi * (LENGTH - 1) ** 0.2 * c) - math.cos(2 * math.pi * c))
            assert head["contrast_mean"] == pytest.approx(contrast)


def test_temperature_and_init_scale_scale_the_phase(make_model, documents):
    """Same weights: tau = 4 divides every phase (and turn) by 4; phase_init_scale 3 multiplies the first layer's
    phases by 9 (both q and k rows x 3; its input does not depend on the scale)."""
    base = _phase_of(make_model(TAPA(backend="torch")), documents)
    cooled = _phase_of(make_model(TAPA(backend="torch", phase_temperature=4.0)), documents)
    scaled = _phase_of(make_model(TAPA(backend="torch", phase_init_scale=3.0)), documents)
    for b, c in zip(base["layers"][0]["heads"], cooled["layers"][0]["heads"], strict=True):
        assert c["phase_std"] == pytest.approx(b["phase_std"] / 4, rel=1e-5)
        assert c["turn_quantiles"]["50%"] == pytest.approx(b["turn_quantiles"]["50%"] / 4, rel=1e-5)
    for b, s in zip(base["layers"][0]["heads"], scaled["layers"][0]["heads"], strict=True):
        assert s["phase_std"] == pytest.approx(b["phase_std"] * 9, rel=1e-4)
    assert scaled["turn_median"] > base["turn_median"]


def test_linear_phase_and_learnable_alpha_run(make_model, documents):
    result = _phase_of(make_model(TAPALinearPhase(backend="torch", learnable_alpha=True)), documents)
    assert result["length"] == LENGTH and len(result["layers"]) == 2
    assert all(np.isfinite(h["phase_std"]) for layer in result["layers"] for h in layer["heads"])


def test_phase_analysis_refuses_other_encodings_and_bad_fields(make_model):
    with pytest.raises(ConfigError, match="phase: the phase analysis needs a TAPA-family PE.*RoPE"):
        PhaseConfig().validate(32, 1000, make_model(RoPE(backend="torch")))
    tapa = make_model(TAPA(backend="torch"))
    for field, config in (("phase.multiple", PhaseConfig(multiple=0)), ("phase.windows", PhaseConfig(windows=0)),
                          ("phase.pairs", PhaseConfig(windows=4, pairs=3)),
                          ("phase.multiple", PhaseConfig(multiple=100))):
        with pytest.raises(ConfigError, match=field):
            config.validate(32, 1000, tapa)

"""Distance bias: the Monte Carlo RoPE bias matches the closed form; the trained-model analysis scores pairs exactly as
the model's attention does."""

from __future__ import annotations

import json

import pytest
import torch

from tapa_lab.errors import ConfigError
from tapa_lab.eval.bias_theory import (
    bias_theory,
    distance_grid,
    mean_vector,
    rope_closed_form,
    rope_monte_carlo,
    tapa_monte_carlo,
)
from tapa_lab.eval.bias_trained import BiasConfig, evaluate_bias, pair_scores, pair_terms
from tapa_lab.posenc import TAPA, ALiBi, NoPE, RoPE, TAPALinearPhase, YaRN


@pytest.mark.parametrize(("base", "q_mean", "k_mean"),
                         [(1e4, (1.0, 0.0), (1.0, 0.5)), (500.0, (0.5, -1.0), (2.0, 1.0))])
def test_monte_carlo_rope_bias_matches_closed_form_within_standard_error(base, q_mean, k_mean):
    head_dim = 32
    rope = RoPE(base=base)
    rope.bind(1, 1, head_dim)
    distances = distance_grid(4096, 64)
    generator = torch.Generator().manual_seed(0)
    mean, se = rope_monte_carlo(rope, distances, mean_vector(q_mean, head_dim), mean_vector(k_mean, head_dim), 1.0,
                                4000, generator)
    mu0 = q_mean[0] * k_mean[0] + q_mean[1] * k_mean[1]
    nu0 = q_mean[0] * k_mean[1] - q_mean[1] * k_mean[0]
    theory = rope_closed_form(distances, rope.inv_freq(), mu0, nu0, head_dim)
    z = (mean - theory) / se
    assert z.abs().max() < 4.5, z.abs().max()
    assert (z.abs() < 2).double().mean() > 0.85
    assert theory[0] == pytest.approx(mu0 * head_dim / 2 / head_dim**0.5)  # lambda = 0: every pair adds mu0


def test_tapa_monte_carlo_decays_to_zero_and_follows_the_gaussian_phase_approximation():
    head_dim = 32
    generator = torch.Generator().manual_seed(0)
    distances = distance_grid(10_000, 32)
    mean, se, gaussian = tapa_monte_carlo(0.5, 0.5, distances, mean_vector((1.0, 0.0), head_dim),
                                          mean_vector((1.0, 0.5), head_dim), 1.0, 20_000, generator)
    assert abs(float(mean[0]) - float(gaussian[0])) <= 4 * float(se[0])  # lambda = 0: the amplitude's mean
    assert mean[-1].abs() < 4 * se[-1] + 1e-3  # long range: no bias left
    assert gaussian[-1].abs() < 1e-6


def test_bias_theory_command_writes_json_and_plot(tmp_path):
    result = bias_theory(str(tmp_path), head_dim=16, max_distance=512, points=16, samples=200,
                         rope_bases=[1e4], tapa_alphas=[0.1], tapa_thetas=[0.5])
    saved = json.loads((tmp_path / "bias_theory.json").read_text())
    assert saved["curves"][0]["pe"] == "RoPE" and saved["curves"][1]["pe"] == "TAPA"
    assert len(saved["curves"][0]["mean"]) == len(result["distances"])
    assert (tmp_path / "bias_theory.png").stat().st_size > 0


@pytest.mark.parametrize("posenc", [RoPE(backend="torch"), YaRN(factor=4.0, original_max_len=8, backend="torch"),
                                    ALiBi(backend="torch"), NoPE(backend="torch"), TAPA(alpha=0.5, backend="torch"),
                                    TAPALinearPhase(backend="torch"), TAPA(backend="torch", phase_offset=0.4)],
                         ids=lambda p: type(p).__name__ + ("+offset" if getattr(p, "phase_offset", None) else ""))
def test_pair_scores_are_the_scores_the_attention_uses(posenc, make_model):
    """softmax over pair_scores of every causal pair, times V, reproduces the PE's own attention output."""
    model = make_model(posenc)
    attn = model.blocks[0].attn
    length = 12
    x = torch.randn(1, length, 32, generator=torch.Generator().manual_seed(1))
    q, k, v = attn.project_qkv(x)
    query, key = torch.tril_indices(length, length)
    with torch.no_grad():
        scores = pair_scores(attn.posenc, q[0], k[0], query, key)  # (H, n)
        expected = attn.posenc.attend(q, k, v, torch.arange(length))[0].double()  # (H, L, D)
    dense = torch.full((scores.shape[0], length, length), float("-inf"), dtype=torch.float64)
    dense[:, query, key] = scores
    v_heads = v[0].repeat_interleave(2, dim=0).double()  # (H, L, D)
    assert torch.allclose(dense.softmax(-1) @ v_heads, expected, atol=1e-5)


def test_pair_terms_rebuild_the_rope_score(make_model):
    """sum_d A_d cos(lambda w_d) + B_d sin(lambda w_d), over sqrt D, is the RoPE score (TAPA.md section 1)."""
    model = make_model(RoPE(backend="torch"))
    attn = model.blocks[0].attn
    q, k, _ = attn.project_qkv(torch.randn(1, 20, 32, generator=torch.Generator().manual_seed(2)))
    query, key = torch.tensor([19, 19, 10, 5]), torch.tensor([0, 19, 3, 5])
    with torch.no_grad():
        a, b = pair_terms(q[0], k[0], query, key)  # (H, n, D/2)
        scores = pair_scores(attn.posenc, q[0], k[0], query, key)
    angles = (query - key).double()[:, None] * attn.posenc.inv_freq()[None, :]  # (n, D/2)
    rebuilt = (a * angles.cos() + b * angles.sin()).sum(-1) / q.shape[-1] ** 0.5
    assert torch.allclose(rebuilt, scores, atol=1e-6)


def test_trained_bias_analysis_reports_every_layer_and_head(documents, make_model):
    model = make_model(TAPA(backend="torch"))
    config = BiasConfig(length=120, windows=2, short_range=(0, 10), long_range_width=20, pairs=300, moment_pairs=400,
                        position_buckets=4)
    result = evaluate_bias(model, documents, config, 120, torch.device("cpu"), lambda n: None)
    assert result["long_range"] == [99, 119] and result["windows"] == 2
    assert len(result["layers"]) == 2
    for layer in result["layers"]:
        assert [h["head"] for h in layer["heads"]] == [0, 1, 2, 3]
        assert all(sum(h["histogram_counts"]) == 300 for h in layer["heads"])
        moments = layer["moments"]["by_position"]
        assert len(moments["mean_A"]) == 4 and len(moments["mean_A"][0]) == 4 and len(moments["mean_A"][0][0]) == 4
        assert sum(moments["count"]) == 400


def test_bias_window_longer_than_every_document_names_the_field():
    with pytest.raises(ConfigError, match="bias.multiple"):
        BiasConfig(multiple=16).validate(train_seq_len=128, longest_document=1000)
    with pytest.raises(ConfigError, match="bias.long_range_width"):
        BiasConfig(length=150).validate(train_seq_len=128, longest_document=1000)

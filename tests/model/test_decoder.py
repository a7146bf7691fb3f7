"""The decoder: shapes, presets' sizes, tied embeddings, GQA projections, end-to-end causality, config errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tapa_lab.errors import ConfigError
from tapa_lab.model import DecoderConfig, DecoderLM
from tapa_lab.posenc import TAPA, ALiBi, NoPE, RoPE

PRESETS = Path(__file__).resolve().parents[2] / "experiments" / "model"


def preset(name: str) -> DecoderConfig:
    return DecoderConfig(**yaml.safe_load((PRESETS / f"{name}.yaml").read_text())["model"]["architecture"])


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_preset_sizes():
    with torch.device("meta"):
        tiny = n_params(DecoderLM(258, preset("tiny"), RoPE()))
        small = n_params(DecoderLM(258, preset("small"), RoPE()))
        base = n_params(DecoderLM(32000, preset("base"), RoPE()))
        llama = n_params(DecoderLM(128256, preset("llama3-8b"), RoPE()))
    assert tiny < 1_000_000
    assert 1_000_000 < small < 10_000_000
    assert 80_000_000 < base < 150_000_000
    assert 7.9e9 < llama < 8.1e9  # Llama-3-8B has 8.03B parameters


def test_tied_embeddings_share_storage_and_untied_do_not():
    tied = DecoderLM(50, DecoderConfig(d_model=32, n_heads=2, tie_embeddings=True), NoPE())
    untied = DecoderLM(50, DecoderConfig(d_model=32, n_heads=2, tie_embeddings=False), NoPE())
    assert tied.head.weight is tied.embed.weight
    assert untied.head.weight is not untied.embed.weight
    assert n_params(untied) - n_params(tied) == 50 * 32


def test_grouped_query_projection_shapes():
    model = DecoderLM(50, DecoderConfig(d_model=64, n_heads=8, n_kv_heads=2), RoPE())
    attn = model.blocks[0].attn
    assert attn.wq.weight.shape == (64, 64) and attn.wk.weight.shape == (16, 64) and attn.wv.weight.shape == (16, 64)
    q, k, v = attn.project_qkv(torch.randn(3, 5, 64))
    assert q.shape == (3, 8, 5, 8) and k.shape == v.shape == (3, 2, 5, 8)


def test_each_layer_owns_its_posenc_parameters():
    model = DecoderLM(50, DecoderConfig(d_model=32, n_heads=2, n_layers=3), TAPA(learnable_alpha=True))
    alphas = [block.attn.posenc.log_alpha for block in model.blocks]
    assert len({id(a) for a in alphas}) == 3


@pytest.mark.parametrize("posenc", [NoPE(backend="torch"), RoPE(backend="torch"), ALiBi(backend="torch"),
                                    TAPA(backend="torch")], ids=lambda p: type(p).__name__)
def test_logits_are_causal(posenc):
    torch.manual_seed(0)
    model = DecoderLM(50, DecoderConfig(d_model=32, n_heads=2, n_layers=2), posenc).double()
    tokens = torch.randint(0, 50, (2, 16))
    changed = tokens.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 50
    a, b = model(tokens), model(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


@pytest.mark.parametrize("kwargs,field", [
    ({"d_model": 30, "n_heads": 4}, "d_model"),
    ({"n_heads": 4, "n_kv_heads": 3}, "n_kv_heads"),
    ({"n_layers": 0}, "n_layers"),
])
def test_bad_architecture_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        DecoderLM(50, DecoderConfig(**kwargs), NoPE())

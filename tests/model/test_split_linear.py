"""TAPA's q and k projections hold the amplitude and phase rows of every head as two parameters: the same map as
the interleaved nn.Linear, old single-weight checkpoints load into them, and the decoder's init is unchanged."""

from __future__ import annotations

import torch
from torch import nn

from tapa_lab.model import DecoderConfig, DecoderLM
from tapa_lab.model.split_linear import HeadSplitLinear
from tapa_lab.posenc import TAPA


def test_the_parts_are_the_rows_of_each_head_and_the_map_is_the_interleaved_linear():
    split = HeadSplitLinear(5, heads=3, parts=(("amplitude", 2), ("phase", 4)))
    weight = torch.randn(3 * 6, 5)
    split.copy_weight_(weight)
    rows = weight.view(3, 6, 5)
    assert torch.equal(split.amplitude, rows[:, :2].reshape(6, 5))
    assert torch.equal(split.phase, rows[:, 2:].reshape(12, 5))
    assert torch.equal(split.weight, weight)
    x = torch.randn(2, 7, 5)
    torch.testing.assert_close(split(x), x @ weight.T, rtol=0, atol=1e-6)


def test_a_checkpoint_with_one_weight_loads_into_the_parts():
    torch.manual_seed(0)
    linear = nn.Linear(8, 2 * 4, bias=False)
    split = HeadSplitLinear(8, heads=2, parts=(("amplitude", 1), ("phase", 3)))
    split.load_state_dict(linear.state_dict())
    assert torch.equal(split.weight, linear.weight)
    assert set(split.state_dict()) == {"amplitude", "phase"}


def test_tapa_names_its_phase_and_amplitude_parameters_in_every_layer():
    model = DecoderLM(64, DecoderConfig(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2), TAPA(theta=0.25))
    names = dict(model.named_parameters())
    for layer in range(2):
        assert names[f"blocks.{layer}.attn.wq.amplitude"].shape == (4 * 2, 32)  # Da = 2 of D = 8
        assert names[f"blocks.{layer}.attn.wq.phase"].shape == (4 * 6, 32)
        assert names[f"blocks.{layer}.attn.wk.phase"].shape == (2 * 6, 32)
        assert f"blocks.{layer}.attn.wq.weight" not in names

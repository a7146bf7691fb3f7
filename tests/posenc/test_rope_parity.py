"""Parity of the RoPE scalings with Hugging Face transformers' RoPE initialisation (``ROPE_INIT_FUNCTIONS``), the
implementation released checkpoints are loaded with.

Only the frequency vectors (and YaRN's attention factor) are compared, over head_dim {32, 64, 128}, base {1e4, 5e5},
factor {2, 4, 8, 16} and original length {256, 1024, 4096}, to a relative 1e-6 (transformers computes in float32, the
lab in float64). transformers is a test-only dependency (the ``dev`` extra).

- PI: transformers' ``linear``.
- NTK-aware: transformers has no static NTK-aware type; its ``dynamic`` type sets
  base' = base (f L / L_max - (f - 1))^(R/(R-2)) for the current length L, which with f = 1 and L = s L_max is exactly
  the static base' = base s^(R/(R-2)) of the YaRN paper's eq. 16. The test evaluates ``dynamic`` there.
- YaRN: transformers' ``yarn`` (ramp over dimensions, floor/ceil, attention factor 0.1 ln s + 1), the lab's default.
- Llama 3: transformers' ``llama3`` with low_freq_factor 1, high_freq_factor 4.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from tapa_lab.posenc import Llama3RoPE, NTKAwareRoPE, PositionInterpolation, YaRN

transformers = pytest.importorskip("transformers")
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402

GRID = list(itertools.product([32, 64, 128], [1e4, 5e5], [2.0, 4.0, 8.0, 16.0], [256, 1024, 4096]))
N_HEADS = 4


def hf_inv_freq(rope_type: str, head_dim: int, base: float, original: int, seq_len: int | None = None,
                **params: float) -> tuple[torch.Tensor, float]:
    """transformers' (inv_freq, attention_factor) for a config with these RoPE parameters."""
    config = transformers.PretrainedConfig(
        hidden_size=head_dim * N_HEADS, num_attention_heads=N_HEADS, head_dim=head_dim,
        max_position_embeddings=original, rope_parameters={"rope_type": rope_type, "rope_theta": base, **params})
    inv_freq, attention_factor = ROPE_INIT_FUNCTIONS[rope_type](config, "cpu", seq_len=seq_len)
    return inv_freq.double(), attention_factor


def lab_inv_freq(pe, head_dim: int) -> torch.Tensor:
    pe.bind(N_HEADS, N_HEADS, head_dim)
    return pe.inv_freq()


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("head_dim,base,factor,original", GRID)
def test_position_interpolation_matches_transformers_linear(head_dim, base, factor, original):
    expected, _ = hf_inv_freq("linear", head_dim, base, original, factor=factor)
    close(lab_inv_freq(PositionInterpolation(factor=factor, base=base), head_dim), expected)


@pytest.mark.parametrize("head_dim,base,factor,original", GRID)
def test_ntk_aware_matches_transformers_dynamic_at_factor_times_length(head_dim, base, factor, original):
    expected, _ = hf_inv_freq("dynamic", head_dim, base, original, seq_len=int(factor * original), factor=1.0)
    close(lab_inv_freq(NTKAwareRoPE(factor=factor, base=base), head_dim), expected)


@pytest.mark.parametrize("head_dim,base,factor,original", GRID)
def test_yarn_matches_transformers_yarn(head_dim, base, factor, original):
    expected, attention_factor = hf_inv_freq("yarn", head_dim, base, original, factor=factor,
                                             original_max_position_embeddings=original)
    pe = YaRN(factor=factor, original_max_len=original, base=base)
    close(lab_inv_freq(pe, head_dim), expected)
    assert pe.attention_factor() == pytest.approx(attention_factor, rel=1e-12)


@pytest.mark.parametrize("head_dim,base,factor,original", GRID)
def test_llama3_matches_transformers_llama3(head_dim, base, factor, original):
    expected, attention_factor = hf_inv_freq("llama3", head_dim, base, original, factor=factor, low_freq_factor=1.0,
                                             high_freq_factor=4.0, original_max_position_embeddings=original)
    pe = Llama3RoPE(factor=factor, low_freq_factor=1.0, high_freq_factor=4.0, original_max_len=original, base=base)
    close(lab_inv_freq(pe, head_dim), expected)
    assert pe.attention_factor() == attention_factor == 1.0


def test_yarn_mscale_ratio_matches_transformers():
    """DeepSeek-style mscale / mscale_all_dim: the attention factor is the ratio of the two temperatures."""
    _, expected = hf_inv_freq("yarn", 64, 1e4, 1024, factor=40.0, original_max_position_embeddings=1024,
                              mscale=0.707, mscale_all_dim=1.0)
    pe = YaRN(factor=40.0, original_max_len=1024, mscale=0.707, mscale_all_dim=1.0)
    assert pe.attention_factor() == pytest.approx(expected, rel=1e-12)


def test_yarn_without_truncation_matches_transformers():
    expected, _ = hf_inv_freq("yarn", 64, 1e4, 1024, factor=8.0, original_max_position_embeddings=1024,
                              truncate=False)
    close(lab_inv_freq(YaRN(factor=8.0, original_max_len=1024, truncate=False), 64), expected)


def test_yarn_paper_ramp_differs_from_the_reference_code():
    """The issue's case (head_dim 32, base 5e5, factor 8, L_orig 256): the paper's ramp over rotations differs from the
    code's ramp over dimensions by more than 50% on some frequency, so the option is not a no-op."""
    paper = lab_inv_freq(YaRN(factor=8.0, original_max_len=256, base=5e5, ramp_over="rotations"), 32)
    code = lab_inv_freq(YaRN(factor=8.0, original_max_len=256, base=5e5), 32)
    assert ((paper - code).abs() / code).max() > 0.5

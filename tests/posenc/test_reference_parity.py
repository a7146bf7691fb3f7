"""Parity of the encodings with the implementations people already use, in float64: x-transformers (T5 bias, ALiBi,
sinusoidal and learned APE, CoPE), rotary-embedding-torch (xPos), transformers (T5's bucketing); and with the papers'
formulas worked pair by pair where no such implementation exists (Kerple, FIRE). Each test's docstring names its
reference and any convention difference. x-transformers and rotary-embedding-torch are test-only dependencies."""

from __future__ import annotations

import math

import pytest
import torch

from tapa_lab.posenc import FIRE, ALiBi, CoPE, KerpleLog, KerplePower, LearnedAPE, SinusoidalAPE, T5RelativeBias, XPos
from tapa_lab.posenc.t5_bias import t5_bucket

x_transformers = pytest.importorskip("x_transformers.x_transformers")
rotary_embedding_torch = pytest.importorskip("rotary_embedding_torch")

H = 4


def bound(pe, n_heads=H, head_dim=16):
    pe.bind(n_heads, n_heads, head_dim)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for param in pe.parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=generator))
    return pe.double()


def grid(length: int, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    positions = torch.arange(start, start + length)
    return positions[:, None], positions[None, :]


@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 20), (16, 1000)])
def test_t5_bias_matches_x_transformers_relative_position_bias(num_buckets, max_distance):
    """x_transformers.RelativePositionBias(causal=True) with the same table and scale=1. Convention: x-transformers
    builds it with scale = sqrt(dim_head) (it multiplies the learned table), a reparameterisation of the same bias."""
    pe = bound(T5RelativeBias(num_buckets=num_buckets, max_distance=max_distance))
    reference = x_transformers.RelativePositionBias(scale=1.0, causal=True, num_buckets=num_buckets,
                                                    max_distance=max_distance, heads=H).double()
    with torch.no_grad():
        reference.relative_attention_bias.weight.copy_(pe.table)
    torch.testing.assert_close(pe.position_bias(*grid(300)), reference(300, 300), rtol=0, atol=0)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_t5_buckets_match_transformers(bidirectional):
    """transformers' T5Attention._relative_position_bucket, which takes j - i (memory minus query position)."""
    t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
    query, key = grid(400)
    expected = t5.T5Attention._relative_position_bucket(key - query, bidirectional=bidirectional, num_buckets=32,
                                                         max_distance=128)
    assert torch.equal(t5_bucket(query - key, bidirectional, 32, 128), expected)


@pytest.mark.parametrize("n_heads", [8, 12])
def test_alibi_matches_x_transformers(n_heads):
    """x_transformers.AlibiPositionalBias: slopes, and its bias -m |i - j| equals the lab's -m (i - j) for j <= i."""
    pe = ALiBi()
    pe.bind(n_heads, n_heads, 16)
    reference = x_transformers.AlibiPositionalBias(heads=n_heads)
    torch.testing.assert_close(pe.slopes.double(), reference.slopes.flatten().double(), rtol=1e-7, atol=0)
    query, key = grid(50)
    lab = -pe.slopes.double()[:, None, None] * (query - key).double()
    expected = reference.forward_custom_pos(torch.arange(50)).double()
    torch.testing.assert_close(lab.tril(), expected.tril(), rtol=1e-7, atol=0)


@pytest.mark.parametrize("scale_base", [512.0, 16.0])
def test_xpos_scores_match_rotary_embedding_torch(scale_base):
    """rotary_embedding_torch.RotaryEmbedding(use_xpos=True).rotate_queries_and_keys. Convention: it pairs dims
    (2d, 2d+1), the lab (d, d + R/2) (GPT-NeoX); the test de-interleaves q and k, which leaves every q.k unchanged.
    Its frequency and decay buffers are built in float32; the test rebuilds them in float64 by its own formulas."""
    length, head_dim = 64, 16
    pe = bound(XPos(scale_base=scale_base), head_dim=head_dim)
    reference = rotary_embedding_torch.RotaryEmbedding(dim=head_dim, use_xpos=True, xpos_scale_base=scale_base,
                                                       cache_if_possible=False).double()
    even = torch.arange(0, head_dim, 2, dtype=torch.float64)
    with torch.no_grad():
        reference.freqs.copy_(1.0 / 10000 ** (even / head_dim))
        reference.scale.copy_((even + 0.4 * head_dim) / (1.4 * head_dim))
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, H, length, head_dim, generator=g, dtype=torch.float64) for _ in range(2))
    q_ref, k_ref = reference.rotate_queries_and_keys(q, k)

    def halves(x):
        return torch.cat([x[..., 0::2], x[..., 1::2]], dim=-1)

    q_lab, k_lab = pe.transform_qk(halves(q), halves(k), torch.arange(length))
    torch.testing.assert_close(q_lab @ k_lab.mT, q_ref @ k_ref.mT, rtol=1e-10, atol=1e-10)


def test_sinusoidal_ape_matches_x_transformers_scaled_sinusoidal():
    """x_transformers.ScaledSinusoidalEmbedding at its initial scale 1/sqrt(d). Convention: it concatenates
    [sin, cos], Vaswani et al. (and the lab) interleave them; its frequencies are a float32 buffer, hence 1e-5."""
    d_model, length = 32, 256
    pe = SinusoidalAPE()
    pe.bind_embedding(d_model)
    reference = x_transformers.ScaledSinusoidalEmbedding(d_model).double()
    x = torch.zeros(1, length, d_model, dtype=torch.float64)
    lab = pe.embed(x, torch.arange(length))[0]
    expected = reference(x, pos=torch.arange(length, dtype=torch.float64))
    torch.testing.assert_close(torch.cat([lab[:, 0::2], lab[:, 1::2]], dim=-1), expected, rtol=0, atol=1e-5)


def test_learned_ape_matches_x_transformers_absolute_embedding():
    """x_transformers.AbsolutePositionalEmbedding with the same table, at an offset. Convention: x-transformers
    multiplies the looked-up vector by 1/sqrt(d); the lab adds it unscaled."""
    d_model = 16
    pe = LearnedAPE(max_len=64)
    pe.bind_embedding(d_model)
    pe.double()
    reference = x_transformers.AbsolutePositionalEmbedding(d_model, max_seq_len=64).double()
    with torch.no_grad():
        reference.emb.weight.copy_(pe.position_embed.weight)
    x = torch.randn(2, 10, d_model, dtype=torch.float64)
    lab = pe.embed(x, torch.arange(30, 40)) - x
    torch.testing.assert_close(lab, (reference(x, offset=30) * math.sqrt(d_model)).expand_as(lab))


def test_cope_matches_x_transformers_cope():
    """x_transformers.CoPE (the paper's appendix B code) with the same table, given the same masked scaled scores."""
    length, head_dim = 20, 16
    pe = bound(CoPE(npos_max=8), head_dim=head_dim)
    reference = x_transformers.CoPE(dim=head_dim, heads=H, max_pos=8).double()
    with torch.no_grad():
        reference.pos_emb.copy_(pe.pos_emb)
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, H, length, head_dim, generator=g, dtype=torch.float64) for _ in range(2))
    query, key = grid(length)
    scores = (q @ k.mT / 4).masked_fill(key > query, float("-inf"))
    lab = pe.score_mod(scores, q, torch.arange(length), torch.arange(length)) - scores
    expected = reference(q, scores)
    torch.testing.assert_close(lab[..., key <= query], expected[..., key <= query])


def kerple_loop(r1: float, r2: float, i: int, j: int, kind: str) -> float:
    return -r1 * math.log(1 + r2 * abs(i - j)) if kind == "log" else -r1 * abs(i - j) ** r2


@pytest.mark.parametrize("cls,kind", [(KerpleLog, "log"), (KerplePower, "power")])
def test_kerple_matches_the_papers_formula_pair_by_pair(cls, kind):
    """Chi et al. 2022, section 4: -r1 ln(1 + r2 |i-j|) and -r1 |i-j|^r2, with r1, r2 as stored (all in range here)."""
    pe = bound(cls())
    with torch.no_grad():
        pe.r1.copy_(torch.tensor([0.5, 1.0, 1.5, 0.1]))
        pe.r2.copy_(torch.tensor([0.2, 0.9, 1.7, 0.05]))
    bias = pe.position_bias(*grid(12, start=40))
    for h in range(H):
        for i in range(12):
            for j in range(i + 1):
                assert bias[h, i, j].item() == pytest.approx(
                    kerple_loop(pe.r1[h].item(), pe.r2[h].item(), i, j, kind), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("start", [0, 600])
def test_fire_matches_the_papers_appendix_code(start):
    """Li et al. 2023, appendix: the authors' FIRE forward, written out here on whole matrices (c and L learned,
    threshold |l L0|, log transform with + 1, eps in the denominator); queries past L (start 600) interpolate."""
    pe = bound(FIRE(init_threshold=512.0))
    positions = torch.arange(start, start + 40, dtype=torch.float64)
    rel_distance = positions[:, None] - positions[None, :]
    threshold = torch.abs(pe.threshold_scale * pe.init_threshold)
    pos_normalizer = torch.max(positions, threshold)[:, None]
    rel_distance = torch.log(torch.abs(pe.c * rel_distance) + 1)
    pos_normalizer = torch.log(torch.abs(pe.c * pos_normalizer) + 1) + pe.eps
    expected = pe.mlp((rel_distance / pos_normalizer).unsqueeze(-1)).permute(2, 0, 1)
    query, key = grid(40, start=start)
    torch.testing.assert_close(pe.position_bias(query, key), expected, rtol=1e-12, atol=1e-12)

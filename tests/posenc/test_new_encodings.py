"""The encodings added for the length-generalisation literature (T5 bias, Kerple, FIRE, CoPE, xPos, learned and
sinusoidal APE): outputs and gradients (PE parameters included) against a materialised float64 reference, document
masking, the FlexAttention path, the absolute PEs' embedding hook in the model, and configuration errors."""

from __future__ import annotations

import pytest
import torch

from tapa_lab.errors import ConfigError
from tapa_lab.kernels.reference import repeat_kv
from tapa_lab.model import DecoderConfig, DecoderLM
from tapa_lab.posenc import (
    FIRE,
    CoPE,
    KerpleLog,
    KerplePower,
    LearnedAPE,
    NoPE,
    SinusoidalAPE,
    T5RelativeBias,
    XPos,
)

H, HKV, D = 4, 2, 16
SCORE_PES = [T5RelativeBias, KerpleLog, KerplePower, FIRE, CoPE]
BIAS_PES = [T5RelativeBias, KerpleLog, KerplePower, FIRE]


def make(cls, backend="torch", **kwargs):
    pe = cls(backend=backend, **kwargs)
    pe.bind(H, HKV, D)
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for param in pe.parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=generator))
    return pe.double()


def qkv(lq=14, lk=14, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, H, lq, D, generator=g, dtype=dtype), torch.randn(2, HKV, lk, D, generator=g, dtype=dtype),
            torch.randn(2, HKV, lk, D, generator=g, dtype=dtype))


def materialised(pe, q, k, v, positions):
    """softmax(score_mod(q k^T / sqrt(D), causal)) v over the whole (Lq, Lk) matrix, k and v repeated to H heads."""
    lq = q.shape[2]
    scores = q @ repeat_kv(k, H).mT / D ** 0.5
    future = positions[None, :] > positions[-lq:, None]
    scores = pe.score_mod(scores.masked_fill(future, float("-inf")), q, positions[-lq:], positions)
    return torch.softmax(scores, -1) @ repeat_kv(v, H)


@pytest.mark.parametrize("cls", SCORE_PES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("lq,start", [(14, 0), (6, 700)])
def test_outputs_and_gradients_match_the_materialised_float64_reference(cls, lq, start):
    pe = make(cls)
    q, k, v = (t.requires_grad_() for t in qkv(lq=lq))
    positions = torch.arange(start, start + 14)
    out = pe.attend(q, k, v, positions)
    expected = materialised(pe, q, k, v, positions)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    params = [p for p in pe.parameters()]
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, [q, k, v, *params], grad_out)
    expected_grads = torch.autograd.grad(expected, [q, k, v, *params], grad_out)
    names = ["q", "k", "v", *(name for name, _ in pe.named_parameters())]
    for name, got, want in zip(names, grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10, msg=name)
        assert torch.isfinite(got).all(), name
    assert any(g.abs().sum() > 0 for g in grads[3:]), "no PE parameter got a gradient"


def test_xpos_gradients_match_the_materialised_reference():
    """xPos through RoPE's rotation: each rotated pair's norm is scaled by zeta^((n - c)/scale_base) (c the middle
    position), and attend equals the materialised softmax over the transformed q and k, gradients included."""
    pe = make(XPos, scale_base=8.0)
    q, k, v = (t.requires_grad_() for t in qkv())
    positions = torch.arange(14)
    out = pe.attend(q, k, v, positions)
    q_rot, k_rot = pe.transform_qk(q, k, positions)
    scores = q_rot @ repeat_kv(k_rot, H).mT / D ** 0.5
    expected = torch.softmax(scores.masked_fill(positions[None, :] > positions[:, None], float("-inf")), -1)
    expected = expected @ repeat_kv(v, H)
    torch.testing.assert_close(out, expected)
    decay = pe.zeta() ** ((positions[:, None] - positions[7]) / 8.0)
    torch.testing.assert_close(q_rot[..., :D // 2] ** 2 + q_rot[..., D // 2:] ** 2,
                               (q[..., :D // 2] ** 2 + q[..., D // 2:] ** 2) * decay ** 2)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    expected_grads = torch.autograd.grad(expected.square().sum(), (q, k, v))
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("cls", [*SCORE_PES, XPos, LearnedAPE, SinusoidalAPE], ids=lambda c: c.__name__)
def test_document_masking_equals_attending_within_each_document(cls):
    """With document_ids, the rows of a document equal attention over that document alone (same absolute positions)."""
    pe = make(cls)
    q, k, v = qkv()
    positions = torch.arange(20, 34)
    document_ids = torch.tensor([[0] * 5 + [1] * 9, [0] * 10 + [1] * 4])
    out = pe.attend(q, k, v, positions, document_ids=document_ids)
    for b, cut in enumerate((5, 10)):
        for rows in (slice(0, cut), slice(cut, 14)):
            alone = pe.attend(q[b:b + 1, :, rows], k[b:b + 1, :, rows], v[b:b + 1, :, rows], positions[rows])
            torch.testing.assert_close(out[b:b + 1, :, rows], alone)


@pytest.mark.parametrize("cls", BIAS_PES, ids=lambda c: c.__name__)
def test_flex_attention_path_matches_blockwise_path(cls):
    """backend='triton' runs FlexAttention (uncompiled on CPU, forward only) with the same bias as backend='torch'."""
    blockwise = make(cls)
    flex = make(cls, backend="triton")
    flex.load_state_dict(blockwise.state_dict())
    q, k, v = qkv(lq=5, dtype=torch.float32)
    positions = torch.arange(600, 614)
    document_ids = torch.tensor([[0] * 9 + [1] * 5, [0] * 14])
    with torch.no_grad():
        expected = blockwise.float().attend(q, k, v, positions, document_ids=document_ids)
        out = flex.float().attend(q, k, v, positions, document_ids=document_ids)
    assert flex.uses_flex(q) and not blockwise.uses_flex(q)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def tiny_model(posenc) -> DecoderLM:
    torch.manual_seed(0)
    return DecoderLM(50, DecoderConfig(d_model=32, n_layers=1, n_heads=2), posenc)


@pytest.mark.parametrize("posenc", [LearnedAPE(max_len=64), SinusoidalAPE()], ids=["learned", "sinusoidal"])
def test_absolute_pe_adds_to_the_embeddings_of_the_model(posenc):
    model = tiny_model(posenc)
    tokens = torch.randint(0, 50, (2, 8))
    torch.testing.assert_close(model.posenc.embed(torch.zeros(2, 8, 32), torch.arange(8))[0],
                               model.posenc.embed(torch.zeros(1, 8, 32), torch.arange(8))[0])
    with torch.no_grad():
        assert not torch.allclose(model(tokens), model(tokens, positions=torch.arange(5, 13)))


def test_learned_ape_is_a_model_parameter_and_relative_pes_add_none():
    ape = tiny_model(LearnedAPE(max_len=64))
    assert ape.posenc.position_embed.weight.shape == (64, 32)
    assert "posenc.position_embed.weight" in dict(ape.named_parameters())
    assert not [name for name in tiny_model(NoPE()).state_dict() if name.startswith("posenc.")]


def test_learned_ape_past_max_len_names_the_field():
    model = tiny_model(LearnedAPE(max_len=16))
    model(torch.zeros(1, 16, dtype=torch.long))
    with pytest.raises(ConfigError, match=r"model\.posenc\.init_args\.max_len"):
        model(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize("make_pe,field", [
    (lambda: T5RelativeBias(num_buckets=1), "num_buckets"),
    (lambda: T5RelativeBias(num_buckets=3, bidirectional=True), "num_buckets"),
    (lambda: T5RelativeBias(num_buckets=32, max_distance=16), "max_distance"),
    (lambda: FIRE(mlp_width=0), "mlp_width"),
    (lambda: FIRE(init_c=0.0), "init_c"),
    (lambda: FIRE(init_threshold=-1.0), "init_threshold"),
    (lambda: FIRE(eps=0.0), "eps"),
    (lambda: CoPE(npos_max=1), "npos_max"),
    (lambda: XPos(scale_base=0.0), "scale_base"),
    (lambda: LearnedAPE(max_len=0), "max_len"),
    (lambda: LearnedAPE(init_std=0.0), "init_std"),
    (lambda: SinusoidalAPE(base=1.0), "base"),
    (lambda: SinusoidalAPE(scale=-1.0), "scale"),
    (lambda: KerpleLog(backend="cuda"), "backend"),
])
def test_out_of_range_values_name_the_field(make_pe, field):
    with pytest.raises(ConfigError, match=rf"model\.posenc\.init_args\.{field} = "):
        make_pe()


def test_sinusoidal_ape_needs_an_even_model_width():
    with pytest.raises(ConfigError, match=r"model\.architecture\.d_model"):
        SinusoidalAPE().bind_embedding(7)


@pytest.mark.parametrize("cls", [KerpleLog, KerplePower], ids=lambda c: c.__name__)
def test_kerple_clamps_values_but_passes_gradients_below_eps(cls):
    """A parameter pushed below eps scores as eps (the authors' clamp) yet still gets a gradient, so it can recover."""
    pe = make(cls)
    with torch.no_grad():
        pe.r1.fill_(-1.0)
    query, key = torch.arange(6)[:, None], torch.arange(6)[None, :]
    at_eps = make(cls)
    at_eps.load_state_dict(pe.state_dict())
    with torch.no_grad():
        at_eps.r1.fill_(1e-2)
    torch.testing.assert_close(pe.position_bias(query, key), at_eps.position_bias(query, key))
    pe.position_bias(query, key).sum().backward()
    assert (pe.r1.grad.abs() > 0).all()

"""Contract suite: every PositionalEncoding class keeps shapes and dtypes, is causal, supports GQA and Lq < Lk (a
query gives the same output alone over the cached keys as in the full forward, at any absolute position), and, where
the PE is translation invariant, gives the same output when all positions shift. Learnable PE parameters are moved
away from their initial values (CoPE's table starts at zero), so the checks see them."""

from __future__ import annotations

import pytest
import torch

from tapa_lab.kernels.reference import repeat_kv
from tapa_lab.posenc import PositionalEncoding, pe_classes

PE_CLASSES = list(pe_classes().values())


def make_pe(cls: type[PositionalEncoding], n_heads: int = 4, n_kv_heads: int = 2, head_dim: int = 16
            ) -> PositionalEncoding:
    pe = cls(backend="torch")
    pe.bind(n_heads, n_kv_heads, head_dim)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param in pe.parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=generator))
    return pe


def qkv(b=2, h=4, hkv=2, lq=12, lk=12, d=16, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, h, lq, d, generator=g).to(dtype), torch.randn(b, hkv, lk, d, generator=g).to(dtype),
            torch.randn(b, hkv, lk, d, generator=g).to(dtype))


def test_discovery_finds_every_family():
    names = {c.__name__ for c in PE_CLASSES}
    assert {"NoPE", "ALiBi", "RoPE", "PositionInterpolation", "NTKAwareRoPE", "YaRN", "Llama3RoPE", "TAPA",
            "TAPALinearPhase", "TAPAStaticPhase", "LearnedAPE", "SinusoidalAPE", "T5RelativeBias", "KerpleLog",
            "KerplePower", "FIRE", "XPos", "CoPE"} <= names


@pytest.mark.parametrize("cls", PE_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_shape_and_dtype_kept(cls, dtype):
    pe = make_pe(cls)
    q, k, v = qkv(dtype=dtype)
    out = pe.attend(q, k, v, torch.arange(12))
    assert out.shape == q.shape
    assert out.dtype == dtype
    assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize("cls", PE_CLASSES, ids=lambda c: c.__name__)
def test_causal_future_keys_do_not_change_past_outputs(cls):
    pe = make_pe(cls)
    q, k, v = qkv(dtype=torch.float64)
    positions = torch.arange(12)
    base = pe.attend(q, k, v, positions)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 7:] += torch.randn_like(k2[:, :, 7:])
    v2[:, :, 7:] += torch.randn_like(v2[:, :, 7:])
    out = pe.attend(q, k2, v2, positions)
    torch.testing.assert_close(out[:, :, :7], base[:, :, :7], rtol=1e-10, atol=1e-10)
    assert not torch.allclose(out[:, :, 7:], base[:, :, 7:])


@pytest.mark.parametrize("cls", [c for c in PE_CLASSES if c.translation_invariant], ids=lambda c: c.__name__)
def test_relative_position_shift_invariance(cls):
    """A translation-invariant PE scores by i - j only: shifting all positions by 1000 leaves the output unchanged."""
    pe = make_pe(cls)
    q, k, v = qkv(dtype=torch.float64)
    out0 = pe.attend(q, k, v, torch.arange(12))
    out1 = pe.attend(q, k, v, torch.arange(1000, 1012))
    torch.testing.assert_close(out1, out0, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("cls", PE_CLASSES, ids=lambda c: c.__name__)
def test_grouped_query_equals_repeated_heads(cls):
    """GQA with Hkv = 2 equals multi-head attention whose k/v heads are repeated to H = 4."""
    gqa = make_pe(cls, n_kv_heads=2)
    mha = make_pe(cls, n_kv_heads=4)
    mha.load_state_dict(gqa.state_dict())
    q, k, v = qkv(dtype=torch.float64)
    positions = torch.arange(12)
    torch.testing.assert_close(gqa.attend(q, k, v, positions),
                               mha.attend(q, repeat_kv(k, 4), repeat_kv(v, 4), positions))


@pytest.mark.parametrize("cls", PE_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("lq,start", [(5, 0), (1, 0), (1, 3000)])
def test_queries_at_the_end_of_longer_keys(cls, lq, start):
    """With Lq < Lk the queries are the last Lq positions (KV-cache decoding, also far past any training length): the
    output equals the tail of the full attention."""
    pe = make_pe(cls)
    q, k, v = qkv(lq=12, lk=12, dtype=torch.float64)
    positions = torch.arange(start, start + 12)
    full = pe.attend(q, k, v, positions)
    tail = pe.attend(q[:, :, -lq:], k, v, positions)
    torch.testing.assert_close(tail, full[:, :, -lq:])


@pytest.mark.parametrize("cls", PE_CLASSES, ids=lambda c: c.__name__)
def test_gradients_reach_q_k_v(cls):
    pe = make_pe(cls)
    q, k, v = (t.requires_grad_() for t in qkv(dtype=torch.float64))
    pe.attend(q, k, v, torch.arange(12)).square().sum().backward()
    for t in (q, k, v):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


@pytest.mark.parametrize("cls", PE_CLASSES, ids=lambda c: c.__name__)
def test_pair_scores_are_the_scores_attend_uses(cls):
    """softmax over the pair scores of every (i, j <= i), times v, reproduces attend's output."""
    pe = make_pe(cls)
    q, k, v = qkv(b=1, dtype=torch.float64)
    length = q.shape[2]
    query, key = torch.tril_indices(length, length)
    k_heads, v_heads = repeat_kv(k, 4)[0], repeat_kv(v, 4)[0]  # (H, L, D)
    scores = torch.full((4, length, length), float("-inf"), dtype=torch.float64)
    scores[:, query, key] = pe.pair_scores(q[0], k_heads, query, key)
    expected = torch.softmax(scores, dim=-1) @ v_heads
    torch.testing.assert_close(pe.attend(q, k, v, torch.arange(length))[0], expected, rtol=1e-6, atol=1e-6)

"""The score-modification attention paths (blockwise PyTorch with checkpointed blocks; FlexAttention) against a fully
materialised float64 reference: outputs and gradients of q, k, v and of the modification's own parameters, with
several blocks, grouped-query heads, queries at the end of longer keys and document masking."""

from __future__ import annotations

import pytest
import torch

from tapa_lab.kernels.flex import flex_bias_attention
from tapa_lab.kernels.reference import repeat_kv
from tapa_lab.kernels.score_mod_torch import score_mod_attention_torch

H, HKV, D = 4, 2, 8


def inputs(lq: int, lk: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, H, lq, D, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, HKV, lk, D, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, HKV, lk, D, generator=g, dtype=torch.float64, requires_grad=True)
    table = torch.randn(H, 2 * lk, generator=g, dtype=torch.float64, requires_grad=True)  # a bias per head, i - j
    gain = torch.randn(H, D, generator=g, dtype=torch.float64, requires_grad=True)  # content-dependent term
    return q, k, v, table, gain


def make_score_mod(table, gain):
    """A bias table over i - j plus a query-dependent term times sigmoid(score): exercises every input of score_mod."""

    def score_mod(scores, q, query_positions, key_positions):
        bias = table[:, (query_positions[:, None] - key_positions[None, :]).clamp_min(0)]  # (H, R, K)
        return scores + bias + (q * gain[:, None]).sum(-1, keepdim=True) * torch.sigmoid(scores)

    return score_mod


def reference(q, k, v, positions, score_mod, document_ids, scale):
    lq, lk = q.shape[2], k.shape[2]
    qi, ki = torch.arange(lk - lq, lk), torch.arange(lk)
    visible = (ki[None, :] <= qi[:, None])[None, None]
    if document_ids is not None:
        visible = visible & (document_ids[:, -lq:, None] == document_ids[:, None, :])[:, None]
    scores = scale * q @ repeat_kv(k, H).mT
    scores = score_mod(scores.masked_fill(~visible, float("-inf")), q, positions[-lq:], positions)
    return torch.softmax(scores, -1) @ repeat_kv(v, H)


@pytest.mark.parametrize("lq,lk,chunk,documents", [(13, 13, 4, False), (5, 13, 2, False), (13, 13, 3, True),
                                                   (1, 13, None, True)])
def test_blockwise_matches_materialised_reference_with_gradients(lq, lk, chunk, documents):
    q, k, v, table, gain = inputs(lq, lk)
    positions = torch.arange(100, 100 + lk)
    document_ids = torch.tensor([[0] * 4 + [1] * 6 + [2] * 3, [0] * 9 + [1] * 4]) if documents else None
    score_mod = make_score_mod(table, gain)
    out = score_mod_attention_torch(q, k, v, positions, scale=0.3, score_mod=score_mod, document_ids=document_ids,
                                    chunk_size=chunk)
    expected = reference(q, k, v, positions, score_mod, document_ids, 0.3)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v, table, gain), grad_out)
    expected_grads = torch.autograd.grad(expected, (q, k, v, table, gain), grad_out)
    for name, got, want in zip("q k v table gain".split(), grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10, msg=name)


def test_blockwise_keeps_low_precision_dtype():
    q, k, v, table, gain = (t.detach().to(torch.bfloat16) for t in inputs(9, 9))
    out = score_mod_attention_torch(q, k, v, torch.arange(9), scale=0.3,
                                    score_mod=make_score_mod(table.float(), gain.float()), chunk_size=4)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


@pytest.mark.parametrize("lq,documents", [(11, False), (3, True)])
def test_flex_forward_matches_blockwise(lq, documents):
    """FlexAttention's forward (uncompiled on CPU) adds the same bias as the blockwise path."""
    lk = 11
    q, k, v, table, _ = (t.detach().float() for t in inputs(lq, lk))
    positions = torch.arange(7, 7 + lk)
    document_ids = torch.tensor([[0] * 5 + [1] * 6, [0] * 2 + [1] * 9]) if documents else None

    def bias(head, query, key):
        return table[head, (query - key).clamp_min(0)]

    def score_mod(scores, q_rows, query_positions, key_positions):
        return scores + bias(torch.arange(H)[:, None, None], query_positions[:, None], key_positions[None, :])

    out = flex_bias_attention(q, k, v, positions, scale=0.3, bias=bias, document_ids=document_ids)
    expected = score_mod_attention_torch(q, k, v, positions, scale=0.3, score_mod=score_mod,
                                         document_ids=document_ids)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)

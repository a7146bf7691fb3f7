"""Perplexity by length: both modes equal a direct per-window computation; stride = window is non-overlapping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tapa_lab.errors import ConfigError
from tapa_lab.eval.perplexity import PerplexityConfig, evaluate_length

CPU = torch.device("cpu")


def direct_nll(model, documents, length: int, step: int, scored: int) -> tuple[float, int]:
    """Sum of NLL over the last ``scored`` targets of windows at starts 0, step, 2 step, ...: one window at a time."""
    total, count = 0.0, 0
    for doc in documents:
        for start in range(0, len(doc) - length, step):
            window = torch.from_numpy(doc[start:start + length + 1].astype(np.int64))
            with torch.no_grad():
                log_probs = model(window[None, :-1])[0].double().log_softmax(-1)  # (L, V)
            targets = window[1:, None]  # (L, 1)
            total -= float(log_probs.gather(1, targets)[length - scored:].sum())
            count += scored
    return total, count


def run(model, documents, length, config):
    return evaluate_length(model, documents, length, config.stride_for(length), config, CPU, lambda n: None)


@pytest.mark.parametrize(("length", "stride"), [(32, 12), (50, 9)])
def test_sliding_window_equals_direct_per_window_computation(model, documents, length, stride):
    config = PerplexityConfig(lengths=[length], stride=stride, max_tokens=10**9, batch_tokens=3 * length)
    row, _ = run(model, documents, length, config)
    total, count = direct_nll(model, documents, length, stride, stride)
    assert row["tokens"] == count
    assert row["nll"] == pytest.approx(total / count, rel=1e-5)
    assert row["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)
    assert row["mode"] == "sliding" and row["stride"] == stride


def test_nonoverlapping_equals_mean_nll_over_disjoint_windows(model, documents):
    config = PerplexityConfig(lengths=[48], mode="nonoverlapping", max_tokens=10**9, position_buckets=4)
    row, curve = run(model, documents, 48, config)
    total, count = direct_nll(model, documents, 48, 48, 48)
    assert row["tokens"] == count and row["stride"] is None
    assert row["nll"] == pytest.approx(total / count, rel=1e-5)
    # every position is scored in this mode, so the bucketed curve averages to the same NLL
    assert np.mean(curve["loss"]) == pytest.approx(total / count, rel=1e-5)
    assert curve["bucket_edges"] == [0, 12, 24, 36, 48]


def test_stride_equal_to_window_is_the_nonoverlapping_mode(model, documents):
    sliding, _ = run(model, documents, 40, PerplexityConfig(lengths=[40], stride=40, max_tokens=10**9))
    disjoint, _ = run(model, documents, 40, PerplexityConfig(lengths=[40], mode="nonoverlapping", max_tokens=10**9))
    assert sliding["nll"] == pytest.approx(disjoint["nll"], rel=1e-6)
    assert sliding["tokens"] == disjoint["tokens"]


def test_token_budget_keeps_an_evenly_spaced_subset(model, documents):
    row, _ = run(model, documents, 32, PerplexityConfig(lengths=[32], stride=8, max_tokens=40))
    assert row["tokens"] == 40 and row["windows"] == 5


def test_bad_lengths_and_strides_name_the_field():
    with pytest.raises(ConfigError, match="perplexity.stride"):
        PerplexityConfig(multiples=[1, 2], stride=200).validate(train_seq_len=128, longest_document=10_000)
    with pytest.raises(ConfigError, match=r"perplexity.multiples.*\[2048\].*longest has 1000"):
        PerplexityConfig(multiples=[1, 16]).validate(train_seq_len=128, longest_document=1000)
    with pytest.raises(ConfigError, match="perplexity.lengths"):
        PerplexityConfig(lengths=[5000]).validate(train_seq_len=128, longest_document=1000)
    PerplexityConfig(multiples=[1, 2]).validate(train_seq_len=128, longest_document=257)  # 256 + 1 tokens fit

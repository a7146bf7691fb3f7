"""Training and evaluation windows: right shape, deterministic, and a resumed stream continues the same stream."""

from __future__ import annotations

import numpy as np
import torch

from tapa_lab.data import EvalWindows, ResumableSampler, TrainWindows

TOKENS = np.arange(1000, dtype=np.uint16) % 258


def test_train_window_is_seq_len_plus_one_tokens_at_a_start_fixed_by_seed_and_id():
    windows = TrainWindows(TOKENS, seq_len=64, seed=7)
    sample = windows[3]
    assert sample.shape == (65,) and sample.dtype == torch.int64
    start = windows.start(3)
    assert torch.equal(sample, torch.from_numpy(TOKENS[start:start + 65].astype(np.int64)))
    assert torch.equal(TrainWindows(TOKENS, 64, seed=7)[3], sample)
    starts = [TrainWindows(TOKENS[:100], 64, seed=7).start(i) for i in range(2000)]
    assert sorted(set(starts)) == list(range(100 - 65 + 1))  # every start that fits, and only those
    assert starts != [TrainWindows(TOKENS[:100], 64, seed=8).start(i) for i in range(2000)]


def test_eval_windows_are_fixed_and_cover_the_split():
    windows = EvalWindows(TOKENS, seq_len=100, count=5)
    assert len(windows) == 5 and [w.shape for w in windows] == [(101,)] * 5
    assert windows.starts.tolist() == [0, 225, 450, 674, 899]
    assert torch.equal(windows[4][-1], torch.tensor(int(TOKENS[-1])))


def test_resumed_sampler_yields_the_rest_of_the_uninterrupted_epoch():
    full = list(ResumableSampler(40))
    assert full == list(range(40))
    resumed = ResumableSampler(40, consumed=lambda: 24)
    assert list(resumed) == full[24:] and len(resumed) == 40


def test_each_epoch_continues_the_stream_from_the_consumed_position():
    consumed = [0]
    sampler = ResumableSampler(10, consumed=lambda: consumed[0])
    epochs = []
    for _ in range(3):
        epochs.append(list(sampler))
        consumed[0] += len(epochs[-1])
    assert epochs == [list(range(0, 10)), list(range(10, 20)), list(range(20, 30))]
    assert list(ResumableSampler(10, consumed=lambda: 14)) == epochs[1][4:]
    assert list(ResumableSampler(10, consumed=lambda: 20)) == epochs[2]


def test_ranks_draw_disjoint_interleaved_ids():
    ranks = [list(ResumableSampler(6, rank=rank, world_size=3)) for rank in range(3)]
    assert sorted(sum(ranks, [])) == list(range(18))
    assert ranks[1] == [1, 4, 7, 10, 13, 16]

"""The training stream: sample ``i`` is a window whose start is a pure function of ``(seed, i)``, so training can
resume exactly by skipping the samples already seen.

:class:`TrainWindows` maps a sample id to ``seq_len + 1`` tokens from the packed training split (windows may span
documents: packed training). :class:`ResumableSampler` hands out sample ids in order from the position the run has
reached, which the data module reads from ``global_step * batch_size * accumulate_grad_batches`` (per rank); Lightning
restores ``global_step`` on resume, so the stream continues exactly. :class:`StreamLoader` records the stream's
identity in checkpoints. A task mixture (e.g. passkey examples) subclasses :class:`TrainWindows` and overrides
:meth:`TrainWindows.__getitem__` for the sample ids it claims, keeping the same determinism in ``(seed, i)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from tapa_lab.errors import ConfigError


class TrainWindows(Dataset):
    """Windows of ``seq_len + 1`` tokens at pseudo-random starts: sample ``i`` starts at a draw from
    ``numpy.random.default_rng([seed, i])``, uniform over every start that fits.

    Args:
        tokens: the packed training tokens ``(n,)``, ``n >= seq_len + 1``.
        seq_len: the training length; a sample has ``seq_len + 1`` tokens (inputs ``[:-1]``, targets ``[1:]``).
        seed: the stream's seed (>= 0).
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int) -> None:
        self.tokens = tokens
        self.seq_len = seq_len
        self.seed = seed

    def start(self, sample_id: int) -> int:
        """Where sample ``sample_id`` starts in the packed tokens."""
        rng = np.random.default_rng([self.seed, sample_id])
        return int(rng.integers(0, len(self.tokens) - self.seq_len))

    def __getitem__(self, sample_id: int) -> Tensor:
        """Sample ``sample_id``: an int64 tensor ``(seq_len + 1,)``."""
        start = self.start(sample_id)
        return torch.from_numpy(self.tokens[start:start + self.seq_len + 1].astype(np.int64))


class ResumableSampler(DistributedSampler):
    """Hands out one rank's sample ids in order, from the position the run has reached.

    The stream is indexed by global position: this rank's ``p``-th sample is sample id ``p * world_size + rank``.
    Each pass (Lightning's epoch) reads ``consumed()`` when it starts and yields the positions from there to the end
    of the current epoch (the next multiple of ``samples_per_epoch``), so a resumed run (fresh or restored epoch
    counter alike) continues exactly where an uninterrupted one would be. The length is always ``samples_per_epoch``:
    on resume Lightning counts the batches already done towards it. It is a ``DistributedSampler`` so that Lightning
    keeps it under DDP instead of wrapping it.

    Args:
        samples_per_epoch: samples one rank draws per epoch (a multiple of the batch size).
        consumed: samples this rank has consumed so far, read at the start of each pass (e.g.
            ``global_step * batch_size * accumulate_grad_batches``).
        rank: this process's rank.
        world_size: number of processes.
    """

    def __init__(self, samples_per_epoch: int, consumed: Callable[[], int] = lambda: 0, rank: int = 0,
                 world_size: int = 1) -> None:
        # DistributedSampler.__init__ would need a sized dataset and a process group; only its fields are wanted.
        self.num_samples = samples_per_epoch
        self.num_replicas = world_size
        self.total_size = samples_per_epoch * world_size
        self.rank = rank
        self.consumed = consumed
        self.epoch = 0
        self.shuffle = False
        self.drop_last = True
        self.seed = 0

    def __iter__(self) -> Iterator[int]:
        first = self.consumed()
        end = (first // self.num_samples + 1) * self.num_samples
        return iter(position * self.num_replicas + self.rank for position in range(first, end))

    def __len__(self) -> int:
        return self.num_samples


class StreamLoader(DataLoader):
    """The training DataLoader. Its checkpoint state is the stream's identity (seed, lengths, corpus); the position
    comes from ``global_step``. Lightning saves that state with each checkpoint and, on resume, refuses a stream that
    differs (it would not continue the same run); it also sees the loader as resumable, as it is.

    Args:
        identity: what must match on resume, e.g. ``{"data.seed": 0, "data.seq_len": 512}``.
        *args: passed to ``DataLoader``.
        **kwargs: passed to ``DataLoader``.
    """

    def __init__(self, *args, identity: dict, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.identity = identity

    def state_dict(self) -> dict:
        return dict(self.identity)

    def load_state_dict(self, state: dict) -> None:
        changed = [f"{key} = {value!r} (the checkpoint has {state[key]!r})" for key, value in self.identity.items()
                   if key in state and state[key] != value]
        if changed:
            raise ConfigError(f"resuming needs the training stream of the checkpoint, but {'; '.join(changed)}; "
                              "restore those values or start a new run.")

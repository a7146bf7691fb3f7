"""A short fit of the lab's decoder on the committed fixture corpus, without Lightning, ``datasets`` or a network.

The GPU acceptance run uses it to check that a model of the ``base`` shape trains on the kernels in bf16 (its loss
must fall) on a machine whose image lacks ``datasets`` and ``jsonargparse``. The corpus is
:class:`tapa_lab.data.Fixture` (about 40 KB of public-domain text under ``tests/fixtures/corpus/``, so it needs a
source checkout), byte-tokenised with an end-of-document id after each document; a batch is ``batch_size`` random
windows of ``seq_len + 1`` tokens. A step is forward, next-token cross-entropy, backward, gradient clipping at 1.0 and
AdamW (weight decay 0.1 on matrices only) with a linear warm-up to ``lr``.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tapa_lab.data import ByteTokenizer, Fixture
from tapa_lab.errors import require
from tapa_lab.model import DecoderConfig, DecoderLM
from tapa_lab.posenc import PositionalEncoding

#: The loss has fallen when the mean of the last tenth of the steps is at most this fraction of the first tenth's.
LOSS_FALL_RATIO = 0.8


def fixture_tokens() -> torch.Tensor:
    """Every fixture document's bytes followed by the end-of-document id, concatenated: ``(N,)`` int64."""
    tokenizer = ByteTokenizer()
    with tempfile.TemporaryDirectory() as download_dir:
        texts = [doc.text for doc in Fixture().documents(Path(download_dir))]
    parts = [torch.cat([torch.from_numpy(tokenizer.encode(text)), torch.tensor([tokenizer.eod_id])]) for text in texts]
    return torch.cat(parts)


def fit_fixture(architecture: DecoderConfig, posenc: PositionalEncoding, steps: int, seq_len: int, batch_size: int,
                lr: float, warmup_steps: int, device: str, bf16: bool) -> dict:
    """Train a fresh decoder for ``steps`` steps on the fixture corpus and report whether its loss fell.

    Args:
        architecture: the decoder's shape (e.g. the ``base`` preset's).
        posenc: its positional encoding.
        steps: optimizer steps (at least 10).
        seq_len: window length L.
        batch_size: windows per step B.
        lr: peak learning rate.
        warmup_steps: linear warm-up steps.
        device: ``cuda`` or ``cpu``.
        bf16: autocast the forward to bf16 (Lightning's ``bf16-mixed``); otherwise fp32.

    Returns:
        losses (one per step), first_loss and last_loss (means of the first and last tenth of the steps),
        loss_fell (last <= LOSS_FALL_RATIO x first, every loss finite), tokens_per_s, seconds, corpus_tokens.
    """
    require(steps >= 10, "steps", ">= 10", steps)
    tokens = fixture_tokens().to(device)
    require(tokens.numel() > seq_len + 1, "seq_len", f"< {tokens.numel() - 1} (the fixture corpus's tokens)", seq_len)
    torch.manual_seed(0)
    model = DecoderLM(ByteTokenizer().vocab_size, architecture, posenc).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=lr, betas=(0.9, 0.95))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / max(1, warmup_steps)))
    gen = torch.Generator(device=device).manual_seed(0)
    offsets = torch.arange(seq_len + 1, device=device)
    losses = []
    start = time.perf_counter()
    for _ in range(steps):
        starts = torch.randint(0, tokens.numel() - seq_len - 1, (batch_size, 1), device=device, generator=gen)
        batch = tokens[starts + offsets]
        with torch.autocast(device, torch.bfloat16, enabled=bf16):
            logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    seconds = time.perf_counter() - start
    tenth = max(1, steps // 10)
    first, last = statistics.fmean(losses[:tenth]), statistics.fmean(losses[-tenth:])
    return {"losses": losses, "first_loss": first, "last_loss": last,
            "loss_fell": all(math.isfinite(x) for x in losses) and last <= LOSS_FALL_RATIO * first,
            "tokens_per_s": steps * batch_size * seq_len / seconds, "seconds": seconds,
            "corpus_tokens": tokens.numel()}

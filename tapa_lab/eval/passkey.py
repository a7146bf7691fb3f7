"""Passkey retrieval accuracy per (length, depth) cell (PROTOCOLS.md; examples from :mod:`tapa_lab.data.passkey`).

Decoding is greedy. One forward pass over ``prompt + answer`` gives it exactly: greedy decoding produces the answer's
tokens iff the argmax after the prompt and after each correct answer prefix is the next answer token, so the greedy
output is the answer up to the first position where the argmax differs, then that argmax token (the rest no longer
changes the verdict). The argmax after the full answer is kept too, so ``" 123456"`` is told from ``" 12345."``.
:func:`~tapa_lab.data.passkey.is_exact_answer` then accepts only the exact digits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from tapa_lab.data.passkey import Filler, is_exact_answer, make_example, minimum_length, random_key
from tapa_lab.data.tokenizer import Tokenizer
from tapa_lab.errors import ConfigError, require
from tapa_lab.eval.perplexity import eval_lengths


@dataclass
class PasskeyConfig:
    """Passkey retrieval (PROTOCOLS.md, "Passkey retrieval"): accuracy per (length, depth) cell."""

    multiples: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0, 8.0, 16.0])
    """Prompt lengths as multiples of the run's training length (data.seq_len)."""
    lengths: list[int] | None = None
    """Absolute prompt lengths in tokens; when set, replaces multiples."""
    depths: list[float] = field(default_factory=lambda: [0.0, 25.0, 50.0, 75.0, 100.0])
    """Depths of the key sentence in percent of the filler (0: first, 100: right before the question)."""
    trials: int = 10
    """Examples (random keys and filler) per cell."""
    digits: int = 5
    """Digits per key."""
    filler: Filler = "repeat"
    """Filler text: repeat (a fixed sentence) or corpus (text of the evaluation split)."""
    seed: int = 0
    """Seed of the keys and the filler positions (cell results are reproducible)."""
    batch_tokens: int = 16384
    """Prompt tokens per forward pass."""

    def lengths_for(self, train_seq_len: int) -> list[int]:
        """The absolute prompt lengths."""
        return eval_lengths(self.multiples, self.lengths, train_seq_len, "passkey")

    def validate(self, train_seq_len: int, tokenizer: Tokenizer, filler_tokens: int) -> None:
        """Raise :class:`ConfigError` naming the first bad field, before any evaluation work."""
        require(len(self.depths) > 0 and all(0 <= d <= 100 for d in self.depths), "passkey.depths",
                "a non-empty list of percentages in [0, 100]", self.depths)
        require(self.trials >= 1, "passkey.trials", ">= 1", self.trials)
        require(self.digits >= 1, "passkey.digits", ">= 1", self.digits)
        require(self.filler in ("repeat", "corpus"), "passkey.filler", "repeat or corpus", self.filler)
        require(self.batch_tokens >= 1, "passkey.batch_tokens", ">= 1", self.batch_tokens)
        lengths = self.lengths_for(train_seq_len)
        shortest = minimum_length(tokenizer, self.digits)
        name = "passkey.lengths" if self.lengths is not None else "passkey.multiples"
        require(min(lengths) >= shortest, name, f"lengths of at least {shortest} tokens (key sentence + question)",
                lengths)
        if self.filler == "corpus" and max(lengths) > filler_tokens:
            raise ConfigError(f"passkey.filler = 'corpus': the split has {filler_tokens} tokens, fewer than the "
                              f"longest prompt ({max(lengths)}); use filler: repeat or shorter lengths.")


@torch.inference_mode()
def greedy_outputs(model: nn.Module, prompts: Tensor, answers: Tensor) -> Tensor:
    """The greedy continuation of each prompt, as far as it decides the verdict (see the module docstring).

    Args:
        model: tokens ``(B, L)`` -> logits ``(B, L, V)``.
        prompts: ``(B, L)`` token ids.
        answers: ``(B, n)`` the expected answer tokens.

    Returns:
        ``(B, n + 1)`` token ids: the answer up to the first greedy mismatch, the mismatching argmax, then padding
        with -1; or the whole answer and the argmax after it.
    """
    n = answers.shape[1]
    logits = model(torch.cat([prompts, answers], dim=1))[:, -n - 1:]  # (B, n + 1, V)
    predicted = logits.argmax(-1)
    wrong = predicted[:, :n] != answers
    first_wrong = torch.where(wrong.any(1), wrong.float().argmax(1), torch.full_like(wrong[:, 0], n, dtype=torch.long))
    keep = torch.arange(n + 1, device=prompts.device)[None, :] <= first_wrong[:, None]
    return torch.where(keep, predicted, torch.full_like(predicted, -1))


def evaluate_passkey(model: nn.Module, tokenizer: Tokenizer, config: PasskeyConfig, lengths: list[int],
                     source: np.ndarray | None, device: torch.device, advance: Callable[[int], None]) -> dict:
    """Accuracy of greedy passkey retrieval per (length, depth) cell.

    Args:
        model: tokens ``(B, L)`` -> logits ``(B, L, V)``.
        tokenizer: the run's tokenizer.
        config: the passkey settings.
        lengths: prompt lengths in tokens.
        source: corpus tokens for ``filler = corpus``; ``None`` for the repeated sentence.
        device: where the prompts go.
        advance: called with the number of examples done after each batch (progress bars).

    Returns:
        ``{"lengths", "depths", "accuracy" (len(lengths) x len(depths)), "mean_accuracy", "trials", ...}``, with
        one decoded output per cell under ``samples``.
    """
    accuracy = np.zeros((len(lengths), len(config.depths)))
    samples: list[dict] = []
    for li, length in enumerate(lengths):
        batch_size = max(1, config.batch_tokens // length)
        for di, depth in enumerate(config.depths):
            rng = np.random.default_rng([config.seed, length, di])
            examples = [make_example(tokenizer, length, depth / 100, random_key(rng, config.digits), rng, source)
                        for _ in range(config.trials)]
            correct = 0
            for first in range(0, len(examples), batch_size):
                batch = examples[first:first + batch_size]
                prompts = torch.from_numpy(np.stack([e.prompt for e in batch])).to(device)
                answers = torch.from_numpy(np.stack([e.answer for e in batch])).to(device)
                outputs = greedy_outputs(model, prompts, answers).cpu().numpy()
                texts = [tokenizer.decode(output[output >= 0]) for output in outputs]
                correct += sum(is_exact_answer(text, e.key) for text, e in zip(texts, batch, strict=True))
                if first == 0:  # one example output per cell, for reading what the model says
                    samples.append({"length": length, "depth": depth, "key": batch[0].key, "output": texts[0]})
                advance(len(batch))
            accuracy[li, di] = correct / config.trials
    return {"lengths": lengths, "depths": list(config.depths), "accuracy": accuracy.tolist(),
            "mean_accuracy": float(accuracy.mean()), "trials": config.trials, "digits": config.digits,
            "filler": config.filler, "samples": samples}

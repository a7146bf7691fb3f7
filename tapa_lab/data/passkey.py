"""Passkey retrieval examples (Mohtashami & Jaggi 2023, arXiv 2305.16300), shared by training and evaluation.

An example of ``length`` prompt tokens is filler text with the key sentence inserted at a depth, then the question:

    [filler before][ The pass key is 12345. Remember it. ][filler after][ What is the pass key? The pass key is]

and the answer `` 12345``. The depth is the fraction of the filler placed before the key sentence (0 = the key opens
the prompt, 1 = it sits right before the question). The filler is a fixed repeated sentence or corpus text.
Training (:class:`PasskeyTrainWindows`) replaces a fraction of the training windows by full examples (prompt + answer
+ continuation) at the training length, so a small model learns the format; evaluation asks for the digits at longer
lengths and scores them with :func:`is_exact_answer`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from tapa_lab.data.tokenizer import Tokenizer
from tapa_lab.data.train_windows import TrainWindows
from tapa_lab.errors import require

Filler = Literal["repeat", "corpus"]

REPEATED_FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
KEY_SENTENCE = " The pass key is {key}. Remember it. "
QUESTION = " What is the pass key? The pass key is"
#: Seed-sequence tag that keeps the passkey draws of training sample ``i`` independent of its window start.
_PASSKEY_STREAM = 0x9A55


@dataclass(frozen=True)
class PasskeyExample:
    """One passkey prompt.

    Attributes:
        prompt: the prompt's token ids, int64 ``(length,)``, ending with the question.
        answer: the answer's token ids (a space and the digits), int64 ``(n,)``.
        key: the digits.
        key_start: index in ``prompt`` where the key sentence starts.
        depth: the asked depth in [0, 1].
    """

    prompt: np.ndarray
    answer: np.ndarray
    key: str
    key_start: int
    depth: float


def random_key(rng: np.random.Generator, digits: int) -> str:
    """A key of ``digits`` decimal digits whose first digit is not 0."""
    return str(rng.integers(1, 10)) + "".join(str(d) for d in rng.integers(0, 10, size=digits - 1))


def filler_tokens(tokenizer: Tokenizer, count: int, source: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """``count`` filler tokens: the repeated sentence (``source`` None) or a random slice of ``source`` tokens."""
    if source is None:
        sentence = tokenizer.encode(REPEATED_FILLER)
        return np.resize(sentence, count).astype(np.int64)
    require(len(source) >= count, "passkey filler", f"a token source of at least {count} tokens", len(source))
    start = int(rng.integers(0, len(source) - count + 1))
    return np.asarray(source[start:start + count], dtype=np.int64)


def make_example(tokenizer: Tokenizer, length: int, depth: float, key: str, rng: np.random.Generator,
                 source: np.ndarray | None = None) -> PasskeyExample:
    """A prompt of exactly ``length`` tokens with ``key`` at ``depth``.

    Args:
        tokenizer: encodes the sentences.
        length: prompt length in tokens; must leave room for the key sentence and the question.
        depth: fraction of the filler placed before the key sentence, in [0, 1].
        key: the digits.
        rng: draws the filler's position in ``source``.
        source: corpus tokens to take the filler from; ``None`` repeats a fixed sentence.
    """
    require(0.0 <= depth <= 1.0, "passkey depth", "in [0, 1] (0-100%)", depth)
    key_sentence = tokenizer.encode(KEY_SENTENCE.format(key=key))
    question = tokenizer.encode(QUESTION)
    budget = length - len(key_sentence) - len(question)
    require(budget >= 0, "passkey length", f">= {len(key_sentence) + len(question)} tokens (key sentence + question)",
            length)
    filler = filler_tokens(tokenizer, budget, source, rng)
    key_start = round(depth * budget)
    prompt = np.concatenate([filler[:key_start], key_sentence, filler[key_start:], question]).astype(np.int64)
    return PasskeyExample(prompt, tokenizer.encode(" " + key).astype(np.int64), key, key_start, depth)


def minimum_length(tokenizer: Tokenizer, digits: int) -> int:
    """The shortest prompt that holds the key sentence and the question (no filler) for ``digits``-digit keys."""
    key = "9" * digits
    return len(tokenizer.encode(KEY_SENTENCE.format(key=key))) + len(tokenizer.encode(QUESTION))


def is_exact_answer(generated: str, key: str) -> bool:
    """Whether ``generated`` (the text after the prompt) gives exactly the digits of ``key``.

    Optional leading whitespace, the digits, then anything but another digit: ``" 12345."`` passes; ``" 123456"`` and
    ``" 1234"`` fail.
    """
    match = re.match(r"\s*(\d+)", generated)
    return match is not None and match.group(1) == key


class PasskeyTrainWindows(TrainWindows):
    """Training windows where each sample is, with probability ``rate``, a passkey example instead of corpus text.

    Whether sample ``i`` is an example, its depth, key and filler are drawn from ``(seed, i)`` alone, so the stream
    stays exactly resumable; the other samples are the plain windows of :class:`TrainWindows`. An example is the prompt,
    the answer and the rest of the key sentence, cut to ``seq_len + 1`` tokens (the model is trained on all of it).

    Args:
        tokens: the packed training tokens ``(n,)``, also the corpus filler source.
        seq_len: the training length.
        seed: the stream's seed.
        tokenizer: encodes the example's sentences.
        rate: fraction of samples that are passkey examples, in [0, 1].
        filler: ``repeat`` (a fixed sentence) or ``corpus`` (slices of the training tokens).
        digits: digits per key (>= 1).
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int, tokenizer: Tokenizer, rate: float,
                 filler: Filler = "repeat", digits: int = 5) -> None:
        super().__init__(tokens, seq_len, seed)
        require(0.0 <= rate <= 1.0, "data.passkey_rate", "in [0, 1]", rate)
        require(digits >= 1, "data.passkey_digits", ">= 1", digits)
        self.suffix = tokenizer.encode(".")
        shortest = minimum_length(tokenizer, digits) + len(tokenizer.encode(" " + "9" * digits)) + len(self.suffix)
        require(rate == 0 or seq_len + 1 >= shortest, "data.seq_len",
                f">= {shortest - 1} to hold a passkey example (data.passkey_rate = {rate})", seq_len)
        self.tokenizer = tokenizer
        self.rate = rate
        self.filler = filler
        self.digits = digits

    def __getitem__(self, sample_id: int) -> Tensor:
        rng = np.random.default_rng([self.seed, sample_id, _PASSKEY_STREAM])
        if rng.random() >= self.rate:
            return super().__getitem__(sample_id)
        key = random_key(rng, self.digits)
        answer_length = len(self.tokenizer.encode(" " + key)) + len(self.suffix)
        example = make_example(self.tokenizer, self.seq_len + 1 - answer_length, float(rng.random()), key, rng,
                               self.tokens if self.filler == "corpus" else None)
        return torch.from_numpy(np.concatenate([example.prompt, example.answer, self.suffix]).astype(np.int64))

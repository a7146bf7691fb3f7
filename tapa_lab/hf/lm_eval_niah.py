"""Needle-in-a-haystack tasks for lm-evaluation-harness that need no download, sized with the run's own tokenizer.

Two generative tasks, written per evaluated length as JSON lines plus a task YAML (greedy decoding, real generation
through the Hugging Face wrapper and its KV cache):

- ``tapa_niah_single_1``: RULER's ``niah_single_1`` (Hsieh et al. 2024, arXiv 2404.06654) as lm-eval 0.4 words it:
  the "repeat" haystack (one sentence repeated, a line each), one needle "One of the special magic numbers for
  {key} is: {value}." with a 7-digit value, the question and the answer prefix; scored with RULER's
  ``string_match_all`` (the value appears in the output). lm-eval's own ``niah_single_1`` cannot run offline: it
  imports ``wonderwords`` (for the keys) and downloads NLTK's ``punkt_tab`` when its module loads, and it sizes
  prompts with a tokenizer loaded by name. Here keys come from a fixed word list and the run's tokenizer sizes the
  prompt. The prompt alone needs about 300 tokens with the byte tokenizer.
- ``tapa_passkey``: the lab's passkey prompts (:mod:`tapa_lab.data.passkey`, the same repeated sentence as RULER's
  haystack), short enough for a tiny model's training length, scored like ``tapa-lab eval --passkey`` (exact
  digits). For the same length, depths, trials and seed the prompts are the ones the lab's passkey evaluation builds.

Every prompt, plus ``max_gen_toks`` generated tokens, fits the evaluated length (lm-eval's ``max_length``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from tapa_lab.data.passkey import is_exact_answer, make_example, minimum_length, random_key
from tapa_lab.data.tokenizer import Tokenizer
from tapa_lab.errors import ConfigError, require

NIAH_TASK = "tapa_niah_single_1"
PASSKEY_TASK = "tapa_passkey"

HAYSTACK = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NEEDLE = "One of the special magic numbers for {key} is: {value}."
TEMPLATE = ("A special magic number is hidden within the following text. Make sure to memorize it. I will quiz you "
            "about the number afterwards.\n{context}\nWhat is the special magic number for {query} mentioned in the "
            "provided text?")
ANSWER_PREFIX = " The special magic number for {query} mentioned in the provided text is"
ADJECTIVES = ("quiet", "brave", "amber", "gentle", "rapid", "silver", "hollow", "tidy", "wild", "bitter", "calm",
              "eager", "fuzzy", "jolly", "lucky", "noisy", "proud", "sunny", "vivid", "witty")
NOUNS = ("harbor", "lantern", "meadow", "violin", "pepper", "glacier", "candle", "falcon", "orchard", "saddle",
         "compass", "thimble", "canyon", "kettle", "ribbon", "walnut", "beacon", "quarry", "tunnel", "marble")
#: RULER's value: a 7-digit number.
NIAH_DIGITS = 7


@dataclass
class NeedleConfig:
    """The needle tasks' examples: ``trials`` per depth, reproducible from ``seed``."""

    depths: list[float] = field(default_factory=lambda: [0.0, 25.0, 50.0, 75.0, 100.0])
    """Depths of the needle in percent of the haystack (0: first, 100: right before the question)."""
    trials: int = 4
    """Examples per depth and length."""
    digits: int = 5
    """Digits of the passkey (tapa_passkey); RULER's needle value always has 7."""
    seed: int = 0
    """Seed of keys and values (per length and depth, like the lab's passkey evaluation)."""

    def validate(self) -> None:
        """Raise :class:`~tapa_lab.errors.ConfigError` naming the first bad field."""
        require(len(self.depths) > 0 and all(0 <= d <= 100 for d in self.depths), "needle.depths",
                "a non-empty list of percentages in [0, 100]", self.depths)
        require(self.trials >= 1, "needle.trials", ">= 1", self.trials)
        require(self.digits >= 1, "needle.digits", ">= 1", self.digits)


def max_gen_toks(tokenizer: Tokenizer, digits: int) -> int:
    """Tokens generated per answer: the answer (a space and ``digits`` digits) and one more, so that a longer number
    is told from the right one (as the lab's passkey evaluation does)."""
    return len(tokenizer.encode(" " + "9" * digits)) + 1


def _niah_prompt(tokenizer: Tokenizer, budget: int, depth: float, key: str, value: str) -> str | None:
    """The longest RULER prompt (most haystack lines) of at most ``budget`` tokens, or ``None`` if none fits."""

    def prompt(lines: int) -> str:
        haystack = [HAYSTACK] * lines
        haystack.insert(round(depth * lines), NEEDLE.format(key=key, value=value))
        return TEMPLATE.format(context="\n".join(haystack), query=key) + ANSWER_PREFIX.format(query=key)

    if len(tokenizer.encode(prompt(0))) > budget:
        return None
    low, high = 0, 1
    while len(tokenizer.encode(prompt(high))) <= budget:
        low, high = high, 2 * high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if len(tokenizer.encode(prompt(middle))) <= budget else (low, middle)
    return prompt(low)


def niah_minimum_length(tokenizer: Tokenizer) -> int:
    """The shortest evaluated length that holds a RULER prompt with no haystack and the generated answer."""
    key, value = f"{ADJECTIVES[0]}-{NOUNS[0]}", "9" * NIAH_DIGITS
    bare = TEMPLATE.format(context=NEEDLE.format(key=key, value=value), query=key) + ANSWER_PREFIX.format(query=key)
    return len(tokenizer.encode(bare)) + max_gen_toks(tokenizer, NIAH_DIGITS)


def niah_documents(tokenizer: Tokenizer, length: int, config: NeedleConfig, field: str = "lengths") -> list[dict]:
    """RULER ``niah_single_1`` examples whose prompt and generated answer fit ``length`` tokens.

    Raises:
        ConfigError: naming ``field`` (the option that set ``length``) when no prompt fits.
    """
    budget = length - max_gen_toks(tokenizer, NIAH_DIGITS)
    documents = []
    for depth_index, depth in enumerate(config.depths):
        rng = np.random.default_rng([config.seed, length, depth_index])
        for _ in range(config.trials):
            key = f"{ADJECTIVES[rng.integers(len(ADJECTIVES))]}-{NOUNS[rng.integers(len(NOUNS))]}"
            value = random_key(rng, NIAH_DIGITS)
            prompt = _niah_prompt(tokenizer, budget, depth / 100, key, value)
            if prompt is None:
                raise ConfigError(f"{field}: the evaluated length {length} is too short for {NIAH_TASK}, which needs "
                                  f"at least {niah_minimum_length(tokenizer)} tokens (prompt and answer).")
            documents.append({"input": prompt, "outputs": [value], "depth": depth, "length": length})
    return documents


def passkey_documents(tokenizer: Tokenizer, length: int, config: NeedleConfig, field: str = "lengths") -> list[dict]:
    """The lab's passkey examples (repeated filler) whose prompt and generated answer fit ``length`` tokens.

    Raises:
        ConfigError: naming ``field`` (the option that set ``length``) when the key sentence and question do not fit.
    """
    prompt_length = length - max_gen_toks(tokenizer, config.digits)
    shortest = minimum_length(tokenizer, config.digits) + max_gen_toks(tokenizer, config.digits)
    if prompt_length < minimum_length(tokenizer, config.digits):
        raise ConfigError(f"{field}: the evaluated length {length} is too short for {PASSKEY_TASK}, which needs at "
                          f"least {shortest} tokens with {config.digits}-digit keys (prompt and answer).")
    documents = []
    for depth_index, depth in enumerate(config.depths):
        rng = np.random.default_rng([config.seed, prompt_length, depth_index])
        for _ in range(config.trials):
            example = make_example(tokenizer, prompt_length, depth / 100, random_key(rng, config.digits), rng)
            documents.append({"input": tokenizer.decode(example.prompt), "outputs": [example.key], "depth": depth,
                              "length": length})
    return documents


def niah_results(doc: dict, results: list[str]) -> dict[str, float]:
    """RULER's ``string_match_all``: the fraction of the expected values found in the output (case-insensitive)."""
    output = results[0].strip().lower()
    return {"accuracy": sum(value.lower() in output for value in doc["outputs"]) / len(doc["outputs"])}


def passkey_results(doc: dict, results: list[str]) -> dict[str, float]:
    """The lab's passkey verdict: exactly the key's digits, then no other digit."""
    return {"accuracy": float(is_exact_answer(results[0], doc["outputs"][0]))}


def write_needle_task(folder: Path, task: str, documents: list[dict], generate_tokens: int) -> Path:
    """Write ``<folder>/<task>.jsonl`` and the task YAML (greedy generation of ``generate_tokens`` tokens at most).

    Returns:
        The YAML's path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{task}.jsonl"
    data.write_text("".join(json.dumps(doc) + "\n" for doc in documents), encoding="utf-8")
    scorer = "niah_results" if task == NIAH_TASK else "passkey_results"
    config = {
        "task": task,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "{{input}}",
        "doc_to_target": "{{outputs[0]}}",
        "process_results": f"!function {__name__}.{scorer}",
        "metric_list": [{"metric": "accuracy", "aggregation": "mean", "higher_is_better": True}],
        "generation_kwargs": {"do_sample": False, "max_gen_toks": generate_tokens, "until": ["\n"]},
        "metadata": {"version": 1.0},
    }
    text = yaml.safe_dump(config, sort_keys=False).replace(f"'!function {__name__}.{scorer}'",
                                                          f"!function {__name__}.{scorer}")
    path = folder / f"{task}.yaml"
    path.write_text(text, encoding="utf-8")
    return path

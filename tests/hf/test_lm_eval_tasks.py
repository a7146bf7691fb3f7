"""The lab's lm-eval tasks: needle prompts fit the evaluated length, the passkey prompts are the lab's own, and the
written YAMLs load in lm-eval (``!function`` scorers resolve)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("lm_eval")
from lm_eval.tasks import TaskManager  # noqa: E402

from tapa_lab.data.passkey import make_example, random_key  # noqa: E402
from tapa_lab.data.tokenizer_byte import ByteTokenizer  # noqa: E402
from tapa_lab.errors import ConfigError  # noqa: E402
from tapa_lab.hf.lm_eval_niah import (  # noqa: E402
    NIAH_DIGITS,
    NIAH_TASK,
    PASSKEY_TASK,
    NeedleConfig,
    max_gen_toks,
    niah_documents,
    niah_minimum_length,
    niah_results,
    passkey_documents,
    passkey_results,
    write_needle_task,
)
from tapa_lab.hf.lm_eval_rolling import ROLLING_TASK, rolling_documents, write_rolling_task  # noqa: E402

TOKENIZER = ByteTokenizer()


@pytest.mark.parametrize("length", [400, 512, 1024])
def test_niah_prompts_and_answers_fit_the_length_and_hold_the_needle(length):
    config = NeedleConfig(depths=[0.0, 50.0, 100.0], trials=2)
    documents = niah_documents(TOKENIZER, length, config)
    assert len(documents) == 6
    budget = length - max_gen_toks(TOKENIZER, NIAH_DIGITS)
    for doc in documents:
        size = len(TOKENIZER.encode(doc["input"]))
        assert size <= budget
        assert size > budget - len(TOKENIZER.encode("The grass is green. The sky is blue. The sun is yellow. Here we "
                                                    "go. There and back again.\n"))  # no room for one more line
        value = doc["outputs"][0]
        assert len(value) == NIAH_DIGITS and f"is: {value}." in doc["input"]
        assert doc["input"].endswith("mentioned in the provided text is")
        lines = doc["input"].split("\n")  # the instruction, the haystack lines with the needle, the question
        needle = next(i for i, line in enumerate(lines) if line.startswith("One of the special magic numbers"))
        haystack = len(lines) - 3
        assert needle == 1 + round(doc["depth"] / 100 * haystack)


def test_needle_tasks_refuse_lengths_that_cannot_hold_them():
    with pytest.raises(ConfigError, match=f"^lengths: .* too short for {NIAH_TASK}"):
        niah_documents(TOKENIZER, niah_minimum_length(TOKENIZER) - 1, NeedleConfig(trials=1))
    assert niah_documents(TOKENIZER, niah_minimum_length(TOKENIZER), NeedleConfig(trials=1, depths=[0.0]))
    with pytest.raises(ConfigError, match=f"^lengths: .* too short for {PASSKEY_TASK}"):
        passkey_documents(TOKENIZER, 64, NeedleConfig())


def test_passkey_prompts_are_the_lab_passkey_prompts():
    config = NeedleConfig(depths=[0.0, 50.0], trials=3, digits=5, seed=4)
    documents = passkey_documents(TOKENIZER, 128, config)
    prompt_length = 128 - max_gen_toks(TOKENIZER, 5)
    expected = []
    for index, depth in enumerate(config.depths):  # as tapa_lab.eval.passkey draws them at that prompt length
        rng = np.random.default_rng([config.seed, prompt_length, index])
        expected += [make_example(TOKENIZER, prompt_length, depth / 100, random_key(rng, 5), rng)
                     for _ in range(config.trials)]
    assert [d["input"] for d in documents] == [TOKENIZER.decode(e.prompt) for e in expected]
    assert [d["outputs"] for d in documents] == [[e.key] for e in expected]
    assert all(len(TOKENIZER.encode(d["input"])) == prompt_length for d in documents)


def test_scorers_follow_ruler_and_the_lab():
    doc = {"outputs": ["1234567"]}
    assert niah_results(doc, [" 1234567. And more"])["accuracy"] == 1.0
    assert niah_results(doc, [" 123456"])["accuracy"] == 0.0
    key = {"outputs": ["12345"]}
    assert passkey_results(key, [" 12345."])["accuracy"] == 1.0
    assert passkey_results(key, [" 123456"])["accuracy"] == 0.0


def test_rolling_documents_are_those_the_lab_windows_use():
    documents = [np.zeros(n, dtype=np.int64) for n in (10, 129, 128, 300)]
    assert rolling_documents(documents, 128, None) == [1, 3]
    assert rolling_documents(documents, 128, 1) == [1]


def test_written_tasks_load_in_lm_eval(tmp_path):
    write_rolling_task(tmp_path, ["first document", "second one"])
    write_needle_task(tmp_path, PASSKEY_TASK, passkey_documents(TOKENIZER, 96, NeedleConfig(trials=1)), 7)
    tasks = TaskManager(include_path=str(tmp_path), include_defaults=False).load([ROLLING_TASK, PASSKEY_TASK])["tasks"]
    rolling, passkey = tasks[ROLLING_TASK], tasks[PASSKEY_TASK]
    assert rolling.OUTPUT_TYPE == "loglikelihood_rolling" and len(rolling.test_docs()) == 2
    assert passkey.OUTPUT_TYPE == "generate_until" and passkey.config.process_results is passkey_results
    assert passkey.config.generation_kwargs["max_gen_toks"] == 7

"""Passkey: examples put the key at the asked depth, the scorer wants the exact digits, one-pass greedy decoding equals
step-by-step greedy decoding, and the training mixture is deterministic per (seed, sample id)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tapa_lab.data import ByteTokenizer, Fixture, TrainWindows
from tapa_lab.data.passkey import (
    KEY_SENTENCE,
    QUESTION,
    PasskeyTrainWindows,
    is_exact_answer,
    make_example,
    random_key,
)
from tapa_lab.errors import ConfigError
from tapa_lab.eval.passkey import PasskeyConfig, greedy_outputs
from tapa_lab.lit.datamodule import TextDataModule
from tapa_lab.model import DecoderConfig, DecoderLM
from tapa_lab.posenc import RoPE

TOKENIZER = ByteTokenizer()


@pytest.mark.parametrize("depth", [0.0, 0.1, 0.37, 0.5, 1.0])
@pytest.mark.parametrize("filler", ["repeat", "corpus"])
def test_example_places_the_key_at_the_asked_depth(depth, filler):
    rng = np.random.default_rng(1)
    source = TOKENIZER.encode("Some corpus text, quite different from the repeated filler. " * 40) \
        if filler == "corpus" else None
    example = make_example(TOKENIZER, 400, depth, "40213", rng, source)
    key_sentence, question = TOKENIZER.encode(KEY_SENTENCE.format(key="40213")), TOKENIZER.encode(QUESTION)
    budget = 400 - len(key_sentence) - len(question)
    assert len(example.prompt) == 400
    assert example.key_start == round(depth * budget)
    assert np.array_equal(example.prompt[example.key_start:example.key_start + len(key_sentence)], key_sentence)
    assert TOKENIZER.decode(example.prompt).endswith(QUESTION)
    assert TOKENIZER.decode(example.prompt).count("40213") == 1
    assert TOKENIZER.decode(example.answer) == " 40213"


def test_scorer_accepts_only_the_exact_digits():
    for good in (" 40213", " 40213.", "40213", "\n40213 is it", " 40213\n"):
        assert is_exact_answer(good, "40213"), good
    for bad in (" 402130", " 4021", " 40231", "x40213", "", " ", "key 40213", " 4O213"):
        assert not is_exact_answer(bad, "40213"), bad


def test_depth_outside_0_to_100_percent_names_the_field():
    with pytest.raises(ConfigError, match="passkey.depths"):
        PasskeyConfig(depths=[0, 50, 120]).validate(128, TOKENIZER, 10_000)
    with pytest.raises(ConfigError, match="passkey.depths"):
        PasskeyConfig(depths=[-5]).validate(128, TOKENIZER, 10_000)
    with pytest.raises(ConfigError, match="passkey depth"):
        make_example(TOKENIZER, 200, 1.5, "12345", np.random.default_rng(0))


def test_one_pass_greedy_equals_step_by_step_greedy_decoding():
    torch.manual_seed(0)
    model = DecoderLM(258, DecoderConfig(d_model=32, n_layers=1, n_heads=2), RoPE(backend="torch")).eval()
    rng = np.random.default_rng(0)
    examples = [make_example(TOKENIZER, 90, depth, random_key(rng, 5), rng) for depth in (0.0, 0.5, 1.0)]
    prompts = torch.from_numpy(np.stack([e.prompt for e in examples]))
    # an answer the model is forced to get right for two steps: take its own greedy tokens as the "answer" prefix
    with torch.no_grad():
        sequence = prompts
        for _ in range(6):
            sequence = torch.cat([sequence, model(sequence)[:, -1:].argmax(-1)], dim=1)
    greedy = sequence[:, prompts.shape[1]:]  # (3, 6): the real greedy decoding
    answers = torch.stack([torch.from_numpy(e.answer) for e in examples])  # (3, 6)
    answers[0] = greedy[0]  # fully right
    answers[1, :2] = greedy[1, :2]  # right for two tokens, then a different token
    answers[1, 2] = (greedy[1, 2] + 1) % 258
    outputs = greedy_outputs(model, prompts, answers[:, :5])  # the answer is 5 tokens, the 6th is the check
    assert torch.equal(outputs[0], greedy[0])
    assert torch.equal(outputs[1, :3], greedy[1, :3]) and (outputs[1, 3:] == -1).all()
    first_wrong = int((greedy[2] != answers[2, :6]).int().argmax())
    assert torch.equal(outputs[2, :first_wrong + 1], greedy[2, :first_wrong + 1])


def test_training_mixture_is_deterministic_and_keeps_the_other_windows():
    tokens = np.random.default_rng(0).integers(0, 256, 20_000).astype(np.uint16)
    plain = TrainWindows(tokens, 160, seed=3)
    mixed = PasskeyTrainWindows(tokens, 160, 3, TOKENIZER, rate=0.3)
    again = PasskeyTrainWindows(tokens, 160, 3, TOKENIZER, rate=0.3)
    passkey_ids = []
    for i in range(200):
        sample = mixed[i]
        assert sample.shape == (161,) and torch.equal(sample, again[i])
        text = TOKENIZER.decode(sample.numpy())
        if "What is the pass key? The pass key is" in text:
            passkey_ids.append(i)
            key = text.split("The pass key is ")[1][:5]
            assert text.endswith(f"The pass key is {key}.")
        else:
            assert torch.equal(sample, plain[i])
    assert 0.2 < len(passkey_ids) / 200 < 0.4


def test_datamodule_mixes_passkey_examples_at_the_chosen_rate(tmp_path):
    datamodule = TextDataModule(Fixture(), seq_len=128, data_dir=str(tmp_path), passkey_rate=0.5,
                                passkey_filler="corpus")
    datamodule.setup("fit")
    dataset = datamodule.train_dataset()
    assert isinstance(dataset, PasskeyTrainWindows) and dataset.filler == "corpus"
    with pytest.raises(ConfigError, match="data.seq_len"):
        PasskeyTrainWindows(np.zeros(1000, dtype=np.uint16), 32, 0, TOKENIZER, rate=0.1)
    with pytest.raises(ConfigError, match="data.passkey_rate"):
        TextDataModule(Fixture(), passkey_rate=1.5)

"""Tokenizers: byte-level round trips any text; BPE trains on the training split only and round trips too."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tapa_lab.data import BPETokenizer, ByteTokenizer, Fixture, pack_corpus
from tapa_lab.data.fixture import FIXTURE_DIR
from tapa_lab.errors import ConfigError

TEXTS = ["", "plain ASCII", "accents: é à ü ñ ç", "CJK: 静夜思 古池や", "emoji: 🐢🐇 👩‍🔬", "e\u0301 combining",
         (FIXTURE_DIR / "multilingual.txt").read_text(encoding="utf-8")]


@pytest.mark.parametrize("text", TEXTS)
def test_byte_tokenizer_round_trips_any_text(text):
    tokenizer = ByteTokenizer()
    ids = tokenizer.encode(text)
    assert ids.dtype == np.int64 and len(ids) == len(text.encode())
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(ids.tolist()) == text


def test_byte_tokenizer_specials_and_invalid_bytes():
    tokenizer = ByteTokenizer()
    assert (tokenizer.vocab_size, tokenizer.eod_id, tokenizer.pad_id) == (258, 256, 257)
    assert tokenizer.token_dtype == np.uint16
    assert tokenizer.decode([104, 105, tokenizer.eod_id, 33, tokenizer.pad_id]) == "hi!"
    assert tokenizer.decode([0xE9, 0x41]) == "\ufffdA"


def test_bpe_is_trained_on_the_training_split_and_round_trips(data_dir):
    pytest.importorskip("tokenizers")
    tokenizer = BPETokenizer(vocab_size=400)
    packed = pack_corpus(Fixture(), tokenizer, data_dir, 0.05, 0.05)
    assert (packed.directory / "tokenizer.json").exists()
    for text in TEXTS:
        ids = tokenizer.encode(text)
        assert ids.max(initial=0) < 400 and tokenizer.decode(ids) == text
    train_text = (FIXTURE_DIR / packed.doc_ids("train")[0]).read_text(encoding="utf-8")
    assert len(tokenizer.encode(train_text)) < 0.8 * len(train_text.encode())  # merges were learned
    for split in ("train", "validation", "test"):
        assert tokenizer.decode(packed.documents(split)[0]) == (
            FIXTURE_DIR / packed.doc_ids(split)[0]).read_text(encoding="utf-8")
    reloaded = BPETokenizer(vocab_size=400)
    pack_corpus(Fixture(), reloaded, data_dir, 0.05, 0.05)  # the cache exists: loads the trained file
    assert reloaded.encode("To be, or not to be").tolist() == tokenizer.encode("To be, or not to be").tolist()


def test_bpe_errors_say_what_to_do(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match="data.tokenizer.vocab_size"):
        BPETokenizer(vocab_size=100)
    with pytest.raises(RuntimeError, match="not trained yet"):
        BPETokenizer().encode("x")
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(ImportError, match=r"pip install 'tapa-lab\[bpe\]'"):
        BPETokenizer().train(["text"], tmp_path)

"""The byte and BPE tokenizers, saved as Hugging Face tokenizers and reopened with AutoTokenizer, give the lab's ids
and text back; EOS is the lab's end-of-document id and padding its pad id."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

import tapa_lab.hf.modeling  # noqa: F401  (registers AutoTokenizer for TapaLabByteTokenizer)
from tapa_lab.data import BPETokenizer, ByteTokenizer
from tapa_lab.hf.tokenizer import hf_tokenizer

TEXTS = ["To be, or not to be, that is the question:", "Héllo wörld ✓ — naïve façade", "tabs\tand\nnew lines  ",
         "a spelled <|endofdocument|> marker"]


def trained_bpe(tmp_path) -> BPETokenizer:
    tokenizer = BPETokenizer(vocab_size=300, min_frequency=1)
    tokenizer.train(TEXTS * 20, tmp_path)
    return tokenizer


@pytest.mark.parametrize("kind", ["byte", "bpe"])
def test_saved_tokenizer_gives_the_lab_ids_and_text(kind, tmp_path):
    lab = ByteTokenizer() if kind == "byte" else trained_bpe(tmp_path / "bpe")
    hf_tokenizer(lab).save_pretrained(tmp_path / "hf")
    reopened = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert reopened.eos_token_id == lab.eod_id
    assert reopened.pad_token_id == lab.pad_id
    assert reopened.bos_token_id is None
    for text in TEXTS:
        ids = reopened(text)["input_ids"]
        assert ids == lab.encode(text).tolist()
        assert reopened.decode(ids + [lab.eod_id], skip_special_tokens=True) == lab.decode(ids)


def test_byte_tokenizer_decodes_invalid_utf8_as_the_lab_does():
    tokenizer = hf_tokenizer(ByteTokenizer())
    assert tokenizer.decode([104, 0xE2, 0x9C]) == ByteTokenizer().decode([104, 0xE2, 0x9C]) == "h\ufffd"

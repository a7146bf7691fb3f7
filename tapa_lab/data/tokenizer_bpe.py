"""Byte-level BPE trained locally with the ``tokenizers`` library (optional: ``pip install tapa-lab[bpe]``).

Trained on the training split only (never on validation or test), with the GPT-2 byte-level pre-tokenizer, so any text
encodes without unknown tokens. The trained ``tokenizer.json`` is saved in the token cache beside the packed tokens it
produced (its folder is ``TextDataModule.cache_dir``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from tapa_lab.data.atomic import write_text_atomic
from tapa_lab.data.tokenizer import Tokenizer
from tapa_lab.errors import require

SPECIAL_TOKENS = ("<|endofdocument|>", "<|pad|>")
FILE_NAME = "tokenizer.json"


class BPETokenizer(Tokenizer):
    """Byte-level BPE; id 0 is end-of-document, id 1 padding.

    Args:
        vocab_size: number of ids, specials and the 256 byte symbols included (a small corpus may learn fewer merges;
            the model's embedding still has this many rows).
        min_frequency: a pair must occur this often to be merged.
    """

    def __init__(self, vocab_size: int = 4096, min_frequency: int = 2) -> None:
        require(vocab_size >= 256 + len(SPECIAL_TOKENS), "data.tokenizer.vocab_size", ">= 258", vocab_size)
        require(min_frequency >= 1, "data.tokenizer.min_frequency", ">= 1", min_frequency)
        self._vocab_size = vocab_size
        self.min_frequency = min_frequency
        self._model = None

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def eod_id(self) -> int:
        return 0

    @property
    def pad_id(self) -> int:
        return 1

    def config(self) -> dict:
        config = super().config()
        config["init_args"]["vocab_size"] = self._vocab_size
        return config

    def train(self, texts: Iterable[str], directory: Path) -> None:
        tokenizers = _import_tokenizers()
        model = tokenizers.Tokenizer(tokenizers.models.BPE())
        model.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
        model.decoder = tokenizers.decoders.ByteLevel()
        trainer = tokenizers.trainers.BpeTrainer(
            vocab_size=self._vocab_size, min_frequency=self.min_frequency, special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        model.train_from_iterator(texts, trainer=trainer)
        write_text_atomic(directory / FILE_NAME, model.to_str())
        self._model = model

    def load(self, directory: Path) -> None:
        self._model = _import_tokenizers().Tokenizer.from_file(str(directory / FILE_NAME))

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._trained().encode(text).ids, dtype=np.int64)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self._trained().decode(np.asarray(ids, dtype=np.int64).reshape(-1).tolist(), skip_special_tokens=True)

    def _trained(self):
        if self._model is None:
            raise RuntimeError("BPETokenizer is not trained yet: it is trained on the training split when the data "
                               "module prepares the data (TextDataModule.prepare_data() then setup()).")
        return self._model


def _import_tokenizers():
    """The ``tokenizers`` module, or an error saying how to install it."""
    try:
        import tokenizers
    except ImportError:
        raise ImportError("BPETokenizer needs the `tokenizers` library: pip install 'tapa-lab[bpe]' (or use "
                          "tapa_lab.data.ByteTokenizer, which needs nothing).") from None
    return tokenizers

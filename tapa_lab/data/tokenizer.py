"""The tokenizer interface: text to token ids and back, plus the special ids the lab needs.

A tokenizer is chosen in YAML by ``class_path`` (``tapa_lab.data.ByteTokenizer``, the default, or
``tapa_lab.data.BPETokenizer``). Its :meth:`Tokenizer.config` is part of the token cache's fingerprint. A tokenizer that
learns from data (BPE) does so in :meth:`Tokenizer.train` on the training split and saves itself beside the packed
tokens; :meth:`Tokenizer.load` reads it back.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np


class Tokenizer(ABC):
    """Base class of the tokenizers."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of token ids (every id is in ``[0, vocab_size)``); known right after construction."""

    @property
    @abstractmethod
    def eod_id(self) -> int:
        """The end-of-document id placed after every document when packing."""

    @property
    @abstractmethod
    def pad_id(self) -> int:
        """The padding id."""

    @abstractmethod
    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text``, an int64 array ``(n,)`` without special tokens."""

    @abstractmethod
    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of ``ids``; special tokens are dropped and invalid UTF-8 becomes U+FFFD."""

    @property
    def token_dtype(self) -> np.dtype:
        """The smallest dtype that stores every id: uint16 up to 65,536 ids, else int32."""
        return np.dtype(np.uint16) if self.vocab_size <= 2**16 else np.dtype(np.int32)

    def config(self) -> dict:
        """The tokenizer's identity for the cache fingerprint: class path and constructor arguments."""
        config = {
            "class_path": f"{type(self).__module__}.{type(self).__qualname__}",
            "init_args": {key: value for key, value in vars(self).items() if not key.startswith("_")},
        }
        return json.loads(json.dumps(config, sort_keys=True))

    def train(self, texts: Iterable[str], directory: Path) -> None:
        """Learn from the training split's ``texts`` and save into ``directory``. Nothing to learn by default."""
        return None

    def load(self, directory: Path) -> None:
        """Read what :meth:`train` saved in ``directory``. Nothing to read by default."""
        return None

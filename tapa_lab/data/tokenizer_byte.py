"""Byte-level tokenizer: the 256 UTF-8 byte values plus end-of-document and padding.

No download, any language, and the classic setting for length-extrapolation studies at small scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tapa_lab.data.tokenizer import Tokenizer


class ByteTokenizer(Tokenizer):
    """Ids 0-255 are the bytes of the UTF-8 text; 256 is end-of-document, 257 padding (``vocab_size`` 258)."""

    @property
    def vocab_size(self) -> int:
        return 258

    @property
    def eod_id(self) -> int:
        return 256

    @property
    def pad_id(self) -> int:
        return 257

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        values = np.asarray(ids, dtype=np.int64).reshape(-1)
        return values[values < 256].astype(np.uint8).tobytes().decode("utf-8", errors="replace")

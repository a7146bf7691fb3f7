"""The lab's tokenizers as ``transformers`` tokenizers.

- :class:`~tapa_lab.data.ByteTokenizer` -> :class:`TapaLabByteTokenizer`, a ``PreTrainedTokenizer`` with the same ids
  (0-255 the UTF-8 bytes, 256 end-of-document = EOS, 257 padding); no vocabulary file.
- :class:`~tapa_lab.data.BPETokenizer` -> ``PreTrainedTokenizerFast`` over the trained ``tokenizers`` model (its
  ``tokenizer.json``), EOS ``<|endofdocument|>`` (id 0), padding ``<|pad|>`` (id 1).

Neither adds a BOS token: the lab's models never saw one. Text that spells a special token is encoded as each lab
tokenizer does: as bytes by the byte tokenizer (``split_special_tokens``), as the special id by the BPE.
"""

from __future__ import annotations

from transformers import AddedToken, PreTrainedTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from tapa_lab.data.tokenizer import Tokenizer
from tapa_lab.data.tokenizer_bpe import SPECIAL_TOKENS, BPETokenizer
from tapa_lab.data.tokenizer_byte import ByteTokenizer

EOD_TOKEN = "<|endofdocument|>"
PAD_TOKEN = "<|pad|>"


class TapaLabByteTokenizer(PreTrainedTokenizer):
    """UTF-8 bytes as ids 0-255, ``<|endofdocument|>`` (EOS) 256, ``<|pad|>`` 257: the ids of ByteTokenizer."""

    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, eos_token: str | AddedToken = EOD_TOKEN, pad_token: str | AddedToken = PAD_TOKEN,
                 **kwargs) -> None:
        self._added_tokens_decoder = {256: _special(eos_token), 257: _special(pad_token)}
        kwargs.setdefault("split_special_tokens", True)
        super().__init__(eos_token=eos_token, pad_token=pad_token, **kwargs)

    @property
    def vocab_size(self) -> int:
        return 256

    def get_vocab(self) -> dict[str, int]:
        vocab = {chr(i): i for i in range(256)}
        vocab.update(self.added_tokens_encoder)
        return vocab

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return [chr(byte) for byte in text.encode("utf-8")]

    def _convert_token_to_id(self, token: str) -> int | None:
        return ord(token) if len(token) == 1 and ord(token) < 256 else None

    def _convert_id_to_token(self, index: int) -> str:
        return chr(index)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        data = b"".join(token.encode("utf-8") if token in self.added_tokens_encoder else bytes([ord(token)])
                        for token in tokens)
        return data.decode("utf-8", errors="replace")

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        return ()


def _special(token: str | AddedToken) -> AddedToken:
    return token if isinstance(token, AddedToken) else AddedToken(token, special=True)


def hf_tokenizer(tokenizer: Tokenizer) -> PreTrainedTokenizerBase:
    """The ``transformers`` tokenizer with the same ids as the lab's ``tokenizer`` (a trained BPE: loaded).

    Raises:
        TypeError: for a tokenizer class other than ByteTokenizer and BPETokenizer.
    """
    if isinstance(tokenizer, ByteTokenizer):
        return TapaLabByteTokenizer()
    if isinstance(tokenizer, BPETokenizer):
        eod, pad = SPECIAL_TOKENS
        return PreTrainedTokenizerFast(tokenizer_object=tokenizer._trained(), eos_token=eod, pad_token=pad)
    raise TypeError(f"No Hugging Face tokenizer for {type(tokenizer).__name__}: only ByteTokenizer and BPETokenizer.")

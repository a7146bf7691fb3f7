"""The decoder: blocks, attention and the model; no positional-encoding maths lives here."""

from tapa_lab.model.cache import KVCache
from tapa_lab.model.decoder import DecoderConfig, DecoderLM

__all__ = ["DecoderConfig", "DecoderLM", "KVCache"]

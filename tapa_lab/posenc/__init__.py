"""Positional encodings, one family per file; chosen in YAML by ``class_path`` (e.g. ``tapa_lab.posenc.TAPA``)."""

from tapa_lab.posenc.alibi import ALiBi
from tapa_lab.posenc.base import ConfigError, PositionalEncoding
from tapa_lab.posenc.nope import NoPE
from tapa_lab.posenc.rope import RoPE
from tapa_lab.posenc.rope_scaling import NTKAwareRoPE, PositionInterpolation, YaRN
from tapa_lab.posenc.tapa import TAPA, TAPALinearPhase, TAPAStaticPhase

__all__ = [
    "ALiBi", "ConfigError", "NTKAwareRoPE", "NoPE", "PositionInterpolation", "PositionalEncoding", "RoPE", "TAPA",
    "TAPALinearPhase", "TAPAStaticPhase", "YaRN",
]

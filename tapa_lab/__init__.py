"""tapa-lab: a lab for positional encodings in decoder-only language models."""

__version__ = "0.1.0"

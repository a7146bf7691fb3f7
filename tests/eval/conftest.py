"""Toy models and documents for the evaluation tests (random weights: the properties do not need training)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tapa_lab.model import DecoderConfig, DecoderLM
from tapa_lab.posenc import TAPA, RoPE

VOCAB = 40


def toy_model(posenc=None) -> DecoderLM:
    """A 2-layer decoder with random weights, in eval mode, on the PyTorch attention path."""
    torch.manual_seed(0)
    model = DecoderLM(VOCAB, DecoderConfig(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2),
                      posenc if posenc is not None else RoPE(backend="torch"))
    return model.eval()


@pytest.fixture(params=["rope", "tapa"])
def model(request) -> DecoderLM:
    return toy_model(RoPE(backend="torch") if request.param == "rope" else TAPA(backend="torch", chunk_size=8))


@pytest.fixture
def documents() -> list[np.ndarray]:
    """Four documents of random tokens, 40 to 160 tokens long (one too short for the longer windows)."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, VOCAB, n).astype(np.uint16) for n in (160, 40, 120, 97)]


@pytest.fixture
def make_model():
    """``make_model(posenc) -> DecoderLM``: the toy decoder with a chosen PE."""
    return toy_model

"""KV-cache contract for every PE discovered in tapa_lab.posenc: a prompt prefill then token-by-token decoding with the
cache gives, at every step, the logits of one full forward over the same tokens (float32, 1e-5), for prompts of 1, 17
and 70 tokens (70 > the training length of PEs that have one), on the PyTorch and the Triton (interpreter) backends."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from tapa_lab.model import DecoderConfig, DecoderLM, KVCache
from tapa_lab.posenc import TAPA, PositionalEncoding, pe_classes
from tapa_lab.posenc.phase_schedule import PhaseSchedule

TRAIN_LEN = 32
"""Given to the length arguments of PEs that take one; the longest prompt exceeds it."""
LENGTH_ARGS = ("original_max_len", "max_distance")
"""Constructor arguments beyond which a PE extrapolates: a training length (YaRN, Llama 3), a bucket range (T5)."""
PROMPTS = (1, 17, 70)
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
"""Compiled kernels on a GPU, Triton's interpreter on CPU (tests/conftest.py sets TRITON_INTERPRET without CUDA)."""
DECODE_STEPS = 3
VOCAB = 40


def make_pe(cls: type[PositionalEncoding], backend: str) -> PositionalEncoding:
    """``cls`` with its defaults, its training length (if any) set to TRAIN_LEN, on ``backend``."""
    params = inspect.signature(cls).parameters
    kwargs = {name: TRAIN_LEN for name in LENGTH_ARGS if name in params}
    return cls(backend=backend, **kwargs)


def learnable_alpha_tapa(backend: str) -> PositionalEncoding:
    return TAPA(alpha=0.5, learnable_alpha=True, backend=backend)


CASES = {name: (lambda backend, cls=cls: make_pe(cls, backend)) for name, cls in pe_classes().items()}
CASES["TAPA-learnable-alpha"] = learnable_alpha_tapa


def make_model(make, backend: str, small: bool = False, init_std: float = 0.1, dtype=torch.float32) -> DecoderLM:
    """A tiny decoder with random weights large enough (``init_std``) that positions change the logits by O(1);
    ``small``: one layer of two heads sharing one KV head (few programs for the Triton interpreter)."""
    torch.manual_seed(0)
    shape = dict(d_model=32, n_layers=1, n_heads=2, n_kv_heads=1) if small else dict(d_model=32, n_layers=2,
                                                                                        n_heads=4, n_kv_heads=2)
    config = DecoderConfig(**shape, init_std=init_std)
    model = DecoderLM(VOCAB, config, make(backend)).to(dtype).eval()
    with torch.no_grad():  # learnable PE scalars away from their initial values, different per head
        for name, param in model.named_parameters():
            if "posenc" in name:
                param.add_(0.1 * torch.randn_like(param))
    return model


def assert_cached_decoding_matches_full_forward(model: DecoderLM, prompt_len: int, atol: float = 1e-5,
                                                batch: int = 2) -> None:
    tokens = torch.randint(0, VOCAB, (batch, prompt_len + DECODE_STEPS), generator=torch.Generator().manual_seed(1))
    tokens = tokens.to(model.embed.weight.device)
    with torch.no_grad():
        full = model(tokens)  # (B, T, V)
        cache = KVCache()
        prefill = model(tokens[:, :prompt_len], cache=cache)
        torch.testing.assert_close(prefill, full[:, :prompt_len], rtol=0, atol=atol)
        for t in range(prompt_len, tokens.shape[1]):
            step = model(tokens[:, t:t + 1], cache=cache)
            assert cache.get_seq_length() == t + 1
            torch.testing.assert_close(step[:, 0], full[:, t], rtol=0, atol=atol, msg=lambda m, t=t: f"step {t}: {m}")


def test_discovery_covers_the_known_families():
    assert {"NoPE", "ALiBi", "RoPE", "YaRN", "TAPA", "TAPALinearPhase", "TAPAStaticPhase"} <= set(CASES)


@pytest.mark.parametrize("prompt_len", PROMPTS)
@pytest.mark.parametrize("name", list(CASES))
def test_cached_decoding_equals_full_forward_torch_backend(name, prompt_len):
    assert_cached_decoding_matches_full_forward(make_model(CASES[name], "torch"), prompt_len)


@pytest.mark.parametrize("name", list(CASES))
def test_cached_decoding_is_exact_in_float64(name):
    """In float64 (and larger weights) the cached and full logits agree to rounding: the cache changes no maths."""
    model = make_model(CASES[name], "torch", init_std=0.2, dtype=torch.float64)
    assert_cached_decoding_matches_full_forward(model, 70, atol=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("prompt_len", PROMPTS)
@pytest.mark.parametrize("name", list(CASES))
def test_cached_decoding_equals_full_forward_triton_backend(name, prompt_len):
    model = make_model(CASES[name], "triton", small=True).to(TRITON_DEVICE)
    assert_cached_decoding_matches_full_forward(model, prompt_len, batch=1)


def test_positions_continue_after_an_offset_prompt():
    """A prompt at positions 100.. continued with the cache equals one forward at positions 100.. (RoPE)."""
    model = make_model(CASES["RoPE"], "torch")
    tokens = torch.randint(0, VOCAB, (1, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(tokens, positions=torch.arange(100, 112))
        cache = KVCache()
        model(tokens[:, :8], positions=torch.arange(100, 108), cache=cache)
        step = model(tokens[:, 8:], positions=torch.arange(108, 112), cache=cache)
    torch.testing.assert_close(step, full[:, 8:], rtol=0, atol=1e-5)


def test_learnable_alpha_is_per_head_and_used_by_the_cached_path():
    """Different learned alphas change the cached logits, which still match the full forward."""
    model = make_model(learnable_alpha_tapa, "torch")
    alphas = model.blocks[0].attn.posenc.head_alpha()
    assert alphas.shape == (4,) and not torch.allclose(alphas, torch.full_like(alphas, 0.5))
    assert not math.isclose(alphas[0].item(), alphas[1].item())
    assert_cached_decoding_matches_full_forward(model, 17)


def test_cache_rejects_a_layer_out_of_order():
    cache = KVCache()
    with pytest.raises(IndexError, match="layer 1 before layer 0"):
        cache.update(torch.zeros(1, 1, 1, 2), torch.zeros(1, 1, 1, 2), layer_idx=1)


def test_cached_decoding_mid_phase_schedule_equals_full_forward():
    """TAPA half-way through its phase-temperature schedule (tau 2.5: a buffer, the same for every cached token)."""
    schedule = PhaseSchedule(start=4.0, end=1.0, steps=10, shape="linear")
    model = make_model(lambda backend: TAPA(phase_schedule=schedule, backend=backend), "torch")
    for block in model.blocks:
        assert block.attn.posenc.on_train_step(5) == {"phase_temperature": 2.5}
    for prompt_len in PROMPTS:
        assert_cached_decoding_matches_full_forward(model, prompt_len)

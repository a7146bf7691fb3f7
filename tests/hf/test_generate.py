"""Generation through transformers' generate: greedy decoding is deterministic and equals an argmax loop over the
lab's own KV cache; sampling is reproducible; bad options and prompts are clear errors."""

from __future__ import annotations

import pytest
import torch

from tapa_lab.errors import ConfigError
from tapa_lab.hf.export import wrap_decoder
from tapa_lab.hf.generate import GenerationOptions, encode_prompt, generate_ids
from tapa_lab.hf.tokenizer import TapaLabByteTokenizer
from tapa_lab.model import DecoderConfig, DecoderLM, KVCache
from tapa_lab.posenc import TAPA, ALiBi, RoPE

VOCAB = 40
EOS = 39
PES = {"RoPE": RoPE, "TAPA": TAPA, "ALiBi": ALiBi}


def lab_model(cls) -> DecoderLM:
    torch.manual_seed(0)
    config = DecoderConfig(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, init_std=0.3)
    return DecoderLM(VOCAB, config, cls(backend="torch")).eval()


@torch.no_grad()
def greedy_with_lab_cache(model: DecoderLM, prompt: torch.Tensor, max_new_tokens: int, eos: int) -> list[int]:
    """Prefill, then one token at a time with the lab's KVCache: the argmax after each step, up to EOS."""
    cache = KVCache()
    logits = model(prompt, cache=cache)
    out: list[int] = []
    for _ in range(max_new_tokens):
        token = logits[:, -1].argmax(-1, keepdim=True)  # (1, 1)
        out.append(token.item())
        if token.item() == eos:
            break
        logits = model(token, cache=cache)
    return out


@pytest.mark.parametrize("name", list(PES))
def test_greedy_generate_is_deterministic_and_equals_the_lab_cache_loop(name):
    lab = lab_model(PES[name])
    model = wrap_decoder(lab)
    model.config.eos_token_id = EOS
    prompt = torch.randint(0, EOS, (1, 9), generator=torch.Generator().manual_seed(3))
    options = GenerationOptions(max_new_tokens=24)
    first = generate_ids(model, prompt, options)[0].tolist()
    second = generate_ids(model, prompt, options)[0].tolist()
    assert first == second
    assert first == greedy_with_lab_cache(lab, prompt, 24, EOS)


def test_sampling_is_reproducible_by_seed_and_top_k_1_is_greedy():
    model = wrap_decoder(lab_model(RoPE))
    prompt = torch.randint(0, VOCAB, (1, 5), generator=torch.Generator().manual_seed(4))
    sample = GenerationOptions(max_new_tokens=16, temperature=2.0, seed=5)
    assert generate_ids(model, prompt, sample).tolist() == generate_ids(model, prompt, sample).tolist()
    other_seed = GenerationOptions(max_new_tokens=16, temperature=2.0, seed=6)
    assert generate_ids(model, prompt, other_seed).tolist() != generate_ids(model, prompt, sample).tolist()
    top1 = GenerationOptions(max_new_tokens=16, temperature=2.0, top_k=1, seed=5)
    greedy = GenerationOptions(max_new_tokens=16)
    assert generate_ids(model, prompt, top1).tolist() == generate_ids(model, prompt, greedy).tolist()


@pytest.mark.parametrize(("options", "field"), [
    (GenerationOptions(max_new_tokens=0), "max_new_tokens"),
    (GenerationOptions(temperature=-1.0), "temperature"),
    (GenerationOptions(top_k=0), "top_k"),
    (GenerationOptions(top_p=1.5), "top_p"),
])
def test_bad_options_name_the_option(options, field):
    with pytest.raises(ConfigError, match=field):
        options.validate()


@pytest.mark.parametrize("prompt", ["", "bad \udcff byte"])
def test_a_prompt_the_tokenizer_cannot_encode_names_the_prompt(prompt):
    with pytest.raises(ConfigError, match="prompt"):
        encode_prompt(TapaLabByteTokenizer(), prompt)


@pytest.mark.parametrize("name", ["RoPE", "TAPA"])
def test_batched_left_padded_generation_equals_one_prompt_at_a_time(name):
    model = wrap_decoder(lab_model(PES[name]))
    short, long = torch.tensor([[5, 6, 7]]), torch.tensor([[8, 9, 10, 11, 12, 13, 14]])
    input_ids = torch.cat([torch.cat([torch.zeros(1, 4, dtype=torch.long), short], 1), long])
    attention_mask = torch.cat([torch.cat([torch.zeros(1, 4), torch.ones(1, 3)], 1), torch.ones(1, 7)]).long()
    with torch.inference_mode():
        batch = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=10, do_sample=False,
                               pad_token_id=0)[:, 7:]
    options = GenerationOptions(max_new_tokens=10)
    assert batch[0].tolist() == generate_ids(model, short, options)[0].tolist()
    assert batch[1].tolist() == generate_ids(model, long, options)[0].tolist()

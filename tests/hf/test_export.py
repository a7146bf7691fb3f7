"""The Hugging Face wrapper: for every PE class discovered in tapa_lab.posenc, the exported model (saved, reopened
through AutoModelForCausalLM) gives the lab model's logits (float32, 1e-5), with and without transformers'
DynamicCache; the PE and its fields round-trip through config.json, learned PE values through the weights."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache

from tapa_lab.hf.export import hf_config, wrap_decoder
from tapa_lab.hf.modeling import TapaLabForCausalLM, document_ids_from_mask
from tapa_lab.hf.spec import build_posenc, posenc_spec
from tapa_lab.model import DecoderConfig, DecoderLM
from tapa_lab.posenc import TAPA, YaRN, pe_classes

VOCAB = 40


def learnable_alpha_tapa() -> TAPA:
    return TAPA(alpha=0.3, theta=0.25, two_pi=False, learnable_alpha=True, backend="torch")


def yarn_with_factors() -> YaRN:
    return YaRN(factor=3.0, original_max_len=24, beta_fast=16.0, beta_slow=2.0, base=500.0, rotary_fraction=0.5,
                backend="torch")


CASES = {name: (lambda cls=cls: cls(backend="torch")) for name, cls in pe_classes().items()}
CASES["TAPA-learnable-alpha"] = learnable_alpha_tapa
CASES["YaRN-factors"] = yarn_with_factors


def lab_model(make, tie_embeddings: bool = True) -> DecoderLM:
    torch.manual_seed(0)
    config = DecoderConfig(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, init_std=0.1,
                           tie_embeddings=tie_embeddings)
    model = DecoderLM(VOCAB, config, make()).eval()
    with torch.no_grad():  # learned PE values away from their initial values
        for name, param in model.named_parameters():
            if "posenc" in name:
                param.add_(0.1 * torch.randn_like(param))
    return model


def tokens(length: int = 20, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(CASES))
def test_exported_model_gives_the_lab_logits(name, tmp_path):
    lab = lab_model(CASES[name])
    wrap_decoder(lab).save_pretrained(tmp_path)
    reopened = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(reopened, TapaLabForCausalLM)
    x = tokens()
    with torch.no_grad():
        expected = lab(x)
        torch.testing.assert_close(reopened(x).logits, expected, rtol=0, atol=1e-5)
        cache = DynamicCache(config=reopened.config)
        prefill = reopened(x[:, :15], cache=cache).logits
        steps = [reopened(x[:, t:t + 1], cache=cache).logits for t in range(15, 20)]
    torch.testing.assert_close(torch.cat([prefill, *steps], dim=1), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", list(CASES))
def test_pe_class_fields_and_learned_values_round_trip(name, tmp_path):
    lab = lab_model(CASES[name])
    pe = lab.blocks[0].attn.posenc
    hf_config(lab).save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert config.posenc == posenc_spec(pe)
    rebuilt = build_posenc(config.posenc)
    assert type(rebuilt) is type(pe)
    assert posenc_spec(rebuilt) == posenc_spec(pe)
    wrap_decoder(lab).save_pretrained(tmp_path)
    reopened = AutoModelForCausalLM.from_pretrained(tmp_path)
    lab_state, hf_state = lab.state_dict(), reopened.model.state_dict()
    for key, value in lab_state.items():
        torch.testing.assert_close(hf_state[key], value, rtol=0, atol=0, msg=key)
    for key, buffer in lab.named_buffers():  # unsaved buffers (e.g. ALiBi's slopes) are recomputed on load
        torch.testing.assert_close(reopened.model.get_buffer(key), buffer, rtol=0, atol=0, msg=key)


def test_untied_embeddings_round_trip(tmp_path):
    lab = lab_model(CASES["RoPE"], tie_embeddings=False)
    wrap_decoder(lab).save_pretrained(tmp_path)
    reopened = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert reopened.model.head.weight.data_ptr() != reopened.model.embed.weight.data_ptr()
    x = tokens()
    with torch.no_grad():
        torch.testing.assert_close(reopened(x).logits, lab(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["RoPE", "TAPA", "ALiBi"])
def test_left_padded_rows_give_the_unpadded_logits(name):
    """Row 0 left-padded by 5 tokens gives, at its real tokens, the logits of the same tokens alone."""
    model = wrap_decoder(lab_model(CASES[name]))
    x = tokens(length=15, batch=2)
    padded = x.clone()
    padded[0, :5] = 0
    mask = torch.ones_like(x)
    mask[0, :5] = 0
    with torch.no_grad():
        batch = model(padded, attention_mask=mask).logits
        alone = model(x[:1, 5:]).logits
        full = model(x[1:]).logits
    torch.testing.assert_close(batch[:1, 5:], alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(batch[1:], full, rtol=0, atol=1e-5)


def test_mask_runs_become_documents():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]])
    assert document_ids_from_mask(mask).tolist() == [[0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 1, 1]]
    assert document_ids_from_mask(torch.ones(2, 3, dtype=torch.long)) is None


def test_position_ids_are_refused():
    model = wrap_decoder(lab_model(CASES["RoPE"]))
    with pytest.raises(ValueError, match="position_ids"):
        model(tokens(), position_ids=torch.arange(20)[None])

"""Text generation from a lab model through ``transformers``' ``generate`` (its KV cache, logits processors, stopping
criteria and streamers), with the options of ``tapa-lab generate``.

Greedy decoding (``temperature = 0``) is deterministic: the argmax after the prompt and after each generated token,
exactly the loop a lab :class:`~tapa_lab.model.KVCache` runs (tests/hf/test_generate.py checks both agree). Sampling
(``temperature > 0``) draws from softmax(logits / temperature) restricted to the ``top_k`` most likely tokens and the
smallest set of probability ``top_p``; ``seed`` makes it reproducible. Generation stops at ``max_new_tokens`` or at
the end-of-document token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase, TextStreamer

from tapa_lab.errors import ConfigError, require
from tapa_lab.hf.modeling import TapaLabForCausalLM


@dataclass
class GenerationOptions:
    """How to continue a prompt."""

    max_new_tokens: int = 64
    """Tokens to generate at most (fewer if the model ends the document)."""
    temperature: float = 0.0
    """0: greedy (deterministic); > 0: sample from softmax(logits / temperature)."""
    top_k: int | None = None
    """When sampling, keep only the k most likely tokens; null keeps all."""
    top_p: float | None = None
    """When sampling, keep the smallest set of tokens with probability >= top_p (nucleus); null keeps all."""
    seed: int = 0
    """Seed of the sampler."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad option."""
        require(self.max_new_tokens >= 1, "max_new_tokens", ">= 1", self.max_new_tokens)
        require(self.temperature >= 0, "temperature", ">= 0 (0: greedy)", self.temperature)
        require(self.top_k is None or self.top_k >= 1, "top_k", "null or >= 1", self.top_k)
        require(self.top_p is None or 0 < self.top_p <= 1, "top_p", "null or in (0, 1]", self.top_p)

    def generate_kwargs(self) -> dict:
        """Keyword arguments of ``model.generate`` for these options."""
        if self.temperature == 0:
            return {"max_new_tokens": self.max_new_tokens, "do_sample": False}
        return {"max_new_tokens": self.max_new_tokens, "do_sample": True, "temperature": self.temperature,
                "top_k": self.top_k or 0, "top_p": 1.0 if self.top_p is None else self.top_p}


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str) -> Tensor:
    """``(1, n)`` token ids of ``prompt``.

    Raises:
        ConfigError: naming ``prompt`` when it is empty or the tokenizer cannot encode it (e.g. not valid UTF-8).
    """
    require(len(prompt) > 0, "prompt", "at least one character", prompt)
    try:
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    except UnicodeEncodeError as error:
        raise ConfigError(f"prompt = {prompt!r} cannot be encoded by the run's tokenizer ({error.reason} at "
                          f"character {error.start}); pass valid UTF-8 text.") from None
    return torch.tensor([ids], dtype=torch.long)


@torch.inference_mode()
def generate_ids(model: TapaLabForCausalLM, input_ids: Tensor, options: GenerationOptions,
                 streamer: TextStreamer | None = None) -> Tensor:
    """The new token ids ``(B, n_new)`` after ``input_ids (B, L)`` (``transformers``' ``generate``, with its
    ``DynamicCache``); ``streamer`` receives the tokens as they are produced."""
    torch.manual_seed(options.seed)
    output = model.generate(input_ids.to(model.device), attention_mask=torch.ones_like(input_ids, device=model.device),
                            streamer=streamer, pad_token_id=model.config.pad_token_id,
                            eos_token_id=model.config.eos_token_id, **options.generate_kwargs())
    return output[:, input_ids.shape[1]:]

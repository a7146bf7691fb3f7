"""``tapa-lab export`` and ``tapa-lab generate``: a run as a Hugging Face folder, and text from a run.

This module imports nothing from ``transformers`` at import time (the entry point imports it for every command);
each command imports :mod:`tapa_lab.hf` when it runs, or says how to install the ``hf`` extra.
"""

from __future__ import annotations

import importlib.util
import sys

from tapa_lab.errors import ConfigError


def _require_transformers() -> None:
    if importlib.util.find_spec("transformers") is None or importlib.util.find_spec("safetensors") is None:
        raise ConfigError("this command needs transformers and safetensors: pip install 'tapa-lab[hf]'.")


def export(run: str, out: str, checkpoint: str = "best") -> None:
    """Write a run as a Hugging Face folder: config.json, model.safetensors, tokenizer files.

    Open it with ``AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)`` and
    ``AutoTokenizer.from_pretrained(out, trust_remote_code=True)`` wherever tapa-lab is installed (or
    ``import tapa_lab.hf.modeling`` first and drop trust_remote_code).

    Args:
        run: the run folder, checkpoints/<name>/version_<n>.
        out: the folder to write (new, empty, or an earlier export).
        checkpoint: best, last or a .ckpt path.
    """
    _require_transformers()
    from tapa_lab.hf.export import export_run

    path = export_run(run, out, checkpoint)
    print(f"tapa-lab export: {run} ({checkpoint}) -> {path}")


def generate(run: str, prompt: str, checkpoint: str = "best", max_new_tokens: int = 64, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, seed: int = 0, device: str = "cpu") -> str:
    """Continue a prompt with a run's model, printing the text as it is produced.

    Greedy by default (temperature 0: deterministic); temperature > 0 samples, optionally restricted by top_k and
    top_p. Decoding uses a KV cache (transformers' generate over the lab's model). Stops at max_new_tokens or at the
    end-of-document token.

    Args:
        run: the run folder, checkpoints/<name>/version_<n>.
        prompt: the text to continue.
        checkpoint: best, last or a .ckpt path.
        max_new_tokens: tokens to generate at most.
        temperature: 0 for greedy decoding; > 0 to sample from softmax(logits / temperature).
        top_k: when sampling, keep only the k most likely tokens (null: all).
        top_p: when sampling, nucleus probability in (0, 1] (null: all).
        seed: seed of the sampler.
        device: where the model runs (cpu, cuda, ...).

    Returns:
        The generated text (without the prompt).
    """
    _require_transformers()
    from transformers import TextStreamer

    from tapa_lab.hf.export import hf_model_from_run
    from tapa_lab.hf.generate import GenerationOptions, encode_prompt, generate_ids

    options = GenerationOptions(max_new_tokens, temperature, top_k, top_p, seed)
    options.validate()
    model, tokenizer = hf_model_from_run(run, checkpoint, device)
    input_ids = encode_prompt(tokenizer, prompt)
    streamer = TextStreamer(tokenizer, skip_prompt=False, skip_special_tokens=True)
    new_ids = generate_ids(model, input_ids, options, streamer)
    sys.stdout.flush()
    text = tokenizer.decode(new_ids[0], skip_special_tokens=True)
    assert isinstance(text, str)  # one sequence decodes to one string
    return text

"""A lab model or run folder as a ``transformers`` model + tokenizer, in memory or written to a folder.

    model, tokenizer = hf_model_from_run("checkpoints/TAPA/version_0", checkpoint="best")
    export_run("checkpoints/TAPA/version_0", "exported/TAPA", checkpoint="best")

The folder holds ``config.json`` (:class:`~tapa_lab.hf.config.TapaLabConfig`, with an ``auto_map`` to the small
``modeling_tapa_lab.py`` written beside it), ``model.safetensors``, the tokenizer files and ``generation_config.json``.
``AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)`` opens it wherever tapa-lab is installed;
after ``import tapa_lab.hf.modeling`` no ``trust_remote_code`` is needed.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from tapa_lab.data.tokenizer import Tokenizer
from tapa_lab.data.tokenizer_bpe import BPETokenizer
from tapa_lab.errors import ConfigError
from tapa_lab.eval.load import load_run
from tapa_lab.hf.config import TapaLabConfig
from tapa_lab.hf.modeling import TapaLabForCausalLM
from tapa_lab.hf.spec import posenc_spec
from tapa_lab.hf.tokenizer import hf_tokenizer
from tapa_lab.model import DecoderLM

REMOTE_CODE_FILE = "modeling_tapa_lab.py"
REMOTE_CODE = '''"""Opens this folder with trust_remote_code=True wherever tapa-lab[hf] is installed."""

from tapa_lab.hf.config import TapaLabConfig
from tapa_lab.hf.modeling import TapaLabForCausalLM
from tapa_lab.hf.tokenizer import TapaLabByteTokenizer

__all__ = ["TapaLabByteTokenizer", "TapaLabConfig", "TapaLabForCausalLM"]
'''


def hf_config(model: DecoderLM, tokenizer: Tokenizer | None = None, train_seq_len: int | None = None
              ) -> TapaLabConfig:
    """The :class:`TapaLabConfig` that rebuilds ``model`` (its shape and PE), with the tokenizer's special ids."""
    return TapaLabConfig(vocab_size=model.embed.num_embeddings, architecture=asdict(model.config),
                         posenc=posenc_spec(model.layers[0].attn.posenc),
                         tokenizer=None if tokenizer is None else tokenizer.config(), train_seq_len=train_seq_len,
                         eos_token_id=None if tokenizer is None else tokenizer.eod_id,
                         pad_token_id=None if tokenizer is None else tokenizer.pad_id)


def wrap_decoder(model: DecoderLM, tokenizer: Tokenizer | None = None, train_seq_len: int | None = None
                 ) -> TapaLabForCausalLM:
    """A :class:`TapaLabForCausalLM` holding a copy of ``model``'s weights, in eval mode, on ``model``'s device."""
    wrapper = TapaLabForCausalLM(hf_config(model, tokenizer, train_seq_len))
    wrapper.model.load_state_dict(model.state_dict(), strict=True)
    device = model.embed.weight.device
    # PreTrainedModel.to is wrapped by functools.wraps, whose typeshed type does not bind self
    return wrapper.to(device=device, dtype=model.embed.weight.dtype).eval()  # type: ignore[call-arg]


def hf_model_from_run(run: str | Path, checkpoint: str = "best", device: str = "cpu"
                      ) -> tuple[TapaLabForCausalLM, PreTrainedTokenizerBase]:
    """A run folder's model (weights from ``checkpoint``: best, last or a path) and tokenizer, as ``transformers``
    objects; float32, eval mode. A BPE run's trained tokenizer is read from its token cache (prepared on demand).

    Raises:
        ConfigError: naming ``run`` or ``checkpoint`` (see :func:`tapa_lab.eval.load.load_run`).
    """
    loaded = load_run(run, checkpoint, device)
    tokenizer = loaded.datamodule.tokenizer
    if isinstance(tokenizer, BPETokenizer):  # trained on the run's data: read it from the run's token cache
        loaded.datamodule.prepare_data()
    model = wrap_decoder(loaded.model.model, tokenizer, loaded.train_seq_len)
    return model, hf_tokenizer(tokenizer)


def export_run(run: str | Path, out: str | Path, checkpoint: str = "best") -> Path:
    """Write a run's model and tokenizer as a ``transformers`` folder; return it.

    Raises:
        ConfigError: naming ``run``/``checkpoint`` (nothing loadable), or ``out`` (an existing file, or a non-empty
            folder that holds no earlier export).
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "config.json").is_file())):
        raise ConfigError(f"out = '{out}': exists and is not an earlier export; choose a new or empty folder.")
    model, tokenizer = hf_model_from_run(run, checkpoint)
    model.config.auto_map = {"AutoConfig": f"{REMOTE_CODE_FILE[:-3]}.TapaLabConfig",
                             "AutoModelForCausalLM": f"{REMOTE_CODE_FILE[:-3]}.TapaLabForCausalLM"}
    model.save_pretrained(out)
    if type(tokenizer).__name__ == "TapaLabByteTokenizer":
        tokenizer.init_kwargs["auto_map"] = {"AutoTokenizer": [f"{REMOTE_CODE_FILE[:-3]}.TapaLabByteTokenizer", None]}
    tokenizer.save_pretrained(out)
    (out / REMOTE_CODE_FILE).write_text(REMOTE_CODE)
    return out

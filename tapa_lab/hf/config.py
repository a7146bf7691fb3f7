"""TapaLabConfig: a ``transformers`` config (model_type ``tapa_lab``) holding everything that rebuilds a DecoderLM.

The decoder's shape (:class:`~tapa_lab.model.DecoderConfig` fields), the PE (``class_path`` + ``init_args``, as in the
YAML configs) and the tokenizer's identity are plain dicts, so ``config.json`` reads like the run's ``config.yaml``.
The standard names other tools read (``hidden_size``, ``num_hidden_layers``, ``num_attention_heads``,
``num_key_value_heads``) are derived from ``architecture``.
"""

from __future__ import annotations

from dataclasses import asdict

from transformers import PreTrainedConfig

from tapa_lab.model import DecoderConfig


class TapaLabConfig(PreTrainedConfig):
    """Configuration of :class:`~tapa_lab.hf.modeling.TapaLabForCausalLM`.

    Attributes:
        vocab_size: number of token ids.
        architecture: the fields of :class:`~tapa_lab.model.DecoderConfig`.
        posenc: ``{"class_path": "tapa_lab.posenc.<Class>", "init_args": {...}}``.
        tokenizer: the lab tokenizer's ``config()`` (``class_path`` + ``init_args``), for the record.
        train_seq_len: the run's training length (``data.seq_len``); ``None`` when unknown.
    """

    model_type = "tapa_lab"

    vocab_size: int = 258
    architecture: dict | None = None
    posenc: dict | None = None
    tokenizer: dict | None = None
    train_seq_len: int | None = None
    tie_word_embeddings: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    use_cache: bool = True

    def __post_init__(self, **kwargs) -> None:
        if self.architecture is None:
            self.architecture = asdict(DecoderConfig())
        if self.posenc is None:
            self.posenc = {"class_path": "tapa_lab.posenc.RoPE", "init_args": {}}
        self.tie_word_embeddings = bool(self.architecture.get("tie_embeddings", True))
        super().__post_init__(**kwargs)

    def decoder_config(self) -> DecoderConfig:
        """The decoder's shape as the lab's dataclass."""
        assert self.architecture is not None  # filled by __post_init__
        return DecoderConfig(**self.architecture)

    @property
    def hidden_size(self) -> int:
        return self.decoder_config().d_model

    @property
    def num_hidden_layers(self) -> int:
        return self.decoder_config().n_layers

    @property
    def num_attention_heads(self) -> int:
        return self.decoder_config().n_heads

    @property
    def num_key_value_heads(self) -> int:
        return self.decoder_config().kv_heads

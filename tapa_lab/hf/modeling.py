"""TapaLabForCausalLM: a lab DecoderLM as a ``transformers`` causal LM (``PreTrainedModel`` + ``GenerationMixin``).

The wrapper adds no maths: ``forward`` calls :class:`~tapa_lab.model.DecoderLM` with ``transformers``' cache
(``DynamicCache`` follows the lab's cache protocol, :mod:`tapa_lab.model.cache`), so ``generate`` with any logits
processor, stopping criterion or streamer runs the lab's model and its kernels as trained.

Positions are the lab's: ``past .. past + L - 1`` for every row (``position_ids`` are not taken).
Padding (``attention_mask`` with zeros): each run of equal mask values becomes its own document (``document_ids``),
so a real token never attends to a pad. With left padding (the ``generate`` convention) the real tokens of a row sit
at positions shifted by its pad count, which changes nothing for every PE that scores by the distance i - j (all of
``tapa_lab.posenc``'s relative PEs; the PE contract suite checks shift invariance), but moves an absolute PE.

Importing this module registers model type ``tapa_lab`` with ``AutoConfig``, ``AutoModelForCausalLM`` and
``AutoTokenizer``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    DynamicCache,
    GenerationMixin,
    PreTrainedModel,
)
from transformers.modeling_outputs import CausalLMOutputWithPast

from tapa_lab.hf.config import TapaLabConfig
from tapa_lab.hf.spec import build_posenc
from tapa_lab.hf.tokenizer import TapaLabByteTokenizer
from tapa_lab.model import DecoderLM
from tapa_lab.posenc.base import PositionalEncoding


def document_ids_from_mask(attention_mask: Tensor) -> Tensor | None:
    """``(B, Lk)`` 0/1 mask -> ``(B, Lk)`` non-decreasing ids, one per run of equal values; ``None`` if all ones."""
    if bool(attention_mask.all()):
        return None
    changes = (attention_mask[:, 1:] != attention_mask[:, :-1]).long()
    return F.pad(changes.cumsum(-1), (1, 0))


class TapaLabForCausalLM(PreTrainedModel, GenerationMixin):
    """A :class:`~tapa_lab.model.DecoderLM` (``self.model``) built from a :class:`TapaLabConfig`.

    Weights keep the lab's names under ``model.`` (``model.embed.weight``, ``model.blocks.0.attn.wq.weight``...),
    learnable PE values included (e.g. ``model.blocks.0.attn.posenc.log_alpha``).
    """

    config_class = TapaLabConfig
    config: TapaLabConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _tied_weights_keys = {"model.head.weight": "model.embed.weight"}
    _no_split_modules = ["Block"]

    def __init__(self, config: TapaLabConfig) -> None:
        super().__init__(config)
        assert config.posenc is not None  # filled by TapaLabConfig.__post_init__
        self.model = DecoderLM(config.vocab_size, config.decoder_config(), build_posenc(config.posenc))
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        """Weights: DecoderLM initialised them (or the checkpoint supplies them). PE buffers that are not saved (e.g.
        ALiBi's slopes) are recomputed here, since ``from_pretrained`` builds the model without data."""
        if not isinstance(module, PositionalEncoding) or not module._non_persistent_buffers_set:
            return
        with torch.device("cpu"):
            assert self.config.posenc is not None
            fresh = build_posenc(self.config.posenc)
            if module is self.model.posenc:  # the model-level copy (absolute PEs' embedding hook)
                fresh.bind_embedding(self.config.hidden_size)
            else:
                fresh.bind(module.n_heads, module.n_kv_heads, module.head_dim)
        for name in module._non_persistent_buffers_set:
            module.get_buffer(name).copy_(fresh.get_buffer(name))

    def get_input_embeddings(self) -> torch.nn.Embedding:
        return self.model.embed

    def set_input_embeddings(self, value: torch.nn.Module) -> None:
        if not isinstance(value, torch.nn.Embedding):  # the decoder reads num_embeddings and weight
            raise TypeError(f"input embeddings must be a torch.nn.Embedding; got {type(value).__name__}.")
        self.model.embed = value

    def get_output_embeddings(self) -> torch.nn.Linear:
        return self.model.head

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, cache: DynamicCache | None = None,
                use_cache: bool | None = None, labels: Tensor | None = None, **kwargs) -> CausalLMOutputWithPast:
        """Next-token logits of ``input_ids (B, L)``, continuing from ``cache`` when given.

        Args:
            input_ids: ``(B, L)`` token ids.
            attention_mask: ``(B, past + L)`` 1 for tokens, 0 for padding (see the module docstring); optional.
            cache: keys and values of the ``past`` earlier tokens (``DynamicCache`` or the lab's ``KVCache``).
            use_cache: return a cache (a new ``DynamicCache`` when none was given); default ``config.use_cache``.
            labels: ``(B, L)`` targets for the loss (shifted inside, -100 ignored), as in ``transformers``.
            kwargs: ``past_key_values`` (the older name of ``cache``); other generation bookkeeping is ignored;
                ``position_ids`` is refused.

        Returns:
            ``CausalLMOutputWithPast`` with ``logits (B, L, V)``, ``cache`` and ``loss`` (when ``labels``).
        """
        if kwargs.get("position_ids") is not None:
            raise ValueError("TapaLabForCausalLM takes no position_ids: positions are past .. past + L - 1.")
        cache = cache if cache is not None else kwargs.get("past_key_values")
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        document_ids = None if attention_mask is None else document_ids_from_mask(attention_mask)
        if document_ids is None:
            logits = self.model(input_ids, cache=cache)
        else:
            logits = self.model(input_ids, cache=cache, document_ids=document_ids)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache if use_cache else None)


AutoConfig.register(TapaLabConfig.model_type, TapaLabConfig, exist_ok=True)
AutoModelForCausalLM.register(TapaLabConfig, TapaLabForCausalLM, exist_ok=True)
AutoTokenizer.register(TapaLabConfig, slow_tokenizer_class=TapaLabByteTokenizer, exist_ok=True)

"""The lab in the Hugging Face ecosystem (optional extra: ``pip install 'tapa-lab[hf]'``).

- :mod:`tapa_lab.hf.config`: ``TapaLabConfig`` (model_type ``tapa_lab``).
- :mod:`tapa_lab.hf.modeling`: ``TapaLabForCausalLM`` (``PreTrainedModel`` + ``GenerationMixin``) around a
  :class:`~tapa_lab.model.DecoderLM`; importing it registers the Auto classes.
- :mod:`tapa_lab.hf.tokenizer`: the byte and BPE tokenizers as ``transformers`` tokenizers.
- :mod:`tapa_lab.hf.export`: a run folder as a model + tokenizer in memory, or written as a Hugging Face folder.
- :mod:`tapa_lab.hf.generate`: text generation through ``transformers``' ``generate``.
- :mod:`tapa_lab.hf.command`: ``tapa-lab export`` and ``tapa-lab generate``.

This package's ``__init__`` imports nothing, so the entry point can import :mod:`tapa_lab.hf.command` without
``transformers``; every other module here imports ``transformers``.
"""

"""The positional-encoding interface every PE implements.

PEs fall into three families (cf. x-transformers): some transform q and k (RoPE and its scaled variants), some add a
distance bias to the scores (ALiBi), and some change the score function itself (TAPA). The attention module never asks
which PE it has: it calls :meth:`PositionalEncoding.attend`, whose default applies :meth:`transform_qk` and
:meth:`score_bias` and calls the fused causal kernel. A PE that changes the score overrides ``attend``.

Positions. ``positions`` is a 1-D LongTensor holding the absolute positions of the keys, shape ``(Lk,)``; they are
consecutive (``positions[t] = start + t``). Queries are the last ``Lq`` of them (``Lq <= Lk``): training has
``Lq == Lk``, chunked evaluation and KV-cache decoding have ``Lq < Lk``. Attention is causal: the query at position
``p`` sees the keys at positions ``<= p``.

Documents. ``attend`` takes optional ``document_ids`` ``(B, Lk)``, the document index of every key (queries: the last
``Lq``); a query then sees only earlier keys of its own document (intra-document masking of packed windows,
``data.document_mask``). ``None`` attends to every earlier key. A PE that overrides ``attend`` passes them on to
:func:`~tapa_lab.kernels.causal_attention` / :func:`~tapa_lab.kernels.tapa_attention`.

Initialisation. After the model initialises its weights it calls :meth:`init_qk_` with each layer's q and k
projection weights, so a PE can rescale the parts of q and k it gives a role to (TAPA's amplitude and phase parts).

Absolute PEs (learned, sinusoidal) add to the token embeddings: the model keeps one model-level copy of its PE, calls
:meth:`bind_embedding` on it with the model width, and passes the embeddings through :meth:`embed` (the identity for
every other PE), so the model never asks which PE it has.

Life cycle. A PE is built from YAML (``class_path`` + ``init_args``) before the model knows it, so the model calls
:meth:`bind` with the head geometry; ``bind`` validates the geometry and creates any buffers or parameters. Each
attention layer owns its own bound copy, so learnable PE parameters (e.g. TAPA's per-head alpha) are per layer.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from tapa_lab.errors import require
from tapa_lab.kernels import BACKENDS, Backend, causal_attention


class PositionalEncoding(nn.Module):
    """Base class of every positional encoding; on its own it adds no position information (NoPE).

    Args:
        backend: attention implementation: ``auto`` (Triton on CUDA, PyTorch elsewhere), ``triton`` or ``torch``.
    """

    translation_invariant: ClassVar[bool] = True
    """Whether the scores depend on positions only through i - j (false for absolute PEs and FIRE)."""

    def __init__(self, backend: Backend = "auto") -> None:
        super().__init__()
        require(backend in BACKENDS, "model.posenc.init_args.backend", f"one of {', '.join(BACKENDS)}", backend)
        self.backend = backend
        self.n_heads = 0
        self.n_kv_heads = 0
        self.head_dim = 0

    def bind(self, n_heads: int, n_kv_heads: int, head_dim: int) -> None:
        """Attach the head geometry of the attention layer that owns this PE; validate it; build buffers.

        Subclasses extend this (call ``super().bind``) to check their constraints and to create state.
        """
        require(n_heads >= 1, "model.architecture.n_heads", ">= 1", n_heads)
        require(n_kv_heads >= 1 and n_heads % n_kv_heads == 0, "model.architecture.n_kv_heads",
                f"a divisor of n_heads={n_heads}", n_kv_heads)
        require(head_dim >= 1, "head dim (model.architecture.d_model / n_heads)", ">= 1", head_dim)
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim

    def bind_embedding(self, d_model: int) -> None:
        """Attach the model width to the model-level copy of this PE; absolute PEs build their table here.

        Nothing by default. Called once by the model, on a copy that is never :meth:`bind`-ed.
        """

    def embed(self, x: Tensor, positions: Tensor) -> Tensor:
        """Add position information to the token embeddings; the identity by default.

        Args:
            x: token embeddings ``(B, L, d_model)``.
            positions: ``(L,)`` absolute positions of the tokens.

        Returns:
            ``(B, L, d_model)``.
        """
        return x

    @property
    def softmax_scale(self) -> float:
        """The factor applied to q.k before the softmax (1/sqrt(D) by default)."""
        return 1.0 / math.sqrt(self.head_dim)

    def transform_qk(self, q: Tensor, k: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        """Rotate or rescale q and k by position. Identity by default.

        Args:
            q: queries, ``(B, H, Lq, D)``.
            k: keys, ``(B, Hkv, Lk, D)``.
            positions: absolute key positions, ``(Lk,)``; queries sit at ``positions[-Lq:]``.

        Returns:
            ``(q, k)`` with the same shapes and dtypes.
        """
        return q, k

    def score_bias(self) -> Tensor | None:
        """Per-head slopes ``m`` of a linear distance bias ``-m_h * (i - j)`` added to the scores, shape ``(H,)``.

        ``None`` (the default) adds nothing.
        """
        return None

    def attend(self, q: Tensor, k: Tensor, v: Tensor, positions: Tensor, document_ids: Tensor | None = None) -> Tensor:
        """Causal attention of q over (k, v) with this PE.

        Args:
            q: ``(B, H, Lq, D)``.
            k: ``(B, Hkv, Lk, D)``, ``H % Hkv == 0`` (grouped-query attention without repeating k/v).
            v: ``(B, Hkv, Lk, D)``.
            positions: absolute key positions, ``(Lk,)``; queries sit at ``positions[-Lq:]``.
            document_ids: ``(B, Lk)`` document index of every key (queries: the last ``Lq``); a query sees only keys
                of its own document. ``None``: no document masking.

        Returns:
            ``(B, H, Lq, D)``.
        """
        q, k = self.transform_qk(q, k, positions)
        return causal_attention(q, k, v, scale=self.softmax_scale, alibi_slopes=self.score_bias(),
                                backend=self.backend, document_ids=document_ids)

    def on_train_step(self, step: int) -> dict[str, float]:
        """Called by the LightningModule before each training step (``step`` = optimizer steps done); a PE with a
        schedule updates its state here. Returns scalars to log under ``posenc/<name>``; none by default."""
        return {}

    def qk_parts(self) -> tuple[tuple[str, int], ...] | None:
        """Named parts of each head's D dims of q and k that get their own parameters in the q and k projections
        (``attn.wq.<name>``, ``attn.wk.<name>``), so an optimizer group can match them; ``None`` (the default): one
        ``weight`` each. Called after :meth:`bind`.

        Returns:
            ``((name, dims), ...)`` in the order the dims appear in a head, summing to D; or ``None``.
        """
        return None

    def init_qk_(self, wq: Tensor, wk: Tensor) -> None:
        """Adjust the freshly initialised q and k projection weights in place; nothing by default.

        Called by :meth:`DecoderLM.reset_parameters <tapa_lab.model.DecoderLM.reset_parameters>` (under
        ``torch.no_grad``) after the normal init of every matrix.

        Args:
            wq: ``(H * D, d_model)``; rows ``h * D .. h * D + D - 1`` make head ``h``'s query.
            wk: ``(Hkv * D, d_model)``, laid out the same way.
        """

    def pair_scores(self, q: Tensor, k: Tensor, query: Tensor, key: Tensor) -> Tensor:
        """Pre-softmax scores of chosen (query, key) position pairs in float64, for analysis (not for training).

        Args:
            q: ``(H, L, D)`` queries before the PE, positions ``0 .. L-1``.
            k: ``(H, L, D)`` keys before the PE (grouped key heads already repeated to H).
            query, key: ``(n,)`` positions of the pairs, ``key <= query``.

        Returns:
            ``(H, n)`` scores, exactly those :meth:`attend` feeds to the softmax.
        """
        if type(self).attend is not PositionalEncoding.attend:
            raise NotImplementedError(f"{type(self).__name__} overrides attend, so it must override pair_scores too.")
        q_pos, k_pos = self.transform_qk(q[None], k[None], torch.arange(q.shape[1], device=q.device))
        scores = (q_pos[0][:, query].double() * k_pos[0][:, key].double()).sum(-1) * self.softmax_scale
        slopes = self.score_bias()
        if slopes is not None:
            scores = scores - slopes.double()[:, None] * (query - key).double()[None, :]
        return scores

    def extra_repr(self) -> str:
        return f"backend={self.backend}"

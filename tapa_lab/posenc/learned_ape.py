"""Learned absolute position embeddings (Gehring et al. 2017, "Convolutional Sequence to Sequence Learning",
arXiv 1705.03122; as in GPT-2, Radford et al. 2019): a trained vector per position added to the token embeddings.

    x_t = E[token_t] + P[t],   P in R^(max_len x d_model), P ~ N(0, 0.02^2)

Attention itself is plain causal attention (no position information there). Positions from ``max_len`` on have no
embedding: the model raises a :class:`~tapa_lab.errors.ConfigError` naming ``model.posenc.init_args.max_len`` (raise it
to evaluate longer; rows past the training length stay at their random initialisation, the classic reason learned APE
does not extrapolate).
"""

from __future__ import annotations

from torch import Tensor, nn

from tapa_lab.errors import require
from tapa_lab.kernels import Backend
from tapa_lab.posenc.base import PositionalEncoding


class LearnedAPE(PositionalEncoding):
    """Learned absolute position embeddings, added once to the token embeddings.

    Args:
        max_len: number of positions with an embedding (positions ``0 .. max_len - 1``); >= 1. Evaluations past the
            training length need it at least as large as the longest evaluated position.
        init_std: standard deviation of the embeddings' normal initialisation; > 0 (GPT-2: 0.01, the lab's 0.02).
        backend: attention implementation: ``auto`` (Triton on CUDA, PyTorch elsewhere), ``triton`` or ``torch``.
    """

    translation_invariant = False

    def __init__(self, max_len: int = 2048, init_std: float = 0.02, backend: Backend = "auto") -> None:
        super().__init__(backend)
        require(max_len >= 1, "model.posenc.init_args.max_len", ">= 1", max_len)
        require(init_std > 0, "model.posenc.init_args.init_std", "> 0", init_std)
        self.max_len = max_len
        self.init_std = init_std

    def bind_embedding(self, d_model: int) -> None:
        self.position_embed = nn.Embedding(self.max_len, d_model)
        nn.init.normal_(self.position_embed.weight, std=self.init_std)

    def embed(self, x: Tensor, positions: Tensor) -> Tensor:
        last = int(positions[-1])
        require(last < self.max_len, "model.posenc.init_args.max_len",
                f"> {last}, the last position of this input (LearnedAPE has no embedding past max_len - 1)",
                self.max_len)
        return x + self.position_embed(positions).to(x.dtype)[None]

    def extra_repr(self) -> str:
        return f"max_len={self.max_len}, {super().extra_repr()}"

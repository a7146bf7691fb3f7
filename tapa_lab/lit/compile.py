"""``model.compile``: ``torch.compile`` of the decoder.

The lab's attention kernels (Triton and the blockwise PyTorch paths) and RoPE's fused rotation are ``torch.library``
custom ops with fake implementations and registered autograd (``tapa_lab::*``, see :mod:`tapa_lab.kernels`), so
Dynamo captures a whole decoder forward in one graph (``fullgraph: true`` checks it) and AOTAutograd differentiates it
through the kernels' own backward, learnable PE parameters (TAPA's alpha, ALiBi's slopes) included. The module is
compiled in place (:meth:`torch.nn.Module.compile`), so parameter names and checkpoints are those of the eager model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from torch import nn

from tapa_lab.errors import require

CompileBackend = Literal["inductor", "aot_eager", "eager"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


@dataclass
class CompileConfig:
    """``torch.compile`` of the decoder (off by default)."""

    enabled: bool = False
    """Compile the decoder's forward (and, through AOTAutograd, its backward)."""
    backend: CompileBackend = "inductor"
    """``inductor`` (fused kernels; needs a C++ compiler on CPU), or ``aot_eager`` / ``eager`` (capture only: no
    speed-up, for checking that the model compiles)."""
    mode: CompileMode | None = None
    """Inductor mode; null is ``default``."""
    fullgraph: bool = False
    """Fail on any graph break instead of running the break in eager mode."""
    dynamic: bool | None = None
    """Dynamic shapes: null lets Dynamo mark a dimension dynamic when it first changes (e.g. evaluation lengths)."""

    def validate(self) -> None:
        """Raise :class:`~tapa_lab.errors.ConfigError` naming the first field out of range."""
        backends, modes = get_args(CompileBackend), get_args(CompileMode)
        require(self.backend in backends, "model.compile.backend", f"one of {', '.join(backends)}", self.backend)
        require(self.mode is None or self.mode in modes, "model.compile.mode", f"null or one of {', '.join(modes)}",
                self.mode)


def compile_module(module: nn.Module, config: CompileConfig) -> None:
    """Compile ``module`` in place as ``config`` says (nothing when it is not ``enabled``)."""
    config.validate()
    if config.enabled:
        module.compile(backend=config.backend, mode=config.mode, fullgraph=config.fullgraph, dynamic=config.dynamic)

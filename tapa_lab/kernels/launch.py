"""What every kernel launcher shares, with no Triton import: the backend type, the dtypes and head dims the kernels
take, the interpreter check and its one message, and the device context of a launch.

Every other module of ``kernels/`` may import this one; it imports nothing from the lab, so the package's import graph
stays acyclic (``launch`` <- ``autotune`` <- ``triton_*`` <- ``dispatch``).
"""

from __future__ import annotations

import contextlib
import os
from typing import Literal, get_args

import torch
from torch import Tensor

Backend = Literal["auto", "triton", "torch"]
"""Attention implementation: ``auto`` (Triton on CUDA, PyTorch elsewhere), ``triton`` or ``torch``."""
BACKENDS: tuple[str, ...] = get_args(Backend)

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 256


def interpreter_enabled() -> bool:
    """Whether ``TRITON_INTERPRET`` asks for Triton's interpreter (``triton.jit`` reads it when defining a kernel)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on")


def check_launch_device(x: Tensor, interpreted: bool) -> None:
    """Raise ``RuntimeError`` unless Triton kernels can run on ``x``'s device: CUDA, or CPU under the interpreter.

    Args:
        x: an input of the launch.
        interpreted: whether the kernels run in Triton's interpreter (the environment when dispatching, the value
            frozen when the kernels were defined when launching).
    """
    if x.device.type == "cpu" and not interpreted:
        raise RuntimeError(f"Triton got tensors on {x.device}: Triton runs on CPU only through its interpreter; set "
                           "TRITON_INTERPRET=1 in the environment before triton is first imported, or use "
                           "backend='torch' (or 'auto').")
    if x.device.type not in ("cpu", "cuda"):
        raise RuntimeError(f"the Triton kernels run on CUDA (or CPU under the interpreter), not {x.device}.")


def on_device(x: Tensor) -> contextlib.AbstractContextManager:
    """Make ``x``'s CUDA device current while launching (Triton launches on the current device)."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def block_dim(dim: int) -> int:
    """Head dimension padded for ``tl.dot``: a power of two, at least 16."""
    return max(16, 1 << (dim - 1).bit_length())

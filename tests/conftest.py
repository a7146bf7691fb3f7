"""Suite-wide setup: without CUDA, Triton kernels run through Triton's interpreter.

``triton.jit`` reads ``TRITON_INTERPRET`` when a kernel module is first imported, so it is set here, before any test
module is collected (the kernels import triton lazily, but a suite-wide setting keeps the order irrelevant).
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

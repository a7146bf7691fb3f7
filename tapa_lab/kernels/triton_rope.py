"""Fused RoPE rotation in Triton (Su et al. 2021, "RoFormer", arXiv 2104.09864), with its autograd.

Each pair of dimensions ``(d, d + R/2)`` (GPT-NeoX/Llama layout) of a ``(B, H, L, D)`` tensor turns by the angle of its
position and frequency: ``(x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)``; dimensions ``>= R`` pass through
(partial rotary). An optional ``scale`` multiplies every output dimension (YaRN's attention factor), folded into the
same pass. One program rotates BLOCK_L positions of one (batch, head): it reads x at any strides (views of a fused
projection are read in place), rotates in fp32 and writes a contiguous output in x's dtype.

The rotation is orthogonal, so its backward is the conjugate rotation (``sin -> -sin``) of the gradient, times the
same scale; the kernel's CONJUGATE flag computes it. The launch is the ``torch.library`` custom op
``tapa_lab::triton_rope`` (opaque to ``torch.compile``), whose registered autograd calls the op itself, so it is
differentiable again.

Angles: the launcher takes cos/sin tables ``(L, R/2)`` (float64 from :meth:`tapa_lab.posenc.rope.RoPE.cos_sin`, whose
angles are exact even at long positions) and rounds them once to fp32, the same tables the PyTorch path
(:func:`tapa_lab.kernels.rope_torch.rotate`) multiplies by; the kernel does not evaluate cos/sin itself.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from tapa_lab.kernels.autotune import INTERPRETED
from tapa_lab.kernels.launch import SUPPORTED_DTYPES, check_launch_device, on_device

#: Elements of a (BLOCK_L, BLOCK_HALF) tile a program aims at; BLOCK_L is at most MAX_BLOCK_L positions.
TILE_ELEMENTS = 2048
MAX_BLOCK_L = 64


@triton.jit
def _rope_fwd(X, COS, SIN, OUT,
              stride_x_b, stride_x_h, stride_x_l, stride_x_d,
              stride_cs_l, stride_cs_d,
              stride_o_b, stride_o_h, stride_o_l, stride_o_d,
              scale, H, L, HALF, D,
              CONJUGATE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_HALF: tl.constexpr, BLOCK_PASS: tl.constexpr):
    """Grid ``(cdiv(L, BLOCK_L), B*H)``. Writes OUT ``(B, H, L, D)`` = scale * rotation of X ``(B, H, L, D)``.

    COS and SIN are fp32 ``(L, HALF)`` with the same strides; CONJUGATE rotates by the opposite angles. BLOCK_PASS
    covers the pass-through dims ``[2 HALF, D)`` (0 when there are none).
    """
    start_l = tl.program_id(0) * BLOCK_L
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    offs_l = (start_l + tl.arange(0, BLOCK_L)).to(tl.int64)
    offs_half = tl.arange(0, BLOCK_HALF)
    row_ok = offs_l < L
    pair_ok = row_ok[:, None] & (offs_half[None, :] < HALF)
    X += b * stride_x_b + h * stride_x_h + offs_l[:, None] * stride_x_l  # (BLOCK_L, 1) row pointers
    OUT += b * stride_o_b + h * stride_o_h + offs_l[:, None] * stride_o_l

    table = offs_l[:, None] * stride_cs_l + offs_half[None, :] * stride_cs_d
    cos = tl.load(COS + table, mask=pair_ok, other=0.0)
    sin = tl.load(SIN + table, mask=pair_ok, other=0.0)
    if CONJUGATE:
        sin = -sin
    x1 = tl.load(X + offs_half[None, :] * stride_x_d, mask=pair_ok, other=0.0).to(tl.float32)
    x2 = tl.load(X + (offs_half[None, :] + HALF) * stride_x_d, mask=pair_ok, other=0.0).to(tl.float32)
    out1 = (x1 * cos - x2 * sin) * scale
    out2 = (x2 * cos + x1 * sin) * scale
    tl.store(OUT + offs_half[None, :] * stride_o_d, out1.to(OUT.dtype.element_ty), mask=pair_ok)
    tl.store(OUT + (offs_half[None, :] + HALF) * stride_o_d, out2.to(OUT.dtype.element_ty), mask=pair_ok)
    if BLOCK_PASS > 0:
        offs_pass = 2 * HALF + tl.arange(0, BLOCK_PASS)
        pass_ok = row_ok[:, None] & (offs_pass[None, :] < D)
        rest = tl.load(X + offs_pass[None, :] * stride_x_d, mask=pass_ok, other=0.0).to(tl.float32)
        tl.store(OUT + offs_pass[None, :] * stride_o_d, (rest * scale).to(OUT.dtype.element_ty), mask=pass_ok)


def _check_inputs(x: Tensor, cos: Tensor, sin: Tensor) -> None:
    """Raise ``ValueError`` (or ``RuntimeError`` for a device the kernel cannot run on) naming what is wrong."""
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D (batch, heads, length, head_dim); got shape {tuple(x.shape)}.")
    if x.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"x has dtype {x.dtype}: the Triton rotation supports "
                         f"{', '.join(str(d) for d in SUPPORTED_DTYPES)}.")
    for name, table in (("cos", cos), ("sin", sin)):
        if table.dim() != 2 or table.shape != cos.shape:
            raise ValueError(f"{name} must be 2-D (length, rotary_dim / 2) like cos; got {tuple(table.shape)} "
                             f"(cos is {tuple(cos.shape)}).")
        if not table.is_floating_point():
            raise ValueError(f"{name} has dtype {table.dtype}: the tables must be floating point.")
        if table.device != x.device:
            raise ValueError(f"{name} is on {table.device} but x is on {x.device}: they must share a device.")
        if table.requires_grad:
            raise ValueError(f"{name} requires grad: the Triton rotation gives no gradient to the cos/sin tables.")
    length, head_dim = x.shape[2], x.shape[3]
    rows, half = cos.shape
    if rows != length:
        raise ValueError(f"cos/sin have {rows} rows but x has {length} positions: pass the rows of x's positions "
                         "(cos[-Lq:] for queries at the last Lq positions).")
    if not 1 <= half <= head_dim // 2:
        raise ValueError(f"cos/sin have {half} columns: the rotary dims (2 x {half}) must be 2 .. head_dim "
                         f"({head_dim}).")
    check_launch_device(x, INTERPRETED)


@torch.library.custom_op("tapa_lab::triton_rope", mutates_args=())
def _rope(x: Tensor, cos: Tensor, sin: Tensor, scale: float, conjugate: bool) -> Tensor:
    """scale * rotation of x (by the opposite angles if ``conjugate``) as a custom op (opaque to ``torch.compile``);
    cos/sin are fp32 ``(L, R/2)`` with equal strides and get no gradient. Returns a contiguous tensor like x."""
    batch, n_heads, length, head_dim = x.shape
    half = cos.shape[1]
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    block_half = triton.next_power_of_2(half)
    block_l = min(MAX_BLOCK_L, max(1, TILE_ELEMENTS // block_half))
    n_pass = head_dim - 2 * half
    with on_device(x):
        _rope_fwd[(triton.cdiv(length, block_l), batch * n_heads)](
            x, cos, sin, out, *x.stride(), *cos.stride(), *out.stride(),
            scale, n_heads, length, half, head_dim,
            CONJUGATE=conjugate, BLOCK_L=block_l, BLOCK_HALF=block_half,
            BLOCK_PASS=triton.next_power_of_2(n_pass) if n_pass else 0)
    return out


@_rope.register_fake
def _rope_fake(x: Tensor, cos: Tensor, sin: Tensor, scale: float, conjugate: bool) -> Tensor:
    return x.new_empty(x.shape)


def _setup_context(ctx, inputs: tuple, output: Tensor) -> None:
    x, cos, sin, scale, conjugate = inputs
    ctx.save_for_backward(cos, sin)
    ctx.scale, ctx.conjugate = scale, conjugate


def _backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
    cos, sin = ctx.saved_tensors
    # (s R)^T = s R^T, and R^T is the rotation by the opposite angles.
    return _rope(grad_out, cos, sin, ctx.scale, not ctx.conjugate), None, None, None, None


_rope.register_autograd(_backward, setup_context=_setup_context)


def rope_rotate_triton(x: Tensor, cos: Tensor, sin: Tensor, *, scale: float = 1.0,
                       conjugate: bool = False) -> Tensor:
    """RoPE's rotation on the Triton kernel; arguments as :func:`tapa_lab.kernels.rope_rotate`.

    Args:
        x: ``(B, H, L, D)``, fp16, bf16 or fp32, any strides.
        cos, sin: ``(L, R/2)``, float32 or float64 (rounded to fp32 here), ``2 <= R <= D``; no gradient.
        scale: factor of the whole output (YaRN's attention factor).
        conjugate: rotate by the opposite angles (the inverse rotation when ``scale`` is 1).

    Returns:
        ``(B, H, L, D)``, contiguous, in x's dtype; differentiable in x.
    """
    _check_inputs(x, cos, sin)
    cos, sin = cos.to(torch.float32).contiguous(), sin.to(torch.float32).contiguous()
    return _rope(x, cos, sin, float(scale), conjugate)

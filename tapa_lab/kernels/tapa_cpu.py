"""TAPA attention on CPU through the fused C++ kernel (``cpu/tapa_cpu.cpp``): the default CPU path of
:func:`tapa_lab.kernels.tapa_attention`.

Same maths as the blockwise PyTorch path (:mod:`tapa_lab.kernels.tapa_torch`), in fp32: score(i, j) = A cos x with
A = amp_scale qA_i . kA_j and x = phase_scale (qP_i . kP_j) |i-j|^alpha, causal, then softmax and V; the backward
recomputes each tile from the inputs and the saved logsumexp (TAPA.md section 3). Where the blockwise path runs about
25 PyTorch ops over each (chunk x keys) tile, the kernel keeps a (``block_q`` x ``block_k``) tile in cache and runs its
cos, sin, exp and masking in one vectorised pass, so TAPA trains at about the speed of SDPA on CPU
(docs/benchmarks.md). It covers the default TAPA configuration: a scalar alpha and no document masking; per-head
(learnable) alpha and ``document_ids`` take the blockwise path (:func:`fused_cpu_applies`).

Forward and backward are the custom ops ``tapa_lab::tapa_cpu`` and ``..._backward`` (the second registered as the
autograd of the first; opaque to ``torch.compile``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tapa_lab.kernels.cpu_build import cpu_kernel
from tapa_lab.kernels.tapa_torch import distance_tables

#: Query rows and keys of one tile: 128 x 256 fp32 values (128 KiB) per buffer, four buffers per thread, fastest of the
#: sizes measured at L = 512 ... 2048 on the 2-core VM (docs/benchmarks.md).
BLOCK_Q, BLOCK_K = 128, 256


def fused_cpu_applies(q_amp: Tensor, alpha: float | Tensor, document_ids: Tensor | None) -> bool:
    """Whether the fused CPU kernel runs this call: CPU tensors in fp32/fp16/bf16, a scalar alpha, no document
    masking, and a kernel that could be built (:func:`tapa_lab.kernels.cpu_build.cpu_kernel`)."""
    return (q_amp.device.type == "cpu" and q_amp.dtype in (torch.float32, torch.float16, torch.bfloat16)
            and not isinstance(alpha, Tensor) and document_ids is None and cpu_kernel() is not None)


def _reversed_pow_table(alpha: float, lk: int) -> Tensor:
    """``|t|^alpha`` for t = lk-1 .. 0 (0 at t = 0): reversed, so a row's keys read it at increasing addresses."""
    table, _ = distance_tables(alpha, lk, torch.float32, torch.device("cpu"))
    return table.flip(0).contiguous()


def _fp32(x: Tensor, scale: float = 1.0) -> Tensor:
    """``x`` times ``scale`` as a contiguous fp32 tensor outside autograd (a fresh one when scaled)."""
    x = x.detach().to(torch.float32)
    return (x * scale if scale != 1.0 else x).contiguous()


@torch.library.custom_op("tapa_lab::tapa_cpu", mutates_args=())
def _tapa_cpu(q_amp: Tensor, k_amp: Tensor, q_phase: Tensor, k_phase: Tensor, v: Tensor, alpha: float,
              amp_scale: float, phase_scale: float, block_q: int, block_k: int) -> tuple[Tensor, Tensor]:
    """The fused forward (autograd: :func:`_tapa_cpu_backward`).

    Returns:
        ``(out, lse)``: ``(B, H, Lq, Dv)`` and the natural-log logsumexp ``(B, H, Lq)``, fp32.
    """
    kernel = cpu_kernel()
    assert kernel is not None, "dispatch checks fused_cpu_applies first"
    out, lse = kernel.forward(_fp32(q_amp, amp_scale), _fp32(k_amp), _fp32(q_phase, phase_scale), _fp32(k_phase),
                              _fp32(v), _reversed_pow_table(alpha, k_amp.shape[2]), block_q, block_k)
    return out, lse


@_tapa_cpu.register_fake
def _tapa_cpu_fake(q_amp: Tensor, k_amp: Tensor, q_phase: Tensor, k_phase: Tensor, v: Tensor, alpha: float,
                   amp_scale: float, phase_scale: float, block_q: int, block_k: int) -> tuple[Tensor, Tensor]:
    batch, n_heads, lq, _ = q_amp.shape
    return (q_amp.new_empty(batch, n_heads, lq, v.shape[-1], dtype=torch.float32),
            q_amp.new_empty(batch, n_heads, lq, dtype=torch.float32))


@torch.library.custom_op("tapa_lab::tapa_cpu_backward", mutates_args=())
def _tapa_cpu_backward(grad_out: Tensor, q_amp: Tensor, k_amp: Tensor, q_phase: Tensor, k_phase: Tensor, v: Tensor,
                       out: Tensor, lse: Tensor, alpha: float, amp_scale: float, phase_scale: float, block_q: int,
                       block_k: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The fused backward; ``out`` and ``lse`` as :func:`_tapa_cpu` returned them.

    Returns:
        ``(dq_amp, dk_amp, dq_phase, dk_phase, dv)`` shaped and typed like the inputs.
    """
    kernel = cpu_kernel()
    assert kernel is not None, "the forward ran the kernel"
    grad_o = _fp32(grad_out)
    delta = (grad_o * out).sum(-1)  # rowsum(dO O): (B, H, Lq)
    dqa, dka, dqp, dkp, dv = kernel.backward(grad_o, _fp32(q_amp, amp_scale), _fp32(k_amp),
                                             _fp32(q_phase, phase_scale), _fp32(k_phase), _fp32(v),
                                             _reversed_pow_table(alpha, k_amp.shape[2]), lse, delta, block_q, block_k)
    # The kernel differentiates with respect to the scaled queries: chain through the scales.
    return ((dqa * amp_scale).to(q_amp.dtype), dka.to(k_amp.dtype), (dqp * phase_scale).to(q_phase.dtype),
            dkp.to(k_phase.dtype), dv.to(v.dtype))


@_tapa_cpu_backward.register_fake
def _tapa_cpu_backward_fake(grad_out: Tensor, q_amp: Tensor, k_amp: Tensor, q_phase: Tensor, k_phase: Tensor,
                            v: Tensor, out: Tensor, lse: Tensor, alpha: float, amp_scale: float, phase_scale: float,
                            block_q: int, block_k: int) -> tuple[Tensor, ...]:
    return tuple(x.new_empty(x.shape) for x in (q_amp, k_amp, q_phase, k_phase, v))


def _setup_context(ctx, inputs: tuple, output: tuple[Tensor, Tensor]) -> None:
    q_amp, k_amp, q_phase, k_phase, v, alpha, amp_scale, phase_scale, block_q, block_k = inputs
    ctx.save_for_backward(q_amp, k_amp, q_phase, k_phase, v, *output)
    ctx.params = alpha, amp_scale, phase_scale, block_q, block_k


def _backward(ctx, grad_out: Tensor, grad_lse: Tensor) -> tuple[Tensor | None, ...]:
    q_amp, k_amp, q_phase, k_phase, v, out, lse = ctx.saved_tensors
    grads = _tapa_cpu_backward(grad_out, q_amp, k_amp, q_phase, k_phase, v, out, lse, *ctx.params)
    return (*grads, None, None, None, None, None)


_tapa_cpu.register_autograd(_backward, setup_context=_setup_context)


def tapa_attention_cpu(q_amp: Tensor, k_amp: Tensor, q_phase: Tensor, k_phase: Tensor, v: Tensor, *, alpha: float,
                       amp_scale: float, phase_scale: float, block_q: int = BLOCK_Q,
                       block_k: int = BLOCK_K) -> Tensor:
    """TAPA attention through the fused CPU kernel; check :func:`fused_cpu_applies` first.

    Args:
        q_amp: ``(B, H, Lq, Da)``; k_amp: ``(B, Hkv, Lk, Da)``, ``H % Hkv == 0``; queries sit at the last ``Lq`` keys.
        q_phase: ``(B, H, Lq, Dp)``; k_phase: ``(B, Hkv, Lk, Dp)``.
        v: ``(B, Hkv, Lk, Dv)``.
        alpha: distance exponent.
        amp_scale: factor of the amplitude dot product (1/sqrt(Da)).
        phase_scale: factor of the phase dot product, 2 pi included (2 pi / sqrt(Dp)).
        block_q, block_k: query rows and keys of a tile (speed only; tests make them small to cross tile edges).

    Returns:
        ``(B, H, Lq, Dv)`` in the dtype of ``v``.
    """
    out, _ = _tapa_cpu(q_amp, k_amp, q_phase, k_phase, v, float(alpha), amp_scale, phase_scale, block_q, block_k)
    return out.to(v.dtype)

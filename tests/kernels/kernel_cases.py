"""Test cases and the accuracy rule shared by the kernel tests.

Accuracy rule (Triton's fused-attention tests, flash-attention): for the output and every gradient,
    max |kernel - fp64 reference| <= 2 max |materialised reference in the kernel's dtype - fp64 reference| + margin,
with a small per-dtype margin scaled by the magnitude of the reference (3x instead of 2x for the per-head gradient,
a reduction over the whole sequence: see REDUCTION_FACTOR). All three see the same inputs (rounded to the
kernel's dtype), so the rule measures the arithmetic, not the rounding of the inputs: at alpha = 1 the phase is
chaotic enough that fp16 rounding of q alone moves the output by ~0.1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from tapa_lab.kernels.reference import causal_attention_reference, tapa_attention_reference

MARGIN = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
#: The per-head gradient (alpha, ALiBi slope) is one sum over B x Lq x Lk terms: the kernel reduces it tile by tile,
#: the materialised reference in one pass, so their rounding errors have the same size but no fixed order (Triton 3.9's
#: interpreter gives 2.05x at L = 37..129, alpha = 0.5, fp32). Reductions get 3x instead of 2x.
REDUCTION_FACTOR = 3


@dataclass(frozen=True)
class AttentionCase:
    """One shape/dtype/layout combination.

    ``layout``: ``contiguous`` leaves, or ``views``: q/k/v are slices of ``(B, L, H, D)`` tensors transposed to
    ``(B, H, L, D)`` (non-contiguous, as a model's fused projection gives them). ``phase`` (TAPA): ``quadratic``;
    ``linear`` (Dp = 2 constructed vectors, paper eq. 16); ``static`` (Dp = 1, an expanded per-head scalar).
    ``head_param``: ``none``, ``fixed`` (a float alpha, constant ALiBi slopes) or ``learnable`` (gets a gradient).
    """

    lq: int
    lk: int
    head_dim: int = 16
    heads: int = 2
    kv_heads: int = 1
    batch: int = 1
    theta: float = 0.5
    alpha: float = 0.5
    head_param: str = "fixed"
    dtype: torch.dtype = torch.float32
    layout: str = "contiguous"
    phase: str = "quadratic"

    def __str__(self) -> str:
        dtype = str(self.dtype).removeprefix("torch.")
        return (f"L{self.lq}-{self.lk}_D{self.head_dim}_H{self.heads}-{self.kv_heads}_th{self.theta}_a{self.alpha}_"
                f"{self.head_param}_{dtype}_{self.layout}_{self.phase}")

    @property
    def amp_dim(self) -> int:
        return round(self.theta * self.head_dim)


def make_leaves(case: AttentionCase, seed: int = 0) -> dict[str, Tensor]:
    """The random fp64 leaf tensors of a case (q, k, v; plus the learnable per-head parameter)."""
    gen = torch.Generator().manual_seed(seed)
    q_shape = (case.batch, case.lq, case.heads, case.head_dim)
    kv_shape = (case.batch, case.lk, case.kv_heads, case.head_dim)
    if case.layout == "contiguous":
        q_shape, kv_shape = (q_shape[0], q_shape[2], q_shape[1], q_shape[3]), (kv_shape[0], kv_shape[2],
                                                                                kv_shape[1], kv_shape[3])
    leaves = {name: torch.randn(shape, generator=gen, dtype=torch.float64)
              for name, shape in (("q", q_shape), ("k", kv_shape), ("v", kv_shape))}
    leaves["head_param"] = case.alpha * (0.5 + torch.rand(case.heads, generator=gen, dtype=torch.float64))
    leaves["static_phase"] = 0.5 + torch.rand(case.heads, generator=gen, dtype=torch.float64)
    return leaves


def cast_leaves(leaves: dict[str, Tensor], dtype: torch.dtype, device: torch.device | str) -> dict[str, Tensor]:
    """Copies of the leaves in ``dtype`` on ``device``, requiring grad (per-head parameters stay fp32 at least)."""
    out = {}
    for name, x in leaves.items():
        x_dtype = torch.promote_types(dtype, torch.float32) if name in ("head_param", "static_phase") else dtype
        out[name] = x.to(device=device, dtype=x_dtype).requires_grad_()
    return out


def _heads_first(case: AttentionCase, x: Tensor) -> Tensor:
    return x if case.layout == "contiguous" else x.transpose(1, 2)


def tapa_operands(case: AttentionCase, leaves: dict[str, Tensor]) -> tuple[tuple[Tensor, ...], float | Tensor, float]:
    """``((q_amp, k_amp, q_phase, k_phase, v), alpha, phase_scale)`` from the leaves, as the TAPA PEs build them."""
    q, k, v = (_heads_first(case, leaves[n]) for n in ("q", "k", "v"))
    da = case.amp_dim
    q_amp, k_amp, q_phase, k_phase = q[..., :da], k[..., :da], q[..., da:], k[..., da:]
    phase_scale = 1.0 / math.sqrt(case.head_dim - da)
    if case.phase == "linear":
        q_sum, k_sum = q_phase.sum(-1, keepdim=True), k_phase.sum(-1, keepdim=True)
        q_phase = torch.cat([q_sum, torch.ones_like(q_sum)], dim=-1)
        k_phase = torch.cat([torch.ones_like(k_sum), k_sum], dim=-1)
    elif case.phase == "static":
        q_phase = leaves["static_phase"].to(q.dtype).view(1, -1, 1, 1).expand(case.batch, -1, case.lq, 1)
        k_phase = torch.ones_like(k[..., :1])
        phase_scale = 1.0
    alpha = leaves["head_param"] if case.head_param == "learnable" else case.alpha
    return (q_amp, k_amp, q_phase, k_phase, v), alpha, phase_scale


def causal_operands(case: AttentionCase, leaves: dict[str, Tensor]) -> tuple[tuple[Tensor, ...], Tensor | None]:
    """``((q, k, v), alibi_slopes)`` built from the leaves (slopes ``None`` for plain causal attention)."""
    q, k, v = (_heads_first(case, leaves[n]) for n in ("q", "k", "v"))
    slopes = None
    if case.head_param != "none":
        slopes = leaves["head_param"] if case.head_param == "learnable" else leaves["head_param"].detach()
    return (q, k, v), slopes


Attention = Callable[[AttentionCase, dict[str, Tensor]], Tensor]


def tapa_reference(case: AttentionCase, leaves: dict[str, Tensor]) -> Tensor:
    operands, alpha, phase_scale = tapa_operands(case, leaves)
    return tapa_attention_reference(*operands, alpha, 1.0 / math.sqrt(case.amp_dim), phase_scale)


def causal_reference(case: AttentionCase, leaves: dict[str, Tensor]) -> Tensor:
    (q, k, v), slopes = causal_operands(case, leaves)
    return causal_attention_reference(q, k, v, 1.0 / math.sqrt(case.head_dim), slopes)


def _output_and_grads(attention: Attention, case: AttentionCase, leaves: dict[str, Tensor],
                      grad_out: Tensor) -> dict[str, Tensor]:
    out = attention(case, leaves)
    names = [n for n in ("q", "k", "v", "head_param", "static_phase") if _used(case, n)]
    grads = torch.autograd.grad(out, [leaves[n] for n in names], grad_out.to(out.dtype).to(out.device))
    return {"out": out.detach().cpu().double(),
            **{f"d{n}": g.cpu().double() for n, g in zip(names, grads, strict=True)}}


def _used(case: AttentionCase, name: str) -> bool:
    if name == "head_param":
        return case.head_param == "learnable"
    if name == "static_phase":
        return case.phase == "static"
    return True


def assert_matches_reference(attention: Attention, reference: Attention, case: AttentionCase,
                             device: torch.device | str, seed: int = 0) -> None:
    """Check the output and every gradient of ``attention`` on ``case`` with the accuracy rule above."""
    leaves = {n: x.to(case.dtype).double() for n, x in make_leaves(case, seed).items()}
    grad_out = torch.randn(case.batch, case.heads, case.lq, case.head_dim, generator=torch.Generator().manual_seed(
        seed + 1)).to(case.dtype).double()
    exact = _output_and_grads(reference, case, cast_leaves(leaves, torch.float64, "cpu"), grad_out)
    low = _output_and_grads(reference, case, cast_leaves(leaves, case.dtype, "cpu"), grad_out)
    actual = _output_and_grads(attention, case, cast_leaves(leaves, case.dtype, device), grad_out)
    failures = []
    for name, ref in exact.items():
        error = (actual[name] - ref).abs().max().item()
        factor = REDUCTION_FACTOR if name == "dhead_param" else 2
        allowed = factor * (low[name] - ref).abs().max().item() + MARGIN[case.dtype] * (1 + ref.abs().max().item())
        if not error <= allowed:
            failures.append(f"{name}: |kernel - fp64| = {error:.3g} > allowed {allowed:.3g}")
    assert not failures, f"{case}: " + "; ".join(failures)



#: METHOD.md's bound on ``||kernel - fp64 reference|| / ||reference||`` (Frobenius norms, per output and gradient) with
#: the inputs rounded to the kernel's dtype first: fp32 (the kernels use IEEE fp32 dots, not TF32) lands far under
#: 1e-3; fp16 keeps 11 significant bits and bf16 8, and the kernels round only the probabilities and dS to them
#: before the second products (fp32 accumulation), so bf16 lands between 1e-3 and 1e-2 and fp16 near 8x lower.
RELATIVE_BOUND = {torch.float32: 1e-4, torch.float16: 3e-3, torch.bfloat16: 1e-2}


def relative_error(actual: Tensor, exact: Tensor) -> float:
    """``||actual - exact|| / ||exact||`` over all elements; NaN or inf anywhere in ``actual`` gives NaN."""
    if not torch.isfinite(actual).all():
        return math.nan
    return ((actual - exact).norm() / exact.norm().clamp_min(1e-300)).item()


def relative_errors(attention: Attention, reference: Attention, case: AttentionCase, device: torch.device | str,
                    seed: int = 0) -> dict[str, float]:
    """``{out, dq, dk, dv, ...: relative error}`` of ``attention`` on ``case`` against the fp64 ``reference``, both on
    the same inputs rounded to the case's dtype (so the error is the kernel's arithmetic, not the inputs' rounding)."""
    leaves = {n: x.to(case.dtype).double() for n, x in make_leaves(case, seed).items()}
    grad_out = torch.randn(case.batch, case.heads, case.lq, case.head_dim, generator=torch.Generator().manual_seed(
        seed + 1)).to(case.dtype).double()
    exact = _output_and_grads(reference, case, cast_leaves(leaves, torch.float64, "cpu"), grad_out)
    actual = _output_and_grads(attention, case, cast_leaves(leaves, case.dtype, device), grad_out)
    return {name: relative_error(actual[name], ref) for name, ref in exact.items()}

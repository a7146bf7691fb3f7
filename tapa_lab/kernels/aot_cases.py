"""The ahead-of-time compile matrix of the lab's Triton kernels: what each launcher passes, per kernel variant.

A case is one kernel compiled for one target (sm_80 or sm_90), head dim, dtype, variant and configuration. Its arguments
are those the launchers (:mod:`triton_attention`, :mod:`triton_rope`) pass for the model's layout (q, k, v and the
incoming gradient are views of the ``(B, L, H, D)`` projections, transposed), built as meta tensors by the same tensor
operations as the PEs, with example sizes. They are specialised as Triton's JIT specialises a launch: an int equal to 1
becomes a constexpr, an int divisible by 16 and every pointer (torch allocations are aligned) get the divisibility-16
hint, floats are fp32. So a case compiles the binary that a launch of that shape would load.

Variants, i.e. what the PE options change in a kernel's compiled code:
    plain          NoPE, and RoPE after its rotation (contiguous q and k: the same specialisation)
    alibi          ALiBi (fixed slopes)
    tapa           the quadratic phase; fixed or learnable temperature and phase norm make the phase operands
                   contiguous or change a scale only: the same specialisation
    tapa-linear    Dp = 2 ([sum qP, 1] . [1, sum kP]);  tapa-static: Dp = 1, an expanded per-head query phase;
    tapa-offset    Dp = D/2 + 1 (the offset as one more phase dimension)
    +alpha         learnable alpha: the dQ kernel also writes the per-head gradient (NEED_DHEAD)
    +docs, +gqa    document masking (HAS_DOCS), grouped-query attention (GROUP = 4; otherwise the constexpr 1)
Configurations: the GPU autotune lists of :mod:`tapa_lab.kernels.autotune` (what the launchers fix for the others).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from tapa_lab.kernels.launch import block_dim

#: Compute capability -> (name, the largest dynamic shared memory of one block in bytes, with the opt-in).
TARGETS: dict[int, tuple[str, int]] = {80: ("sm_80 (A100)", 163 * 1024), 90: ("sm_90 (H100/H200)", 227 * 1024)}
REGISTERS_PER_SM = 65536
MAX_REGISTERS_PER_THREAD = 255
HEAD_DIMS = (64, 128)
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
DEFAULT_DTYPES = ("fp16", "bf16")
ATTENTION_KERNELS = ("fwd", "bwd_dkdv", "bwd_dq")
KERNELS = (*ATTENTION_KERNELS, "bwd_preprocess", "rope")
MODES = {"plain": 0, "alibi": 1, "tapa": 2}
PHASES = ("linear", "static", "offset")
ROPE_VARIANTS = ("forward", "backward", "partial")
BATCH, LENGTH, HEADS, KV_HEADS_GQA = 2, 1024, 8, 2
#: Fixed launch parameters: the preprocessing kernel's block (triton_attention.PREPROCESS_BLOCK_M) and Triton's
#: default num_warps / num_stages of a launch without a config.
PREPROCESS_BLOCK_M, DEFAULT_WARPS, DEFAULT_STAGES = 64, 4, 3
_TRITON_TYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.int32: "i32"}


@dataclasses.dataclass(frozen=True)
class Case:
    """One compile: ``kernel`` (see KERNELS) ``variant`` for ``cc`` at ``head_dim`` in ``dtype`` with a config.

    ``block_m``/``block_n`` are the config's tiles (the RoPE kernel: BLOCK_L and BLOCK_HALF), ``warps``/``stages``
    its num_warps/num_stages.
    """

    kernel: str
    variant: str
    cc: int
    head_dim: int
    dtype: str
    block_m: int
    block_n: int
    warps: int
    stages: int

    @property
    def config(self) -> str:
        return f"{self.block_m}x{self.block_n} w{self.warps} s{self.stages}"


def variants(kernel: str) -> list[str]:
    """Every variant of ``kernel`` (see the module docstring)."""
    if kernel == "rope":
        return list(ROPE_VARIANTS)
    if kernel == "bwd_preprocess":
        return ["any"]
    names = [mode + docs + gqa for mode in MODES for docs in ("", "+docs") for gqa in ("", "+gqa")]
    names += [f"tapa-{phase}" for phase in PHASES]
    if kernel == "bwd_dq":
        names += ["tapa+alpha", "tapa+alpha+docs+gqa"]
    return names


def configs(kernel: str, variant: str, head_dim: int) -> list[tuple[int, int, int, int]]:
    """``(block_m, block_n, num_warps, num_stages)`` of every configuration a launch of ``kernel`` can use."""
    from tapa_lab.kernels.autotune import bwd_dkdv_configs, bwd_dq_configs, fwd_configs  # imports triton

    lists = {"fwd": fwd_configs, "bwd_dkdv": bwd_dkdv_configs, "bwd_dq": bwd_dq_configs}
    if kernel in lists:
        return [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages)
                for c in lists[kernel](interpreted=False)]
    if kernel == "bwd_preprocess":
        return [(PREPROCESS_BLOCK_M, block_dim(head_dim), DEFAULT_WARPS, DEFAULT_STAGES)]
    block_half = triton_next_power_of_2(_rope_half(variant, head_dim))
    return [(_rope_block_l(block_half), block_half, DEFAULT_WARPS, DEFAULT_STAGES)]


def _rope_half(variant: str, head_dim: int) -> int:
    """Rotated pairs: all the dims, or half of them for ``partial`` (GPT-NeoX's rotary_pct = 0.5)."""
    return head_dim // 4 if variant == "partial" else head_dim // 2


def _rope_block_l(block_half: int) -> int:
    """triton_rope's BLOCK_L: min(MAX_BLOCK_L, TILE_ELEMENTS // BLOCK_HALF)."""
    return min(64, max(1, 2048 // block_half))


def triton_next_power_of_2(n: int) -> int:
    """``triton.next_power_of_2`` without importing triton here."""
    return 1 << (n - 1).bit_length()


def _projection(heads: int, head_dim: int, dtype: torch.dtype) -> Tensor:
    """A model's q/k/v layout: ``(B, L, heads, D)`` transposed to ``(B, heads, L, D)`` (a meta tensor)."""
    return torch.empty(BATCH, LENGTH, heads, head_dim, dtype=dtype, device="meta").transpose(1, 2)


def phase_operands(phase: str, q_phase: Tensor, k_phase: Tensor) -> tuple[Tensor, Tensor]:
    """TAPA's phase operands as :meth:`tapa_lab.posenc.tapa.TAPA.phase_operands` forms them, per phase variant."""
    if phase == "linear":
        q_sum, k_sum = q_phase.sum(-1, keepdim=True), k_phase.sum(-1, keepdim=True)
        return torch.cat([q_sum, torch.ones_like(q_sum)], -1), torch.cat([torch.ones_like(k_sum), k_sum], -1)
    if phase == "static":
        heads = q_phase.shape[1]
        static = torch.empty(heads, dtype=q_phase.dtype, device="meta").view(1, heads, 1, 1)
        return static.expand(q_phase.shape[0], heads, q_phase.shape[2], 1), torch.ones_like(k_phase[..., :1])
    if phase == "offset":
        offset = torch.empty(1, q_phase.shape[1], 1, 1, dtype=q_phase.dtype, device="meta").expand(
            *q_phase.shape[:3], 1)
        return torch.cat([q_phase, offset], -1), torch.cat([k_phase, torch.ones_like(k_phase[..., :1])], -1)
    return q_phase, k_phase


def _strides(x: Tensor | None) -> tuple[int, ...]:
    return tuple(x.stride()) if x is not None else (0, 0, 0, 0)


def _attention_args(case: Case) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(runtime arguments by name, constexprs)`` of an attention kernel launch, as triton_attention builds them."""
    mode_name = case.variant.split("+")[0].split("-")[0]
    phase = case.variant.split("+")[0].split("-")[1] if "-" in case.variant else "quadratic"
    docs, gqa, need_dhead = "+docs" in case.variant, "+gqa" in case.variant, "+alpha" in case.variant
    dtype, d = DTYPES[case.dtype], case.head_dim
    q, k = _projection(HEADS, d, dtype), _projection(KV_HEADS_GQA if gqa else HEADS, d, dtype)
    v = _projection(k.shape[1], d, dtype)
    tapa = mode_name == "tapa"
    q_amp, k_amp, q_phase, k_phase = q, k, None, None
    if tapa:
        da = d // 2
        q_amp, k_amp = q[..., :da], k[..., :da]
        q_phase, k_phase = phase_operands(phase, q[..., da:], k[..., da:])
    da, dp, dv = q_amp.shape[-1], q_phase.shape[-1] if q_phase is not None else 1, d
    fp32 = torch.empty(0, device="meta")
    param = fp32 if mode_name != "plain" else q_amp
    doc = torch.empty(0, dtype=torch.int32, device="meta") if docs else fp32
    sizes = {"amp_scale": 0.125, "phase_scale": 0.5 if tapa else 0.0, "H": HEADS, "GROUP": HEADS // k.shape[1],
             "LQ": LENGTH, "LK": LENGTH, "DA": da, "DP": dp, "DV": dv}
    ops = [q_amp, k_amp, q_phase if tapa else q_amp, k_phase if tapa else k_amp, v]
    names = ["qa", "ka", "qp", "kp", "v"]
    stride_of = [q_amp, k_amp, q_phase, k_phase, v]
    constexprs = {"MODE": MODES[mode_name], "HAS_DOCS": docs,
                  "DOT_PRECISION": "ieee" if dtype == torch.float32 else "tf32", "BLOCK_DA": block_dim(da),
                  "BLOCK_DP": block_dim(dp), "BLOCK_DV": block_dim(dv), "BLOCK_M": case.block_m,
                  "BLOCK_N": case.block_n}
    pointers = dict(zip(["Q_AMP", "K_AMP", "Q_PHASE", "K_PHASE", "V"], ops, strict=True))
    if case.kernel == "fwd":
        pointers |= {"OUT": q, "LSE": fp32, "HEAD_PARAM": param, "DOC": doc}
        names, stride_of = names + ["o"], stride_of + [q.contiguous()]
    else:
        grad_out = _projection(HEADS, d, dtype)  # the gradient of out.transpose(1, 2).reshape(...)
        pointers |= {"DO": grad_out, "LSE": fp32, "DELTA": fp32, "HEAD_PARAM": param, "DOC": doc}
        if case.kernel == "bwd_dkdv":
            pointers |= {"DK_AMP": k_amp, "DK_PHASE": k_phase if tapa else k_amp, "DV_OUT": v}
        else:
            pointers |= {"DQ_AMP": q_amp, "DQ_PHASE": q_phase if tapa else q_amp, "DHEAD": fp32}
            constexprs["NEED_DHEAD"] = need_dhead
        names, stride_of = names + ["do"], stride_of + [grad_out]
    strides = {f"stride_{name}_{axis}": value for name, x in zip(names, stride_of, strict=True)
               for axis, value in zip("bhld", _strides(x), strict=True)}
    return pointers | strides | sizes, constexprs


def _preprocess_args(case: Case) -> tuple[dict[str, Any], dict[str, Any]]:
    dtype, d = DTYPES[case.dtype], case.head_dim
    out, grad_out, fp32 = torch.empty(BATCH, HEADS, LENGTH, d, dtype=dtype, device="meta"), \
        _projection(HEADS, d, dtype), torch.empty(0, device="meta")
    strides = {f"stride_{name}_{axis}": value for name, x in (("o", out), ("do", grad_out))
               for axis, value in zip("bhld", x.stride(), strict=True)}
    return ({"OUT": out, "DO": grad_out, "DELTA": fp32} | strides | {"H": HEADS, "LQ": LENGTH, "DV": d},
            {"BLOCK_M": case.block_m, "BLOCK_DV": case.block_n})


def _rope_args(case: Case) -> tuple[dict[str, Any], dict[str, Any]]:
    """The forward rotates q in its projection layout, the backward a contiguous gradient; ``partial`` rotates half
    of the dims (GPT-NeoX's rotary_pct), passing the rest through."""
    dtype, d = DTYPES[case.dtype], case.head_dim
    x = _projection(HEADS, d, dtype)
    if case.variant == "backward":
        x = x.contiguous()
    half = _rope_half(case.variant, d)
    table = torch.empty(LENGTH, half, device="meta")
    n_pass = d - 2 * half
    runtime: dict[str, Any] = {"X": x, "COS": table, "SIN": table, "OUT": x.contiguous()}
    runtime |= {f"stride_x_{axis}": value for axis, value in zip("bhld", x.stride(), strict=True)}
    runtime |= {"stride_cs_l": table.stride(0), "stride_cs_d": table.stride(1)}
    runtime |= {f"stride_o_{axis}": value for axis, value in zip("bhld", x.contiguous().stride(), strict=True)}
    runtime |= {"scale": 1.0, "H": HEADS, "L": LENGTH, "HALF": half, "D": d}
    return runtime, {"CONJUGATE": case.variant == "backward", "BLOCK_L": case.block_m, "BLOCK_HALF": case.block_n,
                     "BLOCK_PASS": triton_next_power_of_2(n_pass) if n_pass else 0}


def launch_args(case: Case) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(runtime arguments, constexprs)`` by name: together, every parameter of the case's kernel."""
    if case.kernel in ATTENTION_KERNELS:
        return _attention_args(case)
    return _preprocess_args(case) if case.kernel == "bwd_preprocess" else _rope_args(case)


def specialise(value: Any) -> tuple[str, bool]:
    """``(Triton type, divisible by 16)`` of a runtime argument as the JIT specialises it; type ``constexpr`` for an
    int equal to 1."""
    if isinstance(value, Tensor):
        return "*" + _TRITON_TYPES[value.dtype], True
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"runtime argument {value!r}: expected a tensor, an int or a float")
    if isinstance(value, float):
        return "fp32", False
    if value == 1:
        return "constexpr", False
    return ("i32" if -2**31 <= value < 2**31 else "i64"), value % 16 == 0


def specialisation(case: Case) -> tuple[dict[str, str], dict[str, Any], set[str]]:
    """``(signature, constexprs, divisible)`` by parameter name: every parameter's Triton type (``constexpr`` for the
    constexprs and the ints equal to 1), the constexprs' values, and the parameters with the divisibility-16 hint."""
    runtime, constexprs = launch_args(case)
    signature, values, divisible = {}, {}, set()
    for name, value in runtime.items():
        signature[name], hint = specialise(value)
        if signature[name] == "constexpr":
            values[name] = value
        if hint:
            divisible.add(name)
    signature |= {name: "constexpr" for name in constexprs}
    return signature, values | constexprs, divisible


def heaviest(kernel: str) -> list[str]:
    """Per score mode, the variant with GQA (its key loop is software-pipelined: the most shared memory, growing with
    num_stages) and the one with every option on (the most registers: document masking, GQA, the per-head gradient;
    the branch on the documents in the key loop stops the pipelining, so num_stages changes nothing there); every
    variant of the kernels without modes."""
    if kernel not in ATTENTION_KERNELS:
        return variants(kernel)
    alpha = {"tapa": "+alpha"} if kernel == "bwd_dq" else {}
    return [name for mode in MODES for name in (f"{mode}+gqa", f"{mode}{alpha.get(mode, '')}+docs+gqa")]


def matrix(kernels: list[str], targets: list[int], head_dims: list[int], dtypes: list[str],
           full: bool = False) -> list[Case]:
    """The compile matrix over the given axes, head dim by head dim (in the given order), then dtype, then target.

    Args:
        full: every variant at every configuration; else every configuration of the :func:`heaviest` variants and
            every other variant at the first configuration of its kernel's list (the one the lists lead with).
    """
    cases = []
    for d in head_dims:
        for dtype in dtypes:
            for cc in targets:
                for kernel in kernels:
                    for variant in variants(kernel):
                        every = full or variant in heaviest(kernel)
                        cases += [Case(kernel, variant, cc, d, dtype, *c)
                                  for c in configs(kernel, variant, d)[:None if every else 1]]
    return cases

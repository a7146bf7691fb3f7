"""Every Triton kernel of the lab compiles for real GPUs (sm_80 and sm_90) on this CPU machine, fits the target's shared
memory and registers. The fast test compiles each kernel at least once per target: per attention kernel the variant
with every option on and the pipelined TAPA+GQA variant with its largest tiles (the most shared memory), every variant
of the small kernels. The slow test compiles every variant of every kernel once per target, with head dims, dtypes and
autotune configurations sampled in turn (the whole matrix: ``tapa-lab bench compile``). The specialisation of the
cases' arguments is Triton's own; the cases' TAPA phase operands are laid out as the PEs lay them out; the ptxas log
parser and the launch limits."""

from __future__ import annotations

import pytest
import torch
from triton._C.libtriton import native_specialize_impl
from triton.backends.compiler import BaseBackend

from tapa_lab.kernels.aot import compile_cases, fits, parse_ptxas_log
from tapa_lab.kernels.aot_cases import (
    ATTENTION_KERNELS,
    DEFAULT_DTYPES,
    HEAD_DIMS,
    KERNELS,
    TARGETS,
    Case,
    configs,
    heaviest,
    phase_operands,
    specialise,
    variants,
)
from tapa_lab.posenc import TAPA, TAPALinearPhase, TAPAStaticPhase


def sampled_cases(cc: int) -> list[Case]:
    """Every variant of every kernel once for target ``cc``; the i-th variant of a kernel takes head dim, dtype and
    configuration number i (modulo each list), so every axis value appears; and per attention kernel, the pipelined
    TAPA variant at D = 128 with its largest tiles and most stages (the most shared memory)."""
    cases = []
    for kernel in KERNELS:
        for i, variant in enumerate(variants(kernel)):
            d, dtype = HEAD_DIMS[i % len(HEAD_DIMS)], DEFAULT_DTYPES[i // len(HEAD_DIMS) % len(DEFAULT_DTYPES)]
            kernel_configs = configs(kernel, variant, d)
            cases.append(Case(kernel, variant, cc, d, dtype, *kernel_configs[i % len(kernel_configs)]))
    return cases + [largest_tiles(kernel, cc) for kernel in ATTENTION_KERNELS]


def largest_tiles(kernel: str, cc: int) -> Case:
    """The pipelined TAPA+GQA variant at D = 128 with its largest tiles and most stages: the most shared memory."""
    largest = max(configs(kernel, "tapa+gqa", 128), key=lambda c: c[0] * c[1] * c[3])
    return Case(kernel, "tapa+gqa", cc, 128, "bf16", *largest)


def quick_cases(cc: int) -> list[Case]:
    """Each kernel at least once for target ``cc``: per attention kernel its variant with every option on (the most
    registers) at D = 64 in fp16 and :func:`largest_tiles`; every variant of the other kernels."""
    cases = []
    for kernel in KERNELS:
        if kernel in ATTENTION_KERNELS:
            everything = heaviest(kernel)[-1]  # the last mode (TAPA) with documents, GQA (and alpha for dq)
            cases += [Case(kernel, everything, cc, 64, "fp16", *configs(kernel, everything, 64)[0]),
                      largest_tiles(kernel, cc)]
        else:
            cases += [Case(kernel, variant, cc, HEAD_DIMS[i % len(HEAD_DIMS)], "fp16",
                           *configs(kernel, variant, HEAD_DIMS[i % len(HEAD_DIMS)])[0])
                      for i, variant in enumerate(variants(kernel))]
    return cases


def compile_all(cases: list[Case]) -> dict[Case, dict]:
    results, _ = compile_cases(cases, workers=2)
    return {case: result for case, result in zip(cases, results, strict=True)}


def check_compiled(results: list[dict], cc: int) -> None:
    """Every result compiled for ``cc``'s PTX target and fits it (registers, shared memory)."""
    failures = [f"{r['kernel']} {r['variant']} D={r['head_dim']} {r['dtype']} "
                f"{r['block_m']}x{r['block_n']} w{r['warps']} s{r['stages']}: "
                f"{r.get('error') or (r['shared'], r['regs'])}" for r in results if not r["fits"]]
    assert not failures, "\n".join(failures)
    expected_target = f"sm_{cc}{'a' if cc >= 90 else ''}"
    for r in results:
        assert r["ptx_target"] == expected_target
        assert 0 < r["regs"] <= 255 and 0 <= r["shared"] <= TARGETS[cc][1]
        if r["kernel"] in ATTENTION_KERNELS:
            assert r["shared"] > 0  # the dots stage their tiles in shared memory


@pytest.fixture(scope="module")
def compiled_quick() -> dict[Case, dict]:
    return compile_all([case for cc in TARGETS for case in quick_cases(cc)])


@pytest.fixture(scope="module")
def compiled() -> dict[Case, dict]:
    return compile_all([case for cc in TARGETS for case in sampled_cases(cc)])


@pytest.mark.parametrize("cc", list(TARGETS))
def test_every_kernel_compiles_and_fits(compiled_quick: dict[Case, dict], cc: int) -> None:
    results = [r for case, r in compiled_quick.items() if case.cc == cc]
    assert {r["kernel"] for r in results} == set(KERNELS)
    check_compiled(results, cc)


@pytest.mark.slow
@pytest.mark.parametrize("cc", list(TARGETS))
def test_every_kernel_variant_compiles_and_fits(compiled: dict[Case, dict], cc: int) -> None:
    results = [r for case, r in compiled.items() if case.cc == cc]
    assert {(r["kernel"], r["variant"]) for r in results} == {(k, v) for k in KERNELS for v in variants(k)}
    check_compiled(results, cc)


@pytest.mark.parametrize("value", [0, 1, 2, 16, 17, 64, 1000, 2**31, 0.0, 1.0, 0.5,
                                   torch.empty(4, dtype=torch.bfloat16), torch.empty(4, dtype=torch.int32)])
def test_specialisation_is_tritons(value) -> None:
    kind, hint = native_specialize_impl(BaseBackend, value, False, True, True)
    assert specialise(value) == (kind, hint == "D")


@pytest.mark.parametrize(("posenc", "phase"), [
    (TAPA(), "quadratic"), (TAPA(phase_temperature=2.0, learnable_temperature=True), "quadratic"),
    (TAPALinearPhase(), "linear"), (TAPAStaticPhase(), "static"), (TAPA(phase_offset=0.5), "offset")])
def test_phase_operands_match_the_pes(posenc: TAPA, phase: str) -> None:
    """The cases' phase operands specialise as the PE's: same last dim and the same type of every stride."""
    batch, length, heads, head_dim = 2, 32, 4, 64
    posenc.bind(heads, heads, head_dim)
    q = torch.randn(batch, length, heads, head_dim).transpose(1, 2)
    k = torch.randn(batch, length, heads, head_dim).transpose(1, 2)
    with torch.no_grad():
        real = posenc.phase_operands(q[..., head_dim // 2:], k[..., head_dim // 2:])[:2]
    meta = phase_operands(phase, q.to("meta")[..., head_dim // 2:], k.to("meta")[..., head_dim // 2:])
    for ours, theirs in zip(meta, real, strict=True):
        assert ours.shape == theirs.shape
        assert [specialise(s) for s in ours.stride()] == [specialise(s) for s in theirs.stride()]


def test_ptxas_log_parser_and_limits() -> None:
    log = ("ptxas info    : Compiling entry function '_attn_fwd' for 'sm_90a'\n"
           "ptxas info    : Function properties for _attn_fwd\n"
           "    56 bytes stack frame, 32 bytes spill stores, 20 bytes spill loads\n"
           "ptxas info    : Used 255 registers, used 1 barriers, 56 bytes cumulative stack size\n")
    assert parse_ptxas_log(log) == {"regs": 255, "spill_stores": 32, "spill_loads": 20, "stack": 56}
    with pytest.raises(ValueError, match="one function"):
        parse_ptxas_log(log + log)
    assert fits(90, 227 * 1024, 255, 8) and not fits(90, 227 * 1024 + 1, 32, 4)
    assert fits(80, 163 * 1024, 128, 4) and not fits(80, 163 * 1024 + 1, 128, 4)
    assert not fits(80, 0, 129, 16)  # 136 registers (units of 8) x 512 threads > 64K

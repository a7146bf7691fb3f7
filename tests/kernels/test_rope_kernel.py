"""RoPE's fused Triton rotation (interpreter on CPU): output and gradient against the float64 rotation, with the
accuracy rule of ``kernel_cases`` (fp32 and fp16; partial rotary, queries at the last Lq of Lk positions, views of a
fused projection, a YaRN-like scale); the conjugate rotation inverts it; the PEs give the same q/k on both backends;
the launcher names what is wrong."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from kernel_cases import MARGIN
from torch import Tensor

from tapa_lab.kernels import rope_rotate
from tapa_lab.kernels.launch import interpreter_enabled
from tapa_lab.kernels.rope_torch import rotate
from tapa_lab.posenc import NTKAwareRoPE, PositionInterpolation, RoPE, YaRN

F16 = torch.float16

needs_triton = pytest.mark.skipif(not interpreter_enabled() and not torch.cuda.is_available(),
                                  reason="needs Triton to run")


@dataclass(frozen=True)
class RotationCase:
    """x is ``(batch, heads, lq, head_dim)`` at the last ``lq`` of ``lk`` positions; ``rotary_dim`` dims rotate.

    ``layout``: ``contiguous``; ``views`` (x is the middle third of a ``(B, L, H, 3 D)`` fused projection,
    transposed to ``(B, H, L, D)``); or ``head-dim-strided`` (a ``(B, H, D, L)`` tensor transposed: head dims apart).
    """

    lq: int
    lk: int
    head_dim: int
    rotary_dim: int
    heads: int = 2
    batch: int = 1
    scale: float = 1.0
    dtype: torch.dtype = torch.float32
    layout: str = "contiguous"

    def __str__(self) -> str:
        dtype = str(self.dtype).removeprefix("torch.")
        return (f"L{self.lq}-{self.lk}_D{self.head_dim}_R{self.rotary_dim}_H{self.heads}_B{self.batch}_s{self.scale}_"
                f"{dtype}_{self.layout}")


CASES = [
    RotationCase(lq=21, lk=21, head_dim=16, rotary_dim=16),
    RotationCase(lq=100, lk=130, head_dim=64, rotary_dim=48, batch=2, layout="views"),  # 2 position blocks
    RotationCase(lq=37, lk=37, head_dim=32, rotary_dim=16, scale=1.25, dtype=F16, layout="views"),
    RotationCase(lq=1, lk=50, head_dim=24, rotary_dim=20, heads=3, scale=0.8, dtype=F16),
    RotationCase(lq=70, lk=90, head_dim=16, rotary_dim=2, scale=1.1, layout="head-dim-strided"),  # one pair rotates
]


def tables(lk: int, rotary_dim: int) -> tuple[Tensor, Tensor]:
    """cos and sin ``(lk, R/2)`` float64 of RoPE's angles at positions 0 .. lk-1 (base 1e4)."""
    inv_freq = 1e4 ** (-torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim)
    angles = torch.arange(lk, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return angles.cos(), angles.sin()


def make_base(case: RotationCase, seed: int = 0) -> Tensor:
    """The random contiguous float64 tensor that :func:`lay_out` views, holding values exact in the case's dtype."""
    shape = {"contiguous": (case.batch, case.heads, case.lq, case.head_dim),
             "views": (case.batch, case.lq, case.heads, 3 * case.head_dim),
             "head-dim-strided": (case.batch, case.heads, case.head_dim, case.lq)}[case.layout]
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(case.dtype).double()


def lay_out(case: RotationCase, base: Tensor) -> Tensor:
    """x ``(B, H, lq, D)``: ``base`` itself or a view of it, as the case's layout says."""
    if case.layout == "views":
        return base[..., case.head_dim : 2 * case.head_dim].transpose(1, 2)
    return base.transpose(2, 3) if case.layout == "head-dim-strided" else base


def output_and_grad(case: RotationCase, base: Tensor, weights: Tensor, dtype: torch.dtype, backend: str,
                    device: torch.device | str) -> tuple[Tensor, Tensor]:
    """``(out, d sum(weights * out) / dbase)`` in float64 on the CPU, base cast to ``dtype`` on ``device``."""
    cos, sin = tables(case.lk, case.rotary_dim)
    leaf = base.to(device=device, dtype=dtype).requires_grad_()
    x = lay_out(case, leaf)
    assert x.is_contiguous() == (case.layout == "contiguous")
    out = rope_rotate(x, cos[-case.lq :].to(device), sin[-case.lq :].to(device), scale=case.scale, backend=backend)
    assert out.dtype == dtype and out.shape == x.shape
    (grad,) = torch.autograd.grad(out, leaf, weights.to(device=device, dtype=dtype))
    return out.detach().cpu().double(), grad.cpu().double()


def complex_rotation(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """An independent float64 reference: pair ``(x_d, x_{d+R/2})`` as ``x_d + i x_{d+R/2}`` times ``e^{i angle}``."""
    half = cos.shape[-1]
    z = torch.complex(x[..., :half], x[..., half : 2 * half]) * torch.complex(cos, sin)
    return torch.cat([z.real, z.imag, x[..., 2 * half :]], dim=-1)


@pytest.mark.parametrize("case", CASES[:2], ids=str)
def test_float64_rotation_is_the_complex_rotation(case: RotationCase) -> None:
    x = lay_out(case, make_base(case))
    cos, sin = tables(case.lk, case.rotary_dim)
    torch.testing.assert_close(rotate(x, cos[-case.lq :], sin[-case.lq :]),
                               complex_rotation(x, cos[-case.lq :], sin[-case.lq :]), rtol=1e-12, atol=1e-12)


@needs_triton
@pytest.mark.parametrize("case", CASES, ids=str)
def test_triton_rotation_and_gradient_match_float64(case: RotationCase, device: torch.device) -> None:
    """|triton - fp64| <= 2 |torch in the same dtype - fp64| + margin, for the output and d sum(w * out) / dx."""
    base = make_base(case)
    x = lay_out(case, base)
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(case.dtype).double()
    exact = output_and_grad(case, base, weights, torch.float64, "torch", "cpu")
    low = output_and_grad(case, base, weights, case.dtype, "torch", "cpu")
    actual = output_and_grad(case, base, weights, case.dtype, "triton", device)
    for name, ref, low_value, value in zip(("out", "dx"), exact, low, actual, strict=True):
        error = (value - ref).abs().max().item()
        allowed = 2 * (low_value - ref).abs().max().item() + MARGIN[case.dtype] * (1 + ref.abs().max().item())
        assert error <= allowed, f"{case} {name}: |triton - fp64| = {error:.3g} > allowed {allowed:.3g}"
    rest = slice(case.rotary_dim, None)  # pass-through dims: x times the scale, nothing else
    torch.testing.assert_close(actual[0][..., rest], (x[..., rest].to(case.dtype) * case.scale).double())


@needs_triton
def test_conjugate_rotation_inverts_the_rotation(device: torch.device) -> None:
    from tapa_lab.kernels.triton_rope import rope_rotate_triton

    case = CASES[1]
    x = lay_out(case, make_base(case).float().to(device))
    cos, sin = (t[-case.lq :].to(device) for t in tables(case.lk, case.rotary_dim))
    rotated = rope_rotate_triton(x, cos, sin, scale=2.0)
    back = rope_rotate_triton(rotated, cos, sin, scale=0.5, conjugate=True)
    torch.testing.assert_close(back, x, rtol=0, atol=1e-5)
    assert (rotated[..., : case.rotary_dim] - 2 * x[..., : case.rotary_dim]).abs().max() > 0.1  # it did rotate


@needs_triton
@pytest.mark.parametrize("make_pe", [lambda b: RoPE(rotary_fraction=0.5, backend=b),
                                     lambda b: PositionInterpolation(factor=4.0, backend=b),
                                     lambda b: NTKAwareRoPE(factor=4.0, backend=b),
                                     lambda b: YaRN(factor=4.0, original_max_len=16, backend=b)],
                         ids=["RoPE-partial", "PositionInterpolation", "NTKAwareRoPE", "YaRN"])
def test_positional_encodings_rotate_alike_on_both_backends(make_pe, device: torch.device) -> None:
    """transform_qk with backend triton equals backend torch (fp32; GQA key heads, queries at the last 5 of 40)."""
    gen = torch.Generator().manual_seed(2)
    q, k = torch.randn(2, 4, 5, 16, generator=gen), torch.randn(2, 2, 40, 16, generator=gen)
    positions = torch.arange(100, 140)
    results = {}
    for backend in ("torch", "triton"):
        pe = make_pe(backend)
        pe.bind(n_heads=4, n_kv_heads=2, head_dim=16)
        place = "cpu" if backend == "torch" else device
        results[backend] = pe.transform_qk(q.to(place), k.to(place), positions.to(place))
    expected, actual = results["torch"], results["triton"]
    for got, want in zip(actual, expected, strict=True):
        torch.testing.assert_close(got.cpu(), want, rtol=1e-6, atol=1e-6)


def test_torch_backend_is_rotate_then_scale_bit_for_bit() -> None:
    """The torch path is exactly what RoPE always computed: rotate, then multiply by YaRN's factor."""
    pe = YaRN(factor=4.0, original_max_len=16, rotary_fraction=0.5, backend="torch")
    pe.bind(n_heads=2, n_kv_heads=1, head_dim=16)
    gen = torch.Generator().manual_seed(3)
    q, k = torch.randn(1, 2, 3, 16, generator=gen), torch.randn(1, 1, 9, 16, generator=gen)
    cos, sin = pe.cos_sin(torch.arange(9))
    q_out, k_out = pe.transform_qk(q, k, torch.arange(9))
    factor = pe.attention_factor()
    assert factor != 1.0
    assert torch.equal(q_out, rotate(q, cos[-3:], sin[-3:]) * factor)
    assert torch.equal(k_out, rotate(k, cos, sin) * factor)


@needs_triton
@pytest.mark.parametrize(("change", "message"), [
    ({"dtype": torch.float64}, "supports torch.float16"),
    ({"x_shape": (2, 5, 16)}, "must be 4-D"),
    ({"rows": 6}, "cos/sin have 6 rows but x has 5 positions"),
    ({"half": 9}, "the rotary dims"),
    ({"sin_half": 4}, "sin must be 2-D"),
    ({"cos_grad": True}, "no gradient to the cos/sin tables"),
])
def test_launcher_names_what_is_wrong(change: dict, message: str, device: torch.device) -> None:
    x = torch.randn(change.get("x_shape", (1, 2, 5, 16)), dtype=change.get("dtype", torch.float32), device=device)
    rows, half = change.get("rows", 5), change.get("half", 8)
    cos = torch.ones(rows, half, device=device, requires_grad=change.get("cos_grad", False))
    sin = torch.zeros(rows, change.get("sin_half", half), device=device)
    with pytest.raises(ValueError, match=message):
        rope_rotate(x, cos, sin, backend="triton")

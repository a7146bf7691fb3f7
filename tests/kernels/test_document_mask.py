"""Document masking (``document_ids``): the blockwise PyTorch paths and the Triton kernels (interpreter on CPU) match
the materialised reference with masks, output and every gradient, under the kernel_cases accuracy rule; ``None``
keeps today's results bit for bit."""

from __future__ import annotations

import math

import pytest
import torch
from kernel_cases import (
    AttentionCase,
    assert_matches_reference,
    causal_operands,
    make_leaves,
    tapa_operands,
)

from tapa_lab.data.document_ids import document_ids as data_document_ids
from tapa_lab.kernels import causal_attention, tapa_attention
from tapa_lab.kernels.reference import causal_attention_reference, tapa_attention_reference
from tapa_lab.model import DecoderConfig, DecoderLM
from tapa_lab.posenc import TAPA, pe_classes

F16 = torch.float16


def document_ids(batch: int, lk: int, seed: int) -> torch.Tensor:
    """Non-decreasing ids with documents of random lengths (some of 1 token), different in each batch row."""
    gen = torch.Generator().manual_seed(seed)
    ends = torch.rand(batch, lk, generator=gen) < 0.08
    ends[:, 3] = True  # a short document in every row
    return ends.to(torch.int64).cumsum(-1) - ends.to(torch.int64)


def _tapa(backend: str, chunk_size: int | None = None, reference: bool = False):
    def attention(case: AttentionCase, leaves: dict[str, torch.Tensor]) -> torch.Tensor:
        operands, alpha, phase_scale = tapa_operands(case, leaves)
        ids = document_ids(case.batch, case.lk, seed=case.lk).to(leaves["q"].device)
        if reference:
            return tapa_attention_reference(*operands, alpha, 1.0 / math.sqrt(case.amp_dim), phase_scale,
                                            document_ids=ids)
        return tapa_attention(*operands, alpha=alpha, amp_scale=1.0 / math.sqrt(case.amp_dim),
                              phase_scale=phase_scale, backend=backend, chunk_size=chunk_size,
                              document_ids=ids)
    return attention


def _causal(backend: str, chunk_size: int | None = None, reference: bool = False):
    def attention(case: AttentionCase, leaves: dict[str, torch.Tensor]) -> torch.Tensor:
        (q, k, v), slopes = causal_operands(case, leaves)
        ids = document_ids(case.batch, case.lk, seed=case.lk).to(q.device)
        scale = 1.0 / math.sqrt(case.head_dim)
        if reference:
            return causal_attention_reference(q, k, v, scale, slopes, document_ids=ids)
        return causal_attention(q, k, v, scale=scale, alibi_slopes=slopes, backend=backend, chunk_size=chunk_size,
                                document_ids=ids)
    return attention


TAPA_CASES = [
    AttentionCase(lq=40, lk=40, batch=2, head_param="learnable"),
    AttentionCase(lq=23, lk=57, heads=4, kv_heads=2, alpha=0.1, layout="views"),
    AttentionCase(lq=33, lk=33, batch=2, head_param="learnable", phase="static"),
    AttentionCase(lq=48, lk=48, heads=2, kv_heads=2, phase="linear", dtype=F16),
]
CAUSAL_CASES = [
    AttentionCase(lq=40, lk=40, batch=2, head_param="none"),
    AttentionCase(lq=23, lk=57, heads=4, kv_heads=2, head_param="learnable", layout="views"),
    AttentionCase(lq=48, lk=48, batch=2, head_param="fixed", dtype=F16),
]


@pytest.mark.parametrize("case", TAPA_CASES, ids=str)
def test_tapa_torch_path_with_documents_matches_reference(case: AttentionCase) -> None:
    assert_matches_reference(_tapa("torch", chunk_size=8), _tapa("", reference=True), case, "cpu")


@pytest.mark.parametrize("case", CAUSAL_CASES, ids=str)
def test_causal_torch_path_with_documents_matches_reference(case: AttentionCase) -> None:
    assert_matches_reference(_causal("torch", chunk_size=8), _causal("", reference=True), case, "cpu")


@pytest.mark.parametrize("case", TAPA_CASES[:2], ids=str)
def test_tapa_triton_with_documents_matches_reference(case: AttentionCase, device: torch.device) -> None:
    assert_matches_reference(_tapa("triton"), _tapa("", reference=True), case, device)


@pytest.mark.parametrize("case", CAUSAL_CASES[:2], ids=str)
def test_causal_triton_with_documents_matches_reference(case: AttentionCase, device: torch.device) -> None:
    assert_matches_reference(_causal("triton"), _causal("", reference=True), case, device)


def test_one_document_everywhere_equals_no_mask() -> None:
    """All ids equal: the masked paths give the unmasked results (and None is the unmasked path itself)."""
    case = AttentionCase(lq=30, lk=30, batch=2, head_param="fixed")
    leaves = {n: x.float() for n, x in make_leaves(case).items()}
    (q, k, v), slopes = causal_operands(case, leaves)
    same = torch.zeros(2, 30, dtype=torch.int64)
    for alibi in (None, slopes):
        plain = causal_attention(q, k, v, scale=0.25, alibi_slopes=alibi, backend="torch")
        masked = causal_attention(q, k, v, scale=0.25, alibi_slopes=alibi, backend="torch", document_ids=same)
        torch.testing.assert_close(masked, plain, rtol=1e-5, atol=1e-6)
    operands, alpha, phase_scale = tapa_operands(case, leaves)
    plain = tapa_attention(*operands, alpha=alpha, amp_scale=0.3, phase_scale=phase_scale, backend="torch")
    masked = tapa_attention(*operands, alpha=alpha, amp_scale=0.3, phase_scale=phase_scale, backend="torch",
                            document_ids=same)
    torch.testing.assert_close(masked, plain, rtol=0, atol=0)


def _copies(pe_cls: type, backend: str, dtype: torch.dtype) -> tuple[float, float]:
    """In a window holding a document twice: max |logits of the second copy - of the first|, and max |change of the
    second copy's logits when the first document's tokens change|."""
    torch.manual_seed(0)
    model = DecoderLM(40, DecoderConfig(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2), pe_cls(backend=backend))
    model = model.to(dtype)
    eod = 39
    doc = torch.randint(0, eod, (1, 20))
    tokens = torch.cat([doc, torch.tensor([[eod]]), doc, torch.tensor([[eod]])], dim=1)  # (1, 42)
    other = tokens.clone()
    other[:, :20] = torch.randint(0, eod, (1, 20))
    with torch.no_grad():
        logits = model(tokens, document_ids=data_document_ids(tokens, eod))
        changed = model(other, document_ids=data_document_ids(other, eod))
    return ((logits[:, 21:] - logits[:, :21]).abs().max().item(),
            (logits[:, 21:] - changed[:, 21:]).abs().max().item())


@pytest.mark.parametrize("name", sorted(pe_classes()))
def test_two_identical_documents_get_identical_logits_torch(name: str) -> None:
    """Every PE: the second document does not see the first; a translation-invariant PE (all but absolute ones and
    FIRE, whose positions run on across the window) gives both copies the same logits."""
    pe_cls = pe_classes()[name]
    same, leak = _copies(pe_cls, "torch", torch.float64)
    assert leak < 1e-12
    if pe_cls.translation_invariant:
        assert same < 1e-10


@pytest.mark.parametrize("name", ["TAPA", "ALiBi", "NoPE"])
def test_two_identical_documents_get_identical_logits_triton(name: str, device: torch.device) -> None:
    same, leak = _copies(pe_classes()[name], "triton", torch.float32)
    assert same < 1e-4 and leak < 1e-5


def test_tapa_options_run_on_triton_like_on_torch(device: torch.device) -> None:
    """TAPA's diagnosis options act before the kernel, so the Triton path (interpreter) matches the PyTorch path,
    output and gradients of q, k, v, the temperature and the gains."""
    torch.manual_seed(0)
    grads = {}
    for backend in ("torch", "triton"):
        pe = TAPA(backend=backend, phase_temperature=0.5, learnable_temperature=True, phase_norm="rms_gain")
        pe.bind(2, 1, 16)
        pe = pe.to(device)
        gen = torch.Generator().manual_seed(1)
        q, k, v = (torch.randn(shape, generator=gen).to(device).requires_grad_()
                   for shape in ((1, 2, 24, 16), (1, 1, 24, 16), (1, 1, 24, 16)))
        ids = document_ids(1, 24, seed=3).to(device)
        out = pe.attend(q, k, v, torch.arange(24, device=device), document_ids=ids)
        leaves = [q, k, v, pe.log_temperature, pe.q_phase_gain, pe.k_phase_gain]
        grads[backend] = [out, *torch.autograd.grad(out.square().sum(), leaves)]
    for name, torch_value, triton_value in zip(["out", "dq", "dk", "dv", "dtemp", "dgq", "dgk"], *grads.values(),
                                               strict=True):
        torch.testing.assert_close(triton_value.cpu(), torch_value.cpu(), rtol=2e-4, atol=2e-4, msg=name)

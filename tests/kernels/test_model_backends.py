"""A tiny decoder trains with ``backend: triton`` (the interpreter on CPU) exactly like ``backend: torch``:
same losses step after step, within fp32 tolerance, for every kernel mode (plain via NoPE and RoPE, ALiBi, TAPA
with fixed and learnable alpha, and with the diagnosis options) and for RoPE's fused rotation (full, and partial with
YaRN's scale)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tapa_lab.model import DecoderConfig, DecoderLM
from tapa_lab.posenc import TAPA, ALiBi, NoPE, RoPE, TAPALinearPhase, YaRN

CASES = {
    "nope": lambda backend: NoPE(backend=backend),
    "rope": lambda backend: RoPE(backend=backend),
    "yarn-partial-rotary": lambda backend: YaRN(factor=4.0, original_max_len=8, rotary_fraction=0.5, backend=backend),
    "alibi": lambda backend: ALiBi(backend=backend),
    "tapa": lambda backend: TAPA(alpha=0.5, backend=backend),
    "tapa-learnable-alpha": lambda backend: TAPA(learnable_alpha=True, backend=backend),
    "tapa-linear": lambda backend: TAPALinearPhase(backend=backend),
    "tapa-options": lambda backend: TAPA(backend=backend, phase_offset=0.2, learnable_temperature=True,
                                         phase_norm="rms_gain"),
}


def train_losses(make_pe, backend: str, device: torch.device, steps: int = 3) -> list[float]:
    torch.manual_seed(0)
    model = DecoderLM(40, DecoderConfig(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1), make_pe(backend))
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    tokens = torch.randint(0, 40, (2, 22), generator=torch.Generator().manual_seed(1)).to(device)  # L = 21, odd tail
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", list(CASES))
def test_triton_backend_trains_like_torch_backend(name, device):
    triton_losses = train_losses(CASES[name], "triton", device)
    torch_losses = train_losses(CASES[name], "torch", device)
    assert triton_losses[-1] < triton_losses[0]  # it learns
    assert triton_losses == pytest.approx(torch_losses, rel=1e-4, abs=1e-4)

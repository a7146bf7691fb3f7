"""Phase analysis of a TAPA checkpoint: how far the content-dependent phase turns the cosine over a window.

TAPA's score is ``A_ij cos(reach(d) phi_ij)`` with ``reach(d) = 2 pi d^alpha`` and ``d = i - j``. Position enters only
through ``reach``, and with alpha = 0.1 it varies little: from ``2 pi`` at d = 1 to ``2 pi 127^0.1 = 2 pi x 1.62`` at
d = 127. So the score of a pair can only depend on its distance if its phase phi is large enough for the cosine's
argument to move between the nearest and the farthest key. For each sampled causal pair (distance >= 1) this module
measures, per layer and head:

- the phase ``phi`` itself (after the optional normalisation and temperature: what the kernel uses);
- the **turn** ``|phi| (reach(L - 1) - reach(1))`` in units of pi: how far the cosine's argument moves when the same
  pair is placed at the window's far end instead of adjacent. Below ~0.1 the cosine is flat over the window and the head
  is position-blind (TAPA there behaves like NoPE); at 1 and above the cosine can change sign;
- the **contrast** ``|cos(reach(L - 1) phi) - cos(reach(1) phi)|`` in [0, 2]: how much that move changes the pair's
  score multiplier.

At initialisation phi is the dot product of two small projections, so it is small, and its gradient through the
cosine (``-reach sin(reach phi) ...``) vanishes with it: ``phi = 0`` is a stationary point. Checkpoints taken along
training show how fast the phase leaves it (docs/results/tapa-diagnosis.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from tapa_lab.errors import ConfigError, require
from tapa_lab.eval.bias_trained import analysis_windows, attention_inputs, share
from tapa_lab.model import DecoderLM
from tapa_lab.posenc.tapa import TAPA

TURN_QUANTILES = (0.1, 0.5, 0.9)
SENSITIVE_TURN = 0.5
"""A pair is position-sensitive when its turn over the window is at least pi/2 (0.5 in units of pi)."""
HISTOGRAM_EDGES = np.logspace(-4, 2, 61)
"""Bins of the turn (units of pi) for the figure and results.json: 1e-4 to 1e2, 10 per decade."""


@dataclass
class PhaseConfig:
    """Phase analysis of a TAPA checkpoint (TAPA-family PEs only; see docs/evaluation.md, "Phase analysis")."""

    multiple: float = 1.0
    """Analysis window length as a multiple of the run's training length (1: the training length)."""
    windows: int = 4
    """Windows of the split the pairs are drawn from (evenly spaced over its long documents)."""
    pairs: int = 20000
    """Random causal pairs (distance >= 1) per layer, split over the windows."""
    seed: int = 0
    """Seed of the pair draws."""

    def length_for(self, train_seq_len: int) -> int:
        """The analysis window length."""
        return max(2, round(self.multiple * train_seq_len))

    def validate(self, train_seq_len: int, longest_document: int, model: DecoderLM) -> None:
        """Raise :class:`ConfigError` naming the first bad field, before any evaluation work."""
        posenc = model.layers[0].attn.posenc
        if not isinstance(posenc, TAPA):
            raise ConfigError(f"phase: the phase analysis needs a TAPA-family PE (tapa_lab.posenc.tapa.TAPA and its "
                              f"variants); this run's PE is {type(posenc).__name__}. Drop --phase for this run.")
        require(self.multiple > 0, "phase.multiple", "> 0", self.multiple)
        require(self.windows >= 1, "phase.windows", ">= 1", self.windows)
        require(self.pairs >= self.windows, "phase.pairs", f">= phase.windows = {self.windows}", self.pairs)
        length = self.length_for(train_seq_len)
        if length > longest_document:
            raise ConfigError(f"phase.multiple: the analysis window of {length} tokens is longer than every document "
                              f"of the split (the longest has {longest_document} tokens); lower it.")


def head_summary(phase: np.ndarray, turn: np.ndarray, contrast: np.ndarray) -> dict:
    """Statistics of one head's pairs: ``phase``, ``turn`` (units of pi) and ``contrast``, each ``(n,)``."""
    return {"phase_mean": float(phase.mean()), "phase_std": float(phase.std(ddof=1)),
            "abs_phase_median": float(np.median(np.abs(phase))),
            "turn_quantiles": dict(zip((f"{q:.0%}" for q in TURN_QUANTILES),
                                       np.quantile(turn, TURN_QUANTILES).tolist(), strict=True)),
            "sensitive_fraction": float((turn >= SENSITIVE_TURN).mean()),
            "contrast_mean": float(contrast.mean()),
            "turn_histogram": np.histogram(np.clip(turn, HISTOGRAM_EDGES[0], HISTOGRAM_EDGES[-1]),
                                           bins=HISTOGRAM_EDGES)[0].tolist()}


@torch.inference_mode()
def evaluate_phase(model: DecoderLM, documents: list[np.ndarray], config: PhaseConfig, length: int,
                   device: torch.device, advance: Callable[[int], None]) -> dict:
    """Phase, turn and contrast of random causal pairs, per layer and head.

    Args:
        model: a decoder whose PE is TAPA or a variant (checked by :meth:`PhaseConfig.validate`).
        documents: token arrays of the split's documents.
        config: the analysis settings.
        length: the analysis window length.
        device: where the windows go.
        advance: called with 1 after each window (progress bars).

    Returns:
        The ``phase`` section of results.json (see docs/evaluation.md).
    """
    windows = analysis_windows(documents, length, config.windows, device)
    rng = np.random.default_rng(config.seed)
    n_layers, n_heads = len(model.blocks), model.config.n_heads
    near, far = torch.tensor([1]), torch.tensor([length - 1])
    collected: list[dict[str, list[np.ndarray]]] = [{"phase": [], "turn": [], "contrast": []} for _ in range(n_layers)]
    for index, tokens in enumerate(windows):
        pairs = share(config.pairs, index, len(windows))
        query = torch.from_numpy(rng.integers(1, length, pairs))
        key = torch.from_numpy(np.floor(rng.random(pairs) * query.numpy()).astype(np.int64))  # 0 <= key < query
        for layer, (block, x) in enumerate(zip(model.layers, attention_inputs(model, tokens), strict=True)):
            q, k, _ = block.attn.project_qkv(x)  # (1, H, L, D), (1, Hkv, L, D)
            posenc = block.attn.posenc
            assert isinstance(posenc, TAPA), "PhaseConfig.validate admits TAPA-family PEs only"
            k_heads = k[0].repeat_interleave(n_heads // k.shape[1], dim=0)  # (H, L, D)
            _, phase, _ = posenc.pair_components(q[0], k_heads, query.to(device), key.to(device))
            phase = phase.cpu()  # (H, n)
            reach_near, reach_far = posenc.reach(near).cpu(), posenc.reach(far).cpu()  # (H or 1, 1)
            collected[layer]["phase"].append(phase.numpy())
            collected[layer]["turn"].append((phase.abs() * (reach_far - reach_near) / np.pi).numpy())
            collected[layer]["contrast"].append((torch.cos(reach_far * phase) - torch.cos(reach_near * phase))
                                                .abs().numpy())
        advance(1)
    layers, all_turns, all_contrast = [], [], []
    for layer, values in enumerate(collected):
        phases, turn, contrast = (np.concatenate(values[name], axis=1) for name in ("phase", "turn", "contrast"))
        all_turns.append(turn.ravel())
        all_contrast.append(contrast.ravel())
        heads = [{"head": h, **head_summary(phases[h], turn[h], contrast[h])} for h in range(n_heads)]
        layers.append({"layer": layer, "turn_median": float(np.median(turn)),
                       "sensitive_fraction": float((turn >= SENSITIVE_TURN).mean()),
                       "contrast_mean": float(contrast.mean()), "heads": heads})
    turns, contrasts = np.concatenate(all_turns), np.concatenate(all_contrast)
    return {"length": length, "windows": len(windows), "pairs": config.pairs, "sensitive_turn": SENSITIVE_TURN,
            "turn_histogram_edges": HISTOGRAM_EDGES.tolist(), "turn_median": float(np.median(turns)),
            "sensitive_fraction": float((turns >= SENSITIVE_TURN).mean()),
            "contrast_mean": float(contrasts.mean()), "layers": layers}

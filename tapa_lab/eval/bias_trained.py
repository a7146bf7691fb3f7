"""Distance bias of a trained model (PROTOCOLS.md; the paper's App. I) and a check of its Assumption 2.1.

Score differences. For each layer and head, ``pairs`` draws of a query position i near the end of an evaluation window,
a key at a short distance (``short_range``, e.g. 0-100) and a key at a long distance (the last
``long_range_width`` distances the window allows); the difference is score(short) - score(long) for the same query,
with the scores the model actually computes before the softmax (the PE's own rotation, bias or phase). The paper
measured 4.1 +- 0.85 for RoPE and 0.03 +- 3.3 for TAPA at 7B scale (short [0, 100], long [10000, 10100]).

Moments. With rotary pairs ``(d, d + D/2)`` (the lab's layout) over the whole head, A_d = q_d k_d + q_d' k_d' and
B_d = q_d k_d' - q_d' k_d on the projections before the PE, for random pairs (key j <= query i). Their per-dimension
means and standard deviations by query-position bucket and by distance bucket show whether E[A_d] and E[B_d] are the
same for every dimension and position, as Assumption 2.1 asks. The spread of the cell means, relative to the pooled
per-sample standard deviation, is compared with the noise floor 1/sqrt(samples per cell) expected if it holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from tapa_lab.errors import ConfigError, require
from tapa_lab.eval.perplexity import plan_windows
from tapa_lab.model import DecoderLM
from tapa_lab.posenc import PositionalEncoding

HISTOGRAM_BINS = 60
QUANTILES = ("5%", "25%", "50%", "75%", "95%")


@dataclass
class BiasConfig:
    """Distance-bias analysis of the trained checkpoint (PROTOCOLS.md, "Distance-bias analysis")."""

    multiple: float = 16.0
    """Analysis window length as a multiple of the run's training length."""
    length: int | None = None
    """Absolute analysis window length in tokens; when set, replaces multiple."""
    windows: int = 4
    """Windows of the split the pairs are drawn from (evenly spaced over its long documents)."""
    short_range: tuple[int, int] = (0, 100)
    """Distances of the short-range keys (inclusive), as in the paper's App. I."""
    long_range_width: int = 100
    """The long-range keys sit at the last long_range_width + 1 distances of the window (up to length - 1)."""
    pairs: int = 10000
    """Score pairs per layer and head (split over the windows)."""
    moment_pairs: int = 20000
    """Random (query, key) pairs per layer for the A_d / B_d moments (split over the windows)."""
    position_buckets: int = 8
    """Buckets of query position and of distance for the moments."""
    seed: int = 0
    """Seed of the pair draws."""

    def length_for(self, train_seq_len: int) -> int:
        """The analysis window length."""
        return self.length if self.length is not None else max(1, round(self.multiple * train_seq_len))

    def validate(self, train_seq_len: int, longest_document: int) -> None:
        """Raise :class:`ConfigError` naming the first bad field, before any evaluation work."""
        require(self.length is None or self.length >= 2, "bias.length", "null or >= 2", self.length)
        require(self.multiple > 0, "bias.multiple", "> 0", self.multiple)
        require(self.windows >= 1, "bias.windows", ">= 1", self.windows)
        require(self.pairs >= self.windows and self.moment_pairs >= self.windows, "bias.pairs / bias.moment_pairs",
                f">= bias.windows = {self.windows}", (self.pairs, self.moment_pairs))
        require(self.position_buckets >= 1, "bias.position_buckets", ">= 1", self.position_buckets)
        length = self.length_for(train_seq_len)
        lo, hi = self.short_range
        require(0 <= lo <= hi, "bias.short_range", "(lo, hi) with 0 <= lo <= hi", self.short_range)
        require(self.long_range_width >= 0 and length - 1 - self.long_range_width > hi, "bias.long_range_width",
                f">= 0 and leaving the long range beyond the short range (window {length}, short range up to {hi})",
                self.long_range_width)
        if length > longest_document:
            name = "bias.length" if self.length is not None else "bias.multiple"
            raise ConfigError(f"{name}: the analysis window of {length} tokens is longer than every document of the "
                              f"split (the longest has {longest_document} tokens); lower it.")


def pair_scores(posenc: PositionalEncoding, q: Tensor, k: Tensor, query: Tensor, key: Tensor) -> Tensor:
    """Pre-softmax scores of chosen (query, key) position pairs, per head, as the PE computes them.

    Args:
        posenc: the layer's PE.
        q: ``(H, L, D)`` queries before the PE; k: ``(Hkv, L, D)`` keys before the PE.
        query, key: ``(n,)`` positions (``key <= query``) in a window starting at position 0.

    Returns:
        ``(H, n)`` float64 scores.

    """
    group = q.shape[0] // k.shape[0]
    k = k.repeat_interleave(group, dim=0)  # (H, L, D): head h reads key/value head h // group
    return posenc.pair_scores(q, k, query, key)


def pair_terms(q: Tensor, k: Tensor, query: Tensor, key: Tensor) -> tuple[Tensor, Tensor]:
    """A_d and B_d (TAPA.md section 1, pairs ``(d, d + D/2)``) of chosen pairs, per head.

    Returns:
        ``(A, B)``, each ``(H, n, D/2)`` float64.
    """
    group = q.shape[0] // k.shape[0]
    half = q.shape[-1] // 2
    qs = q[:, query].double()  # (H, n, D)
    ks = k.repeat_interleave(group, dim=0)[:, key].double()
    q1, q2, k1, k2 = qs[..., :half], qs[..., half:2 * half], ks[..., :half], ks[..., half:2 * half]
    return q1 * k1 + q2 * k2, q1 * k2 - q2 * k1


def bucket_moments(values: Tensor, buckets: Tensor, n_buckets: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and standard deviation of ``values (H, n, P)`` per bucket; ``buckets (n,)`` in ``[0, n_buckets)``.

    Returns:
        ``(mean, std, count)``: ``(H, n_buckets, P)``, ``(H, n_buckets, P)`` and ``(n_buckets,)``; empty buckets
        hold NaN.
    """
    h, _, p = values.shape
    count = torch.bincount(buckets, minlength=n_buckets).double()  # (n_buckets,)
    total = torch.zeros(h, n_buckets, p, dtype=torch.float64).index_add_(1, buckets, values)
    total_sq = torch.zeros_like(total).index_add_(1, buckets, values.pow(2))
    mean = total / count[None, :, None]
    bessel = (count / (count - 1))[None, :, None]
    var = (total_sq / count[None, :, None] - mean.pow(2)).clamp_min(0) * bessel
    return mean.numpy(), var.sqrt().numpy(), count.numpy()


def analysis_windows(documents: list[np.ndarray], length: int, windows: int, device: torch.device) -> list[Tensor]:
    """Token windows ``(1, length)`` for the pair analyses (distance bias, phase): up to ``windows`` of them, evenly
    spaced over the documents that hold ``length`` tokens."""
    planned = plan_windows([len(d) for d in documents], length - 1, length, length * windows)
    return [torch.from_numpy(documents[w.document][w.start:w.start + length].astype(np.int64))[None].to(device)
            for w in planned]


def share(total: int, index: int, parts: int) -> int:
    """The ``index``-th of ``parts`` near-equal shares of ``total`` (the shares sum to ``total``)."""
    return total // parts + (index < total % parts)


def attention_inputs(model: DecoderLM, tokens: Tensor) -> list[Tensor]:
    """Run the model on ``tokens (1, L)`` and return each layer's attention input ``(1, L, d)``."""
    captured: list[Tensor] = []
    hooks = [block.attn.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
             for block in model.layers]
    try:
        model(tokens)
    finally:
        for hook in hooks:
            hook.remove()
    return captured


def _spread(mean: np.ndarray, std: np.ndarray, count: np.ndarray) -> dict:
    """Spread of the cell means of one head ``(buckets, P)`` over the pooled std, and the noise floor."""
    filled = count > 1
    cell_means = mean[filled]
    pooled = float(np.sqrt(np.nanmean(std[filled] ** 2)))
    return {"grand_mean": float(np.nanmean(cell_means)), "pooled_std": pooled,
            "relative_spread": float(np.nanstd(cell_means) / pooled) if pooled > 0 else 0.0,
            "noise_floor": float(1 / np.sqrt(count[filled].mean()))}


@torch.inference_mode()
def evaluate_bias(model: DecoderLM, documents: list[np.ndarray], config: BiasConfig, length: int,
                  device: torch.device, advance: Callable[[int], None]) -> dict:
    """Score differences (short minus long range) per layer and head, and the A_d / B_d moments.

    Args:
        model: the decoder (its blocks' attention inputs are captured with hooks).
        documents: token arrays of the split's documents.
        config: the analysis settings.
        length: the analysis window length.
        device: where the windows go.
        advance: called with 1 after each window (progress bars).

    Returns:
        The ``bias`` section of results.json (see docs/evaluation.md).
    """
    windows = analysis_windows(documents, length, config.windows, device)
    rng = np.random.default_rng(config.seed)
    lo, hi = config.short_range
    long_lo = length - 1 - config.long_range_width
    n_layers, n_heads = len(model.blocks), model.config.n_heads
    differences: list[list[list[np.ndarray]]] = [[[] for _ in range(n_heads)] for _ in range(n_layers)]
    terms: list[dict[str, list]] = [{"A": [], "B": [], "position": [], "distance": []} for _ in range(n_layers)]
    for index, tokens in enumerate(windows):
        pairs = share(config.pairs, index, len(windows))
        moment_share = share(config.moment_pairs, index, len(windows))
        long_distance = torch.from_numpy(rng.integers(long_lo, length, pairs))
        query = long_distance + torch.from_numpy(rng.integers(0, length - long_distance.numpy()))
        short_key = query - torch.from_numpy(rng.integers(lo, hi + 1, pairs))
        long_key = query - long_distance
        moment_query = torch.from_numpy(rng.integers(0, length, moment_share))
        moment_key = torch.from_numpy(np.floor(rng.random(moment_share) * (moment_query.numpy() + 1)).astype(np.int64))
        for layer, (block, x) in enumerate(zip(model.layers, attention_inputs(model, tokens), strict=True)):
            q, k, _ = block.attn.project_qkv(x)  # (1, H, L, D), (1, Hkv, L, D)
            posenc = block.attn.posenc
            diff = (pair_scores(posenc, q[0], k[0], query.to(device), short_key.to(device))
                    - pair_scores(posenc, q[0], k[0], query.to(device), long_key.to(device))).cpu().numpy()
            for head in range(n_heads):
                differences[layer][head].append(diff[head])
            a, b = pair_terms(q[0], k[0], moment_query.to(device), moment_key.to(device))
            terms[layer]["A"].append(a.cpu())
            terms[layer]["B"].append(b.cpu())
            terms[layer]["position"].append(moment_query)
            terms[layer]["distance"].append(moment_query - moment_key)
        advance(1)
    position_edges = np.linspace(0, length, config.position_buckets + 1)
    distance_edges = np.unique(np.round(np.geomspace(1, length, config.position_buckets + 1)).astype(np.int64))
    distance_edges[0] = 0
    layers = []
    for layer in range(n_layers):
        values = [np.concatenate(differences[layer][head]) for head in range(n_heads)]
        edges = np.histogram_bin_edges(np.concatenate(values), bins=HISTOGRAM_BINS)
        heads = [{"head": head, "mean": float(v.mean()), "std": float(v.std(ddof=1)),
                  "quantiles": dict(zip(QUANTILES, np.quantile(v, [0.05, 0.25, 0.5, 0.75, 0.95]).tolist(),
                                        strict=True)),
                  "histogram_counts": np.histogram(v, bins=edges)[0].tolist()} for head, v in enumerate(values)]
        a = torch.cat(terms[layer]["A"], dim=1)
        b = torch.cat(terms[layer]["B"], dim=1)
        position = torch.cat(terms[layer]["position"])
        distance = torch.cat(terms[layer]["distance"])
        moments = {}
        for name, coordinate, bucket_edges in (("by_position", position, position_edges),
                                               ("by_distance", distance, distance_edges)):
            bucket = torch.bucketize(coordinate.double(), torch.from_numpy(bucket_edges[1:-1]).double(), right=True)
            n_buckets = len(bucket_edges) - 1
            mean_a, std_a, count = bucket_moments(a, bucket, n_buckets)
            mean_b, std_b, _ = bucket_moments(b, bucket, n_buckets)
            moments[name] = {"bucket_edges": bucket_edges.tolist(), "count": count.tolist(),
                             "mean_A": mean_a.tolist(), "std_A": std_a.tolist(),
                             "mean_B": mean_b.tolist(), "std_B": std_b.tolist(),
                             "assumption_2_1": [{"head": h, "A": _spread(mean_a[h], std_a[h], count),
                                                 "B": _spread(mean_b[h], std_b[h], count)} for h in range(n_heads)]}
        layers.append({"layer": layer, "histogram_edges": edges.tolist(), "heads": heads, "moments": moments})
    return {"length": length, "windows": len(windows), "short_range": list(config.short_range),
            "long_range": [long_lo, length - 1], "pairs": config.pairs, "moment_pairs": config.moment_pairs,
            "layers": layers}

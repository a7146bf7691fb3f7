"""The expected attention score versus distance under the paper's assumptions (TAPA.md sections 1-2), by Monte Carlo.

Random q and k in R^D, independent, with i.i.d. Gaussian noise of standard deviation ``std`` around a mean vector that
is ``q_mean[0]`` on the first coordinate of every rotary pair and ``q_mean[1]`` on the second (likewise k). In the
lab's GPT-NeoX layout the pairs are ``(d, d + D/2)``, so the mean vector is ``[a]*D/2 + [b]*D/2``. Then
E[A_d] = mu0 = a c + b e and E[B_d] = nu0 = a e - b c for every d, position and distance (Assumption 2.1 holds by
construction), and RoPE's expected score has the closed form of TAPA.md section 1:

    E score(lambda) = (1/sqrt D) sum_d (mu0 cos(lambda w_d) + nu0 sin(lambda w_d)),   w_d = base^(-2d/D).

RoPE scores are computed with the lab's own rotation (:class:`~tapa_lab.posenc.RoPE`), so the comparison also checks
the implementation. TAPA's score (amp/sqrt Da) cos(2 pi lambda^alpha phi) has amplitude and phase on disjoint dims, so
E score = E[amp] E[cos(...)]; treating phi = qP.kP/sqrt(Dp) as Gaussian (mean m_phi, variance s_phi^2) gives the
approximation E[amp] cos(2 pi lambda^alpha m_phi) exp(-(2 pi lambda^alpha s_phi)^2 / 2), plotted beside the estimate.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tapa_lab.errors import require
from tapa_lab.eval.plots import save_figure, theory_figure
from tapa_lab.kernels.rope_torch import rotate
from tapa_lab.posenc.rope import RoPE


def mean_vector(pair_mean: tuple[float, float], head_dim: int) -> Tensor:
    """``[a]*D/2 + [b]*D/2``, float64 ``(D,)``: every rotary pair ``(d, d + D/2)`` has mean ``(a, b)``."""
    half = head_dim // 2
    return torch.tensor([pair_mean[0]] * half + [pair_mean[1]] * half, dtype=torch.float64)


def distance_grid(max_distance: int, points: int) -> Tensor:
    """0 and about ``points`` geometrically spaced integer distances up to ``max_distance``, int64 ``(n,)``."""
    grid = np.unique(np.round(np.geomspace(1, max_distance, points)).astype(np.int64))
    return torch.from_numpy(np.concatenate([[0], grid]))


def rope_closed_form(distances: Tensor, inv_freq: Tensor, mu0: float, nu0: float, head_dim: int) -> Tensor:
    """TAPA.md section 1: ``(1/sqrt D) sum_d (mu0 cos(lambda w_d) + nu0 sin(lambda w_d))``, float64 ``(n,)``."""
    angles = distances.double()[:, None] * inv_freq.double()[None, :]  # (n, D/2)
    return (mu0 * angles.cos() + nu0 * angles.sin()).sum(-1) / math.sqrt(head_dim)


def _sample(mean: Tensor, std: float, samples: int, generator: torch.Generator) -> Tensor:
    return mean[None, :] + std * torch.randn(samples, mean.numel(), dtype=torch.float64, generator=generator)


def rope_monte_carlo(rope: RoPE, distances: Tensor, q_mean: Tensor, k_mean: Tensor, std: float, samples: int,
                     generator: torch.Generator, chunk: int = 128) -> tuple[Tensor, Tensor]:
    """Mean and standard error of the RoPE score q_m . k_n / sqrt(D) over random (q, k), query ``lambda`` after key.

    Args:
        rope: a bound RoPE (full rotary dimension, ``rope.head_dim == D``).
        distances: ``(n,)`` distances lambda.
        q_mean, k_mean: ``(D,)`` mean vectors.
        std: noise standard deviation of every coordinate.
        samples: (q, k) draws.
        generator: the random source.
        chunk: draws per block (memory ``chunk x n x D``).

    Returns:
        ``(mean, standard_error)``, each float64 ``(n,)``.
    """
    cos, sin = rope.cos_sin(distances)  # queries at position lambda, keys at 0 (RoPE depends on m - n only)
    total = torch.zeros(len(distances), dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for first in range(0, samples, chunk):
        n = min(chunk, samples - first)
        q, k = _sample(q_mean, std, n, generator), _sample(k_mean, std, n, generator)
        q_rot = rotate(q[:, None, None, :].expand(n, 1, len(distances), -1), cos, sin)  # (n, 1, n_dist, D)
        scores = (q_rot[:, 0] * k[:, None, :]).sum(-1) * rope.softmax_scale  # (n, n_dist)
        total += scores.sum(0)
        total_sq += scores.pow(2).sum(0)
    mean = total / samples
    return mean, ((total_sq / samples - mean.pow(2)).clamp_min(0) / (samples - 1)).sqrt()


def tapa_monte_carlo(alpha: float, theta: float, distances: Tensor, q_mean: Tensor, k_mean: Tensor, std: float,
                     samples: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Mean and standard error of the TAPA score (TAPA.md eq. 12, with 2 pi) over random (q, k), and the
    Gaussian-phase approximation of the expectation.

    Returns:
        ``(mean, standard_error, gaussian_phase)``, each float64 ``(n,)``.
    """
    head_dim = q_mean.numel()
    da = round(theta * head_dim)
    require(1 <= da <= head_dim - 1, "tapa_thetas", f"values with round(theta * {head_dim}) in [1, {head_dim - 1}]",
            theta)
    dp = head_dim - da
    q, k = _sample(q_mean, std, samples, generator), _sample(k_mean, std, samples, generator)
    amp = (q[:, :da] * k[:, :da]).sum(-1) / math.sqrt(da)  # (N,)
    phi = (q[:, da:] * k[:, da:]).sum(-1) / math.sqrt(dp)  # (N,)
    reach = 2 * math.pi * distances.double().pow(alpha)  # (n,); 0^alpha = 0 on the diagonal
    scores = amp[:, None] * torch.cos(reach[None, :] * phi[:, None])  # (N, n)
    mq, mk = q_mean[da:], k_mean[da:]
    phi_mean = float((mq * mk).sum()) / math.sqrt(dp)
    phi_var = float((std**2 * (mq.pow(2) + mk.pow(2)) + std**4).sum()) / dp
    amp_mean = float((q_mean[:da] * k_mean[:da]).sum()) / math.sqrt(da)
    gaussian = amp_mean * torch.cos(reach * phi_mean) * torch.exp(-(reach**2) * phi_var / 2)
    return scores.mean(0), scores.std(0) / math.sqrt(samples), gaussian


def bias_theory(out_dir: str = "checkpoints/bias-theory", head_dim: int = 64, max_distance: int = 16384,
                points: int = 256, samples: int = 4000, rope_bases: list[float] | None = None,
                tapa_alphas: list[float] | None = None, tapa_thetas: list[float] | None = None,
                q_mean: tuple[float, float] = (1.0, 0.0), k_mean: tuple[float, float] = (1.0, 0.5),
                std: float = 1.0, seed: int = 0) -> dict:
    """Monte Carlo expected score versus distance for RoPE and TAPA under the paper's assumptions, with the closed
    forms; writes ``bias_theory.json`` and ``bias_theory.png`` into ``out_dir`` (no run needed).

    Args:
        out_dir: output folder.
        head_dim: head dimension D (even).
        max_distance: the largest distance lambda.
        points: about this many geometrically spaced distances (plus 0).
        samples: random (q, k) draws per curve.
        rope_bases: RoPE bases to compare; null means [1e4, 5e5].
        tapa_alphas: TAPA distance exponents; null means [0.1, 0.5].
        tapa_thetas: TAPA amplitude fractions; null means [0.5].
        q_mean: mean (a, b) of the two coordinates of every rotary pair of q.
        k_mean: mean (c, e) of the two coordinates of every rotary pair of k.
        std: noise standard deviation of every coordinate of q and k (> 0).
        seed: random seed.

    Returns:
        The JSON written: distances, and per curve the Monte Carlo mean, standard error and theory.
    """
    rope_bases = rope_bases if rope_bases is not None else [1e4, 5e5]
    tapa_alphas = tapa_alphas if tapa_alphas is not None else [0.1, 0.5]
    tapa_thetas = tapa_thetas if tapa_thetas is not None else [0.5]
    require(head_dim >= 2 and head_dim % 2 == 0, "head_dim", "even and >= 2", head_dim)
    require(max_distance >= 1, "max_distance", ">= 1", max_distance)
    require(points >= 2, "points", ">= 2", points)
    require(samples >= 2, "samples", ">= 2", samples)
    require(std > 0, "std", "> 0", std)
    generator = torch.Generator().manual_seed(seed)
    distances = distance_grid(max_distance, points)
    qm, km = mean_vector(q_mean, head_dim), mean_vector(k_mean, head_dim)
    mu0 = q_mean[0] * k_mean[0] + q_mean[1] * k_mean[1]
    nu0 = q_mean[0] * k_mean[1] - q_mean[1] * k_mean[0]
    curves = []
    for base in rope_bases:
        rope = RoPE(base=base)
        rope.bind(1, 1, head_dim)
        mean, se = rope_monte_carlo(rope, distances, qm, km, std, samples, generator)
        theory = rope_closed_form(distances, rope.inv_freq(), mu0, nu0, head_dim)
        curves.append({"pe": "RoPE", "base": base, "mean": mean.tolist(), "standard_error": se.tolist(),
                       "theory": theory.tolist(), "theory_name": "closed form (TAPA.md section 1)"})
    for alpha in tapa_alphas:
        for theta in tapa_thetas:
            mean, se, gaussian = tapa_monte_carlo(alpha, theta, distances, qm, km, std, samples, generator)
            curves.append({"pe": "TAPA", "alpha": alpha, "theta": theta, "mean": mean.tolist(),
                           "standard_error": se.tolist(), "theory": gaussian.tolist(),
                           "theory_name": "Gaussian-phase approximation",
                           "decay_exponent": alpha * (1 - theta) * head_dim})
    result = {"head_dim": head_dim, "samples": samples, "std": std, "q_mean": list(q_mean), "k_mean": list(k_mean),
              "mu0": mu0, "nu0": nu0, "seed": seed, "distances": distances.tolist(), "curves": curves}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bias_theory.json").write_text(json.dumps(result, indent=1))
    save_figure(theory_figure(result), out / "bias_theory.png")
    return result

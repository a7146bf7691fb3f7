"""Figures of the evaluation results; each function takes the JSON section it plots and returns a Figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as ticker  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def save_figure(figure: Figure, path: Path) -> None:
    """Write ``figure`` as a PNG (the figure stays open, e.g. for TensorBoard)."""
    figure.savefig(path, dpi=120, bbox_inches="tight")


def perplexity_figure(rows: list[dict], train_seq_len: int) -> Figure:
    """Perplexity versus evaluation length (log-log), the training length marked."""
    figure, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    ax.plot([r["length"] for r in rows], [r["perplexity"] for r in rows], marker="o")
    ax.axvline(train_seq_len, color="grey", linestyle=":", label=f"training length {train_seq_len}")
    lengths = [r["length"] for r in rows]
    ax.set(xscale="log", yscale="log", xlabel="evaluation length (tokens)", ylabel="perplexity",
           title=f"Perplexity by length ({rows[0]['mode']})")
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.yaxis.set_major_formatter(ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(ticker.ScalarFormatter())
    ax.legend()
    return figure


def position_loss_figure(curves: list[dict], train_seq_len: int) -> Figure:
    """Mean loss by position bucket, one line per evaluation length."""
    figure, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for curve in curves:
        edges = np.asarray(curve["bucket_edges"])
        ax.plot((edges[:-1] + edges[1:]) / 2, curve["loss"], marker=".", label=f"L = {curve['length']}")
    ax.axvline(train_seq_len, color="grey", linestyle=":", label="training length")
    ax.set(xscale="log", xlabel="position in window (bucket centre)", ylabel="mean NLL (nats)",
           title="Loss by position")
    ax.legend(fontsize="small")
    return figure


def passkey_figure(passkey: dict) -> Figure:
    """Accuracy heatmap: depth (rows) by length (columns)."""
    accuracy = np.asarray(passkey["accuracy"]).T  # (depths, lengths)
    figure, ax = plt.subplots(figsize=(1.2 * len(passkey["lengths"]) + 2, 0.6 * len(passkey["depths"]) + 1.5),
                              layout="constrained")
    image = ax.imshow(accuracy, vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="lower")
    ax.set_xticks(range(len(passkey["lengths"])), [str(n) for n in passkey["lengths"]])
    ax.set_yticks(range(len(passkey["depths"])), [f"{d:g}%" for d in passkey["depths"]])
    for (row, col), value in np.ndenumerate(accuracy):
        ax.text(col, row, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.5 else "black")
    ax.set(xlabel="prompt length (tokens)", ylabel="key depth",
           title=f"Passkey accuracy (mean {passkey['mean_accuracy']:.2f}, {passkey['trials']} trials/cell)")
    figure.colorbar(image, ax=ax)
    return figure


def bias_figure(bias: dict) -> Figure:
    """Histograms of score(short range) - score(long range), one panel per layer, one line per head."""
    layers = bias["layers"]
    figure, axes = plt.subplots(1, len(layers), figsize=(4 * len(layers), 3.5), squeeze=False,
                               layout="constrained")
    for ax, layer in zip(axes[0], layers, strict=True):
        edges = np.asarray(layer["histogram_edges"])
        for head in layer["heads"]:
            ax.stairs(head["histogram_counts"], edges, label=f"h{head['head']} ({head['mean']:+.2f})")
        ax.axvline(0, color="grey", linestyle=":")
        ax.set(title=f"layer {layer['layer']}", xlabel="score(short) - score(long)")
        ax.legend(fontsize="x-small")
    figure.suptitle(f"Distance bias: short {bias['short_range']} vs long {bias['long_range']} (window "
                    f"{bias['length']})")
    return figure


def moments_figure(bias: dict) -> Figure:
    """Mean A_d and B_d (averaged over heads) by dimension, one line per query-position bucket, per layer."""
    layers = bias["layers"]
    figure, axes = plt.subplots(2, len(layers), figsize=(max(6, 4 * len(layers)), 6), squeeze=False,
                               layout="constrained")
    for col, layer in enumerate(layers):
        moments = layer["moments"]["by_position"]
        edges = moments["bucket_edges"]
        for row, name in enumerate(("A", "B")):
            mean = np.nanmean(np.asarray(moments[f"mean_{name}"], dtype=float), axis=0)  # (buckets, D/2)
            for bucket, values in enumerate(mean):
                axes[row, col].plot(values, label=f"pos {edges[bucket]:.0f}-{edges[bucket + 1]:.0f}")
            axes[row, col].set(title=f"layer {layer['layer']}: E[{name}_d] by position", xlabel="pair d")
        axes[0, col].legend(fontsize="xx-small")
    figure.suptitle("Assumption 2.1: equal lines and flat curves mean E[A_d], E[B_d] do not depend on d or position")
    return figure


def theory_figure(result: dict) -> Figure:
    """Monte Carlo expected score versus distance (band: +-2 standard errors) and the theory (dashed)."""
    distances = np.asarray(result["distances"])
    figure, axes = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
    for curve in result["curves"]:
        is_rope = curve["pe"] == "RoPE"
        label = f"base {curve['base']:g}" if is_rope else f"alpha {curve['alpha']:g}, theta {curve['theta']:g}"
        ax = axes[0] if is_rope else axes[1]
        mean, se = np.asarray(curve["mean"]), np.asarray(curve["standard_error"])
        (line,) = ax.plot(distances, mean, label=f"{label} (Monte Carlo)")
        ax.fill_between(distances, mean - 2 * se, mean + 2 * se, color=line.get_color(), alpha=0.25)
        ax.plot(distances, curve["theory"], linestyle="--", color=line.get_color(),
                label=f"{label} ({curve['theory_name']})")
    for ax, name in zip(axes, ("RoPE", "TAPA"), strict=True):
        ax.set(xscale="symlog", xlabel="distance m - n", ylabel="expected score", title=f"{name} distance bias")
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.legend(fontsize="x-small")
    figure.suptitle(f"D = {result['head_dim']}, mu0 = {result['mu0']:g}, nu0 = {result['nu0']:g}, "
                    f"{result['samples']} samples")
    return figure


def phase_figure(phase: dict) -> Figure:
    """Histograms of the phase turn over the window (units of pi, log scale), one panel per layer, one line per head."""
    layers = phase["layers"]
    edges = np.asarray(phase["turn_histogram_edges"])
    figure, axes = plt.subplots(1, len(layers), figsize=(4 * len(layers), 3.5), squeeze=False,
                               layout="constrained")
    for ax, layer in zip(axes[0], layers, strict=True):
        for head in layer["heads"]:
            ax.stairs(head["turn_histogram"], edges,
                      label=f"h{head['head']} (median {head['turn_quantiles']['50%']:.2g})")
        ax.axvline(phase["sensitive_turn"], color="grey", linestyle=":")
        ax.set(xscale="log", title=f"layer {layer['layer']}: {layer['sensitive_fraction']:.0%} pairs >= "
               f"{phase['sensitive_turn']:g} pi", xlabel="turn over the window (units of pi)")
        ax.legend(fontsize="x-small")
    figure.suptitle(f"TAPA phase turn |phi| (reach(L-1) - reach(1)), window {phase['length']}: below the dotted line "
                    "the cosine barely moves with distance")
    return figure

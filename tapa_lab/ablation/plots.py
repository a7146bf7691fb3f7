"""Report figures: perplexity against evaluation length and validation loss over training, with confidence bands, and
passkey heatmaps."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from tapa_lab.ablation.stats import summarize  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.typing import ColorType

MARKERS = "osD^vP*Xh<>p"
LEGEND_INSIDE_MAX = 6
"""Legends with more entries go to the right of the axes, so they never hide a curve."""


def line_styles(n: int) -> list[tuple[ColorType, str, str]]:
    """``n`` distinct ``(color, marker, linestyle)``: tab10 colours up to 10 lines, tab20 up to 20, then dashed and
    dotted lines; the marker changes with every line, so two curves never look alike."""
    colors = matplotlib.color_sequences["tab10" if n <= 10 else "tab20"]  # the colours of the tab10/tab20 colormaps
    return [(colors[i % len(colors)], MARKERS[i % len(MARKERS)], ("-", "--", ":")[(i // len(colors)) % 3])
            for i in range(n)]


def plot_perplexity_vs_length(curves: dict[str, dict[int, list[float]]], train_len: int | None, title: str,
                              path: Path) -> Path:
    """Perplexity by evaluation length, one line per cell: the geometric mean over seeds, with a band at the 95% t
    interval of the mean log-perplexity (the NLL; an interval on raw perplexities can go below zero).

    Args:
        curves: ``{cell label: {length: [perplexity of each seed]}}``.
        train_len: the training length, marked by a vertical line (``None``: no line).
        title: the figure title.
        path: the PNG to write.
    """
    outside = len(curves) > LEGEND_INSIDE_MAX
    figure, axis = plt.subplots(figsize=(10.5 if outside else 7.5, 5.2 if outside else 4.8))
    band_alpha = 0.08 if outside else 0.2  # many overlapping bands: lighter
    for (label, by_length), (color, marker, style) in zip(curves.items(), line_styles(len(curves)), strict=True):
        lengths = sorted(by_length)
        summaries = [summarize(np.log(by_length[length])) for length in lengths]
        axis.plot(lengths, [np.exp(s.mean) for s in summaries], color=color, marker=marker, linestyle=style,
                  label=label)
        if all(s.n > 1 for s in summaries):
            axis.fill_between(lengths, [np.exp(s.ci_low) for s in summaries], [np.exp(s.ci_high) for s in summaries],
                              color=color, alpha=band_alpha, linewidth=0)
    if train_len is not None:
        axis.axvline(train_len, color="grey", linestyle=":", linewidth=1, label="training length")
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    all_lengths = sorted({length for by_length in curves.values() for length in by_length})
    axis.set_xticks(all_lengths, [str(length) for length in all_lengths])
    axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_xlabel("evaluation length (tokens)")
    axis.set_ylabel("perplexity (geometric mean over seeds, 95% CI)")
    axis.set_title(title)
    axis.grid(True, which="both", alpha=0.3)
    if outside:
        axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_learning_curves(curves: dict[str, dict[str, dict[int, list[float]]]], title: str, path: Path) -> Path:
    """Validation loss over training, one panel per tag (``val/loss@1x``, ``val/loss@16x``, ...) side by side, one line
    per cell: the mean over seeds with a band at the 95% t interval of the mean (where every step has 2+ seeds).

    Args:
        curves: ``{tag: {cell label: {step: [value of each seed]}}}``; every tag's cells get the same style.
        title: the figure title.
        path: the PNG to write.
    """
    labels = list(dict.fromkeys(label for by_label in curves.values() for label in by_label))
    styles = dict(zip(labels, line_styles(len(labels)), strict=True))
    outside = len(labels) > LEGEND_INSIDE_MAX
    figure, axes = plt.subplots(1, len(curves), figsize=(5.2 * len(curves) + (3 if outside else 0), 4.4),
                                squeeze=False)
    band_alpha = 0.08 if outside else 0.2
    for axis, (tag, by_label) in zip(axes[0], curves.items(), strict=True):
        for label, by_step in by_label.items():
            color, marker, style = styles[label]
            steps = sorted(by_step)
            summaries = [summarize(by_step[step]) for step in steps]
            axis.plot(steps, [s.mean for s in summaries], color=color, marker=marker, linestyle=style, label=label,
                      markersize=4, markevery=max(1, len(steps) // 10))
            if all(s.n > 1 for s in summaries):
                axis.fill_between(steps, [s.ci_low for s in summaries], [s.ci_high for s in summaries], color=color,
                                  alpha=band_alpha, linewidth=0)
        axis.set_xlabel("optimizer steps")
        axis.set_ylabel(f"{tag} (mean over seeds, 95% CI)")
        axis.set_title(tag)
        axis.grid(True, alpha=0.3)
    if outside:
        axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        axes[0][0].legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_passkey_heatmaps(grids: dict[str, tuple[list[int], list[float], np.ndarray]], title: str, path: Path) -> Path:
    """One heatmap per cell of passkey accuracy (mean over seeds) by context length and key depth.

    Args:
        grids: ``{cell label: (lengths, depths, accuracy (len(lengths), len(depths)))}``.
        title: the figure title.
        path: the PNG to write.
    """
    count = len(grids)
    columns = min(3, count)
    rows = -(-count // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.4 * columns + 1, 3.6 * rows), squeeze=False,
                                layout="constrained")
    image = None
    for axis, (label, (lengths, depths, accuracy)) in zip(axes.flat, grids.items(), strict=False):
        image = axis.imshow(accuracy.T, vmin=0, vmax=1, cmap="viridis", origin="lower", aspect="auto")
        axis.set_xticks(range(len(lengths)), [str(length) for length in lengths], fontsize=7)
        axis.set_yticks(range(len(depths)), [f"{depth:.0%}" for depth in depths], fontsize=7)
        axis.set_xlabel("context length")
        axis.set_ylabel("key depth")
        axis.set_title(label, fontsize=9)
        for i in range(len(lengths)):
            for j in range(len(depths)):
                axis.text(i, j, f"{accuracy[i, j]:.2f}", ha="center", va="center", fontsize=6,
                          color="white" if accuracy[i, j] < 0.5 else "black")
    for axis in list(axes.flat)[count:]:
        axis.axis("off")
    if image is not None:
        figure.colorbar(image, ax=axes, shrink=0.8, label="accuracy")
    figure.suptitle(title)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path

"""How the grid report writes numbers: a summary over seeds, a number, a p-value, and which values are numbers."""

from __future__ import annotations

import math
from typing import Any

from tapa_lab.ablation.stats import summarize


def format_summary(values: list[float]) -> str:
    """``mean ± sd [95% t interval]`` over seeds; ``mean (1 seed)`` for one value; ``-`` for none."""
    if not values:
        return "-"
    summary = summarize(values)
    if summary.n == 1:
        return f"{format_number(summary.mean)} (1 seed)"
    return (f"{format_number(summary.mean)} ± {summary.std:.2g} [{format_number(summary.ci_low)}, "
            f"{format_number(summary.ci_high)}]")


def format_number(value: float) -> str:
    """Four significant digits (scientific from 1e5), ``nan`` when not finite."""
    if not math.isfinite(value):
        return "nan"
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"


def format_p(value: float) -> str:
    """A p-value: three significant digits, scientific below 1e-4, ``nan`` when not finite."""
    return "nan" if not math.isfinite(value) else (f"{value:.3g}" if value >= 1e-4 else f"{value:.1e}")


def is_finite(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (metrics may be missing, None or NaN)."""
    return isinstance(value, int | float) and math.isfinite(value)

"""Statistics over seeds (PROTOCOLS.md): summaries with t confidence intervals, and paired tests against a baseline."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

#: Fewest pairs for which the Wilcoxon signed-rank test is reported: with n pairs its smallest two-sided exact p-value
#: is 2 / 2^n, so below 6 pairs it can never reach 0.05.
WILCOXON_MIN_PAIRS = 6


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and a t-distribution confidence interval of the mean.

    Attributes:
        n: number of values (seeds).
        mean: sample mean.
        std: sample standard deviation (ddof 1; ``nan`` for n = 1).
        ci_low: lower end of the confidence interval (``nan`` for n = 1).
        ci_high: upper end.
    """

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float

    @property
    def half_width(self) -> float:
        """Half the confidence interval's width."""
        return (self.ci_high - self.ci_low) / 2


@dataclass(frozen=True)
class PairedTest:
    """A paired comparison of a candidate against a baseline over the same seeds.

    Attributes:
        n: number of pairs.
        mean_diff: mean of candidate - baseline.
        t_pvalue: two-sided p-value of the paired t-test (``nan`` for n < 2 or zero spread).
        wilcoxon_pvalue: two-sided exact p-value of the Wilcoxon signed-rank test, or ``None`` below
            :data:`WILCOXON_MIN_PAIRS` pairs.
        cohens_dz: effect size d_z = mean(diff) / sd(diff) (``nan`` when sd is 0 or n < 2).
    """

    n: int
    mean_diff: float
    t_pvalue: float
    wilcoxon_pvalue: float | None
    cohens_dz: float


def summarize(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Summary:
    """Mean, standard deviation and the ``confidence`` t interval ``mean +- t_{n-1} * sd / sqrt(n)``."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("summarize: no values")
    mean = float(x.mean())
    if x.size == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1)) * std / math.sqrt(x.size)
    return Summary(int(x.size), mean, std, mean - half, mean + half)


def paired_test(candidate: Sequence[float], baseline: Sequence[float]) -> PairedTest:
    """Paired t-test (and Wilcoxon signed-rank with enough pairs) of ``candidate`` against ``baseline``.

    Args:
        candidate: one value per seed.
        baseline: the baseline's value for the same seeds, in the same order.
    """
    a, b = np.asarray(candidate, dtype=float), np.asarray(baseline, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired_test: {a.size} candidate values but {b.size} baseline values")
    diff = a - b
    n = int(diff.size)
    mean_diff = float(diff.mean()) if n else math.nan
    sd = float(diff.std(ddof=1)) if n >= 2 else math.nan
    if n < 2 or sd == 0:
        return PairedTest(n, mean_diff, math.nan, None, math.nan)
    t_pvalue = float(stats.ttest_rel(a, b).pvalue)
    wilcoxon = float(stats.wilcoxon(a, b, method="exact").pvalue) if n >= WILCOXON_MIN_PAIRS else None
    return PairedTest(n, mean_diff, t_pvalue, wilcoxon, mean_diff / sd)

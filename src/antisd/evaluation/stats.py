"""Statistics of a pre-registered comparison (stdlib only): the primary metric, paired intervals, multiplicity,
and the number of seeds a target precision needs.

- :func:`curve_auc`: area under a held-out accuracy curve, as the mean of the accuracy over its evaluation points.
- :func:`t_quantile`: Student-t quantiles (regularised incomplete beta, inverted by bisection).
- :func:`paired_interval`: mean paired difference with a t-interval at a Bonferroni-corrected level, and the
  two-sided p-value of the paired t-test.
- :func:`holm`: Holm's step-down adjustment of p-values (controls the family-wise error rate).
- :func:`seeds_for_halfwidth`: seeds needed so the paired interval's half-width is at most a target, from the
  seed-to-seed standard deviation of a pilot (the paired SD taken as √2 × the pilot SD: no credit for the
  correlation between variants of the same seed, which the pilot cannot measure).
"""

from __future__ import annotations

import math
import statistics
from typing import Sequence


def curve_auc(curve: dict[int, float]) -> float:
    """Mean accuracy over the evaluation points of ``{step: accuracy}`` (equally spaced points: the normalised
    area under the curve)."""
    if not curve:
        raise ValueError("an empty curve has no area")
    return statistics.fmean(curve.values())


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t (0 < p < 1)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"quantile level {p} is not in (0, 1)")
    lo, hi = -1e4, 1e4
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return 0.5 * (lo + hi)


def paired_interval(deltas: Sequence[float], level: float = 0.95, comparisons: int = 1) -> dict:
    """Mean of paired differences, its t-interval half-width at the Bonferroni level 1 − (1 − level)/comparisons,
    and the two-sided paired-t p-value (unadjusted; adjust the family with :func:`holm`)."""
    n = len(deltas)
    if n < 2:
        raise ValueError(f"a paired interval needs at least 2 pairs, got {n}")
    mean, sd = statistics.fmean(deltas), statistics.stdev(deltas)
    alpha = (1.0 - level) / comparisons
    half = t_quantile(1.0 - alpha / 2.0, n - 1) * sd / math.sqrt(n)
    p = 1.0 if sd == 0 and mean == 0 else 0.0 if sd == 0 else 2.0 * (1.0 - t_cdf(abs(mean) / (sd / math.sqrt(n)), n - 1))
    return {"mean": mean, "halfwidth": half, "low": mean - half, "high": mean + half, "p": p, "n": n, "level": 1.0 - alpha}


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm-adjusted p-values: the k-th smallest of m is multiplied by (m − k + 1), then made monotone."""
    ordered = sorted(p_values.items(), key=lambda kv: kv[1])
    m, running, adjusted = len(ordered), 0.0, {}
    for k, (name, p) in enumerate(ordered):
        running = max(running, min(1.0, (m - k) * p))
        adjusted[name] = running
    return adjusted


def seeds_for_halfwidth(pilot: Sequence[float], halfwidth: float, comparisons: int = 1, level: float = 0.95, minimum: int = 8) -> dict:
    """Seeds n so that t(1 − α/2m, n−1) · √2·s / √n ≤ ``halfwidth``, s the SD of the pilot's per-seed metric."""
    if len(pilot) < 2:
        raise ValueError(f"the pilot needs at least 2 seeds to estimate a standard deviation, got {len(pilot)}")
    sd_paired = math.sqrt(2.0) * statistics.stdev(pilot)
    alpha = (1.0 - level) / comparisons
    n = 2
    while t_quantile(1.0 - alpha / 2.0, n - 1) * sd_paired / math.sqrt(n) > halfwidth:
        n += 1
        if n > 100_000:
            raise ValueError(f"a half-width of {halfwidth} needs more than 100000 seeds at pilot SD {statistics.stdev(pilot):.4g}")
    return {"seeds": max(n, minimum), "needed": n, "pilot_sd": statistics.stdev(pilot), "paired_sd": sd_paired, "pilot_seeds": len(pilot)}

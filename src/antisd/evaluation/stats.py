"""Statistics of a pre-registered comparison (stdlib only): the primary metric, paired intervals, multiplicity,
and the number of seeds a target precision needs.

- :func:`curve_auc`: area under a held-out accuracy curve, as the mean of the accuracy over its evaluation points.
- :func:`t_quantile`: Student-t quantiles (regularised incomplete beta, inverted by bisection).
- :func:`paired_interval`: mean paired difference with a t-interval at a Bonferroni-corrected level, and the
  two-sided p-value of the paired t-test.
- :func:`holm`: Holm's step-down adjustment of p-values (controls the family-wise error rate).
- :func:`fisher_exact`: Fisher's exact test on two rates (e.g. runaway seeds of a variant against the baseline's).
- :func:`exact_trend_test`: exact one-sided Cochran–Armitage test of a rate increasing with a score (e.g.
  collapse rate with the dose), one test where per-dose Fisher tests lack power at a few seeds each.
- :func:`wilson_interval`, :func:`rate_difference_interval`: score interval of a rate, and Newcombe's hybrid score
  interval of a difference of two independent rates (the interval reported beside Fisher's p).
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


def _hypergeom_pmf(k: int, events: int, n1: int, n2: int) -> float:
    """P(X = k): k of the ``events`` fall in the first group (size n1) when they are spread over n1 + n2 at random."""
    return math.comb(n1, k) * math.comb(n2, events - k) / math.comb(n1 + n2, events)


def fisher_exact(a: int, n1: int, b: int, n2: int, alternative: str = "two-sided") -> float:
    """Fisher's exact p-value for ``a`` events in ``n1`` trials against ``b`` in ``n2`` (margins fixed).

    ``alternative``: 'greater' (the first rate is higher: P(X ≥ a)), 'less' (P(X ≤ a)) or 'two-sided' (the sum of
    the probabilities of the tables no more likely than the observed one, as R and SciPy define it)."""
    if not (0 <= a <= n1 and 0 <= b <= n2) or n1 < 1 or n2 < 1:
        raise ValueError(f"counts must satisfy 0 ≤ a ≤ n1, 0 ≤ b ≤ n2 with n1, n2 ≥ 1; got a={a}, n1={n1}, b={b}, n2={n2}")
    events = a + b
    support = range(max(0, events - n2), min(n1, events) + 1)
    pmf = {k: _hypergeom_pmf(k, events, n1, n2) for k in support}
    if alternative == "greater":
        return min(1.0, sum(p for k, p in pmf.items() if k >= a))
    if alternative == "less":
        return min(1.0, sum(p for k, p in pmf.items() if k <= a))
    if alternative != "two-sided":
        raise ValueError(f"alternative must be 'two-sided', 'greater' or 'less', got {alternative!r}")
    return min(1.0, sum(p for p in pmf.values() if p <= pmf[a] * (1 + 1e-7)))



def exact_trend_test(groups: Sequence[tuple[int, int, int]]) -> float:
    """One-sided exact Cochran–Armitage trend test: is the event rate increasing in the groups' scores?

    ``groups``: (integer score, events, trials) per group, e.g. (dose rank, collapsed seeds, seeds). The statistic
    T = Σ score·events; under H0 (one rate for all) the events are spread over the trials at random with the total
    fixed, so (events per group) is multivariate hypergeometric and p = P(T ≥ t_observed), computed exactly by
    convolving the groups. With two groups scored 0 and 1 it is Fisher's one-sided test ('greater' for the second)."""
    if len(groups) < 2 or any(n < 1 or not 0 <= x <= n for _, x, n in groups):
        raise ValueError(f"need at least two groups of (score, events, trials) with 0 ≤ events ≤ trials, trials ≥ 1; got {list(groups)}")
    total_events, total_trials = sum(x for _, x, _ in groups), sum(n for _, _, n in groups)
    observed = sum(score * x for score, x, _ in groups)
    ways = {(0, 0): 1}  # (events so far, T so far) → number of ways to place them among the groups seen
    for score, _, n in groups:
        step = {}
        for (k, t), w in ways.items():
            for x in range(min(n, total_events - k) + 1):
                key = (k + x, t + score * x)
                step[key] = step.get(key, 0) + w * math.comb(n, x)
        ways = step
    tail = sum(w for (k, t), w in ways.items() if k == total_events and t >= observed)
    return min(1.0, tail / math.comb(total_trials, total_events))

def _z(level: float) -> float:
    """Standard normal quantile 1 − (1 − level)/2, by bisection on erf (stdlib only)."""
    target, lo, hi = 1.0 - (1.0 - level) / 2.0, 0.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if 0.5 * (1.0 + math.erf(mid / math.sqrt(2.0))) < target else (lo, mid)
    return (lo + hi) / 2.0


def wilson_interval(events: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval of the rate events/n (stays inside [0, 1] and is not degenerate at 0 or n events)."""
    if n < 1 or not 0 <= events <= n:
        raise ValueError(f"need 0 ≤ events ≤ n and n ≥ 1, got events={events}, n={n}")
    z, p = _z(level), events / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_difference_interval(a: int, n1: int, b: int, n2: int, level: float = 0.95) -> dict:
    """a/n1 − b/n2 with Newcombe's hybrid score interval (his method 10: Wilson limits of each rate combined)."""
    p1, p2 = a / n1, b / n2
    l1, u1 = wilson_interval(a, n1, level)
    l2, u2 = wilson_interval(b, n2, level)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return {"difference": d, "low": low, "high": high, "level": level}

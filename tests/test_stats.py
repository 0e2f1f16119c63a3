"""antisd.evaluation.stats and the comparison's primary metric, intervals, multiplicity and seed plan, on hand-made curves."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from antisd.evaluation import stats
from antisd.commands import compare
from tests.test_compare import _write_run


@pytest.mark.parametrize(("p", "df", "expected"), [(0.975, 1, 12.7062), (0.975, 3, 3.1824), (0.975, 7, 2.3646), (0.995, 10, 3.1693), (0.95, 30, 1.6973)])
def test_t_quantiles_match_published_tables(p, df, expected):
    assert stats.t_quantile(p, df) == pytest.approx(expected, abs=2e-4)
    assert stats.t_cdf(stats.t_quantile(p, df), df) == pytest.approx(p, abs=1e-9)
    assert stats.t_cdf(-1.5, 5) == pytest.approx(1 - stats.t_cdf(1.5, 5))


def _t_cdf_by_quadrature(t: float, df: int, steps: int = 20000) -> float:
    """P(T ≤ t) from the density, Simpson's rule from 0 (a slow reference written from the formula)."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    pdf = lambda x: c * (1 + x * x / df) ** (-(df + 1) / 2)  # noqa: E731
    h = abs(t) / steps
    area = h / 3 * sum((1 if k in (0, steps) else 4 if k % 2 else 2) * pdf(k * h) for k in range(steps + 1))
    return 0.5 + math.copysign(area, t)


@pytest.mark.parametrize(("t", "df"), [(3.3353, 7), (0.4, 2), (-2.1, 5), (5.0, 3), (1.0, 50)])
def test_t_cdf_matches_quadrature_of_the_density(t, df):
    assert stats.t_cdf(t, df) == pytest.approx(_t_cdf_by_quadrature(t, df), abs=1e-9)


def test_paired_interval_by_hand():
    # deltas 1..4: mean 2.5, sd 1.2910, t(0.975, 3) = 3.1824, t = 2.5 / (1.2910/2) = 3.873 → p = 0.0305
    r = stats.paired_interval([1.0, 2.0, 3.0, 4.0])
    assert r["mean"] == 2.5 and r["halfwidth"] == pytest.approx(3.1824 * 1.29099 / 2, rel=1e-4)
    assert r["p"] == pytest.approx(0.0305, abs=5e-4)
    # Bonferroni over 4 comparisons: the 1 − 0.05/8 quantile
    wide = stats.paired_interval([1.0, 2.0, 3.0, 4.0], comparisons=4)
    assert wide["level"] == pytest.approx(0.9875) and wide["halfwidth"] == pytest.approx(stats.t_quantile(1 - 0.05 / 8, 3) * 1.29099 / 2, rel=1e-4)
    assert wide["halfwidth"] > r["halfwidth"]
    with pytest.raises(ValueError, match="at least 2"):
        stats.paired_interval([1.0])


def test_holm_by_hand():
    adjusted = stats.holm({"a": 0.01, "b": 0.04, "c": 0.03})
    # sorted a .01·3 = .03; c .03·2 = .06; b .04·1 = .04 → monotone .06
    assert adjusted == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})
    assert stats.holm({"x": 0.6, "y": 0.7}) == pytest.approx({"x": 1.0, "y": 1.0})


def test_seed_plan_is_the_smallest_sufficient_number():
    pilot = [0.30, 0.36, 0.33, 0.41]
    plan = stats.seeds_for_halfwidth(pilot, 0.03, comparisons=7, minimum=2)
    n, sd = plan["needed"], math.sqrt(2) * statistics.stdev(pilot)
    q = lambda k: stats.t_quantile(1 - 0.05 / 14, k - 1)  # noqa: E731
    assert q(n) * sd / math.sqrt(n) <= 0.03 < q(n - 1) * sd / math.sqrt(n - 1)
    assert stats.seeds_for_halfwidth([0.3, 0.3001], 0.03)["seeds"] == 8  # never below the protocol's minimum


def test_curve_auc_is_the_mean_over_evaluation_points():
    assert stats.curve_auc({0: 0.2, 10: 0.4, 20: 0.6}) == pytest.approx(0.4)
    with pytest.raises(ValueError):
        stats.curve_auc({})


def test_compare_reports_auc_deltas_with_corrected_intervals_and_holm(tmp_path):
    curves = {
        "grpo": [{0: 0.1, 10: 0.2, 20: 0.3}, {0: 0.1, 10: 0.3, 20: 0.3}, {0: 0.1, 10: 0.2, 20: 0.4}],
        "antisd": [{0: 0.1, 10: 0.4, 20: 0.5}, {0: 0.1, 10: 0.4, 20: 0.4}, {0: 0.1, 10: 0.5, 20: 0.5}],
        "sd": [{0: 0.1, 10: 0.2, 20: 0.2}, {0: 0.1, 10: 0.3, 20: 0.3}, {0: 0.1, 10: 0.1, 20: 0.3}],
    }
    for variant, seeds in curves.items():
        for seed, curve in enumerate(seeds):
            _write_run(tmp_path, f"{variant}-s{seed}", curve)
    cfg = compare.CompareConfig(variants=["grpo", "antisd", "sd"], seeds=3, output_dir=str(tmp_path), eval_k=4)
    summary = compare.summarise(cfg)
    rows = summary["rows"]
    assert summary["comparisons"] == 2
    auc = lambda c: sum(c.values()) / len(c)  # noqa: E731
    deltas = [auc(a) - auc(g) for a, g in zip(curves["antisd"], curves["grpo"])]
    assert rows["antisd"]["auc"] == pytest.approx(statistics.fmean(auc(c) for c in curves["antisd"]))
    d = rows["antisd"]["auc_delta"]
    assert d["mean"] == pytest.approx(statistics.fmean(deltas))
    assert d["halfwidth"] == pytest.approx(stats.t_quantile(1 - 0.05 / 4, 2) * statistics.stdev(deltas) / math.sqrt(3))
    ps = {v: rows[v]["auc_delta"]["p"] for v in ("antisd", "sd")}
    assert {v: rows[v]["auc_delta"]["p_holm"] for v in ps} == pytest.approx(stats.holm(ps))
    assert "auc_delta" not in rows["grpo"]
    report = compare.write_report(cfg).read_text()
    assert f"{100 * d['mean']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]" in report


def test_compare_plans_seeds_from_a_pilot(tmp_path):
    for seed, curve in zip((100, 101, 102), [{0: 0.1, 10: 0.3}, {0: 0.1, 10: 0.4}, {0: 0.1, 10: 0.35}]):
        _write_run(tmp_path, f"grpo-s{seed}", curve)
    _write_run(tmp_path, "grpo-s0", {0: 0.9, 10: 0.9})  # not in the pilot's seed range: ignored
    cfg = compare.CompareConfig(variants=["grpo", "antisd", "sd", "no_gate"], seeds=3, first_seed=100, output_dir=str(tmp_path), eval_k=4, plan_seeds=True, target_halfwidth=0.03)
    path = compare.main(cfg)
    plan = json.loads(path.read_text())
    pilot = [0.2, 0.25, 0.225]
    assert plan["pilot_auc"] == pytest.approx(pilot) and plan["comparisons"] == 3
    assert plan == {**plan, **stats.seeds_for_halfwidth(pilot, 0.03, 3), "pilot_auc": plan["pilot_auc"]}
    assert not (tmp_path / "antisd-s0").exists()  # planning runs nothing


def test_fisher_exact_by_hand_and_on_published_tables():
    # testbed-v2's comparison 3: 3 of 8 runaway seeds against 0 of 8 — one-sided p = C(8,3)/C(16,3) = 56/560
    assert stats.fisher_exact(3, 8, 0, 8, "greater") == pytest.approx(0.1)
    assert stats.fisher_exact(3, 8, 0, 8) == pytest.approx(0.2)  # the mirror table (0 of 8 vs 3 of 8) is as likely
    # Fisher's tea-tasting table [[3, 1], [1, 3]]: one-sided 17/70, two-sided 34/70 (R: fisher.test, 0.4857)
    assert stats.fisher_exact(3, 4, 1, 4, "greater") == pytest.approx(17 / 70)
    assert stats.fisher_exact(3, 4, 1, 4) == pytest.approx(34 / 70)
    assert stats.fisher_exact(1, 4, 3, 4, "less") == pytest.approx(17 / 70)
    assert stats.fisher_exact(0, 8, 0, 8) == 1.0
    with pytest.raises(ValueError, match="a=9"):
        stats.fisher_exact(9, 8, 0, 8)



def test_exact_trend_test_against_enumeration_and_fisher():
    import itertools

    def by_enumeration(groups):  # straight from the definition: every placement of the events among the trials
        scores = [score for score, _, n in groups for _ in range(n)]
        observed, events = sum(score * x for score, x, _ in groups), sum(x for _, x, _ in groups)
        subsets = list(itertools.combinations(range(len(scores)), events))
        return sum(sum(scores[i] for i in c) >= observed for c in subsets) / len(subsets)

    for groups in ([(0, 0, 4), (1, 1, 4), (2, 1, 4), (3, 2, 4)], [(0, 1, 4), (1, 0, 3), (2, 2, 4), (4, 1, 2)], [(0, 2, 4), (1, 2, 4), (2, 0, 4)]):
        assert stats.exact_trend_test(groups) == pytest.approx(by_enumeration(groups), rel=1e-12)
        assert stats.exact_trend_test(groups[::-1]) == pytest.approx(stats.exact_trend_test(groups), rel=1e-12)  # order is not a score
    # every collapse at the top of five doses, 4 seeds each: the one placement of 4 events among 20 with T = 16
    assert stats.exact_trend_test([(d, 4 if d == 4 else 0, 4) for d in range(5)]) == pytest.approx(1 / math.comb(20, 4))
    assert stats.fisher_exact(4, 4, 0, 4) == pytest.approx(2 / 70)  # one dose's Fisher test at 4 seeds: never below 2/70
    assert stats.exact_trend_test([(0, 0, 8), (1, 3, 8)]) == pytest.approx(stats.fisher_exact(3, 8, 0, 8, "greater"))
    assert stats.exact_trend_test([(0, 0, 4), (1, 0, 4)]) == 1.0  # no events: nothing to see
    with pytest.raises(ValueError, match="events ≤ trials"):
        stats.exact_trend_test([(0, 5, 4), (1, 0, 4)])

def test_rate_intervals_match_newcombe():
    """Newcombe (1998): Wilson's interval for 81/263 is 0.2553–0.3662; the hybrid score interval of 56/70 − 48/80
    is 0.0524–0.3339 and of 9/10 − 3/10 is 0.1705–0.8090."""
    assert stats.wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-4)
    d = stats.rate_difference_interval(56, 70, 48, 80)
    assert d["difference"] == pytest.approx(0.2) and (d["low"], d["high"]) == pytest.approx((0.0524, 0.3339), abs=5e-4)
    d = stats.rate_difference_interval(9, 10, 3, 10)
    assert (d["low"], d["high"]) == pytest.approx((0.1705, 0.8090), abs=5e-4)
    assert stats.wilson_interval(0, 8)[0] == 0.0 and 0.3 < stats.wilson_interval(0, 8)[1] < 0.4

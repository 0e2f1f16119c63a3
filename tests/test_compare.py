"""`antisd compare` through the real CLI with a tiny budget, and the summary statistics it reports."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from antisd import cli
from antisd.commands import compare
from antisd.method.settings import preset
from tiny import make_tiny_model

pytestmark = pytest.mark.slow


ANTISD = "antisd@antisd_gate_warmup_steps=1"  # a warm-up shorter than the 2-step runs (else compare refuses it)


def test_compare_runs_resumes_and_reports(tmp_path, capsys):
    model = make_tiny_model(tmp_path / "tiny")
    out = tmp_path / "cmp"
    argv = [
        "compare", "--variants", f"grpo,{ANTISD}", "--seeds", "2", "--steps", "2", "--eval_every", "1", "--eval_k", "1",
        "--eval_problems", "3", "--model", str(model), "--prompts_per_step", "2", "--num_generations", "2", "--output_dir", str(out),
    ]  # fmt: skip
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.count("reused from") == 2  # the antisd runs of seeds 0 and 1 reuse their seed's step 0
    for run in ("grpo-s0", "grpo-s1", f"{ANTISD}-s0", f"{ANTISD}-s1"):
        summary = json.loads((out / run / "summary.json").read_text())
        assert summary["steps"] == 2
        evals = [json.loads(x) for x in (out / run / "metrics.jsonl").read_text().splitlines() if "eval/avg@1" in x]
        assert [e["step"] for e in evals] == [0, 1, 2]
        first = [json.loads(x) for x in (out / f"grpo-{run[-2:]}" / "metrics.jsonl").read_text().splitlines() if "eval/avg@1" in x]
        step0 = {k: v for k, v in first[0].items() if k.startswith("eval/")}
        assert {k: v for k, v in evals[0].items() if k.startswith("eval/")} == step0 and summary["before"] == step0
    report = (out / "report.md").read_text()
    assert "| grpo |" in report and f"| {ANTISD} |" in report and (out / "report.png").stat().st_size > 0
    assert "dose (%)" in report
    grpo_rows = [json.loads(x) for x in (out / "grpo-s0" / "metrics.jsonl").read_text().splitlines()]
    # λ = 0: the dose meter runs in every run and reads no term (term_ratio itself is left out of a step whose groups
    # are all uniform, as a tiny random model's are: 0/0)
    assert [r["antisd/term_abs_mean"] for r in grpo_rows if "antisd/term_abs_mean" in r] == [0.0, 0.0]
    assert all(r["antisd/term_ratio"] == 0.0 for r in grpo_rows if "antisd/term_ratio" in r)
    capsys.readouterr()
    assert cli.main(argv) == 0  # second call: every run is finished and skipped
    assert capsys.readouterr().out.count("finished, skipped") == 4


def _write_run(root: Path, name: str, evals: dict[int, float]) -> None:
    (root / name).mkdir(parents=True)
    lines = [json.dumps({"step": s, "eval/avg@4": v}) for s, v in evals.items()]
    (root / name / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_summary_speedup_and_paired_delta(tmp_path):
    # grpo reaches its best 0.5 at step 20; antisd's mean curve first reaches 0.5 at step 5: speedup 4×
    _write_run(tmp_path, "grpo-s0", {0: 0.1, 5: 0.2, 10: 0.3, 20: 0.5})
    _write_run(tmp_path, "grpo-s1", {0: 0.1, 5: 0.2, 10: 0.4, 20: 0.5})
    _write_run(tmp_path, "antisd-s0", {0: 0.1, 5: 0.5, 10: 0.6, 20: 0.6})
    _write_run(tmp_path, "antisd-s1", {0: 0.1, 5: 0.5, 10: 0.7, 20: 0.8})
    cfg = compare.CompareConfig(variants=["grpo", "antisd"], seeds=2, output_dir=str(tmp_path), eval_k=4)
    rows = compare.summarise(cfg)["rows"]
    assert rows["grpo"]["best"] == pytest.approx(0.5) and rows["grpo"]["best_step"] == 20
    assert rows["antisd"]["best"] == pytest.approx(0.7) and rows["antisd"]["best_step"] == 20
    assert rows["antisd"]["reach_baseline_best"] == 5 and rows["antisd"]["speedup"] == pytest.approx(4.0)
    # paired deltas 0.1 and 0.3: mean 0.2, half-width t(1)·sd/√2 = 12.706·0.1414/1.414
    assert rows["antisd"]["final_delta"] == pytest.approx(0.2)
    assert rows["antisd"]["final_delta_ci95"] == pytest.approx(12.706 * 0.1, rel=1e-3)


def test_variant_overrides_parse_and_name_bad_fields():
    assert compare.parse_variant("antisd") == ("antisd", preset("antisd"))
    assert compare.parse_variant("antisd@antisd_lambda_max=2@antisd_gate=false") == ("antisd", preset("antisd").replace(lambda_max=2.0, gate=False))
    with pytest.raises(ValueError, match="not field=value"):
        compare.parse_variant("antisd@lambda=2")
    cfg = compare.CompareConfig(variants=["antisd@antisd_lambda_max=2"], baseline="antisd@antisd_lambda_max=2", output_dir="/tmp/x")
    rc = compare.run_config(cfg, "antisd@antisd_lambda_max=2", 1)
    assert rc.preset == "antisd" and rc.antisd == preset("antisd").replace(lambda_max=2.0, diagnostics=True) and rc.output_dir.endswith("antisd@antisd_lambda_max=2-s1")


def _rows(rewards: list[float], truncation: list[float] | None = None) -> list[dict]:
    truncation = truncation or [0.0] * len(rewards)
    return [{"step": i + 1, "reward/reward": r, "train/completions/clipped_ratio": t} for i, (r, t) in enumerate(zip(rewards, truncation))]


def test_runaway_rule_on_hand_made_runs():
    flat = [0.4] * 40
    assert not compare.runaway(_rows(flat))
    # reward halves from step 25 on for 5 steps: runaway; for 4 steps only: not
    assert compare.runaway(_rows([0.4] * 24 + [0.1] * 5 + [0.4] * 11), after=20)
    assert not compare.runaway(_rows([0.4] * 24 + [0.1] * 4 + [0.4] * 12), after=20)
    # before step `after` it does not count, however long; the default is step 10
    assert not compare.runaway(_rows([0.4] + [0.1] * 18 + [0.4] * 21), after=20)
    assert compare.runaway(_rows([0.4] + [0.1] * 18 + [0.4] * 21))
    assert not compare.runaway(_rows([0.4] + [0.1] * 13 + [0.4] * 26))  # steps 11-14 only: 4 after step 10
    # truncation above 50% for 5 steps after the cut, reward intact: runaway
    assert compare.runaway(_rows(flat, [0.0] * 30 + [0.6] * 5 + [0.0] * 5))
    assert not compare.runaway(_rows(flat, [0.0] * 30 + [0.5] * 10))  # exactly 50% is not above it


def test_collapse_rule_sees_the_last_steps():
    flat = [0.4] * 40
    assert not compare.collapsed(_rows(flat), eval_k=4)
    ends_low = _rows([0.4] * 37 + [0.1] * 3)  # collapses in the last 3 steps: the runaway rule cannot see it
    assert not compare.runaway(ends_low) and compare.collapsed(ends_low, eval_k=4)
    assert not compare.collapsed(_rows([0.4] * 39 + [0.1]), eval_k=4)  # one bad last step is noise
    assert compare.collapsed(_rows([0.4] * 24 + [0.1] * 5 + [0.4] * 11), eval_k=4)  # a runaway is a collapse
    # held-out: the last evaluation below half the run's best
    evals = lambda values: [{"step": 10 * i, "eval/avg@4": v} for i, v in enumerate(values)]  # noqa: E731
    assert compare.collapsed(_rows(flat) + evals([0.2, 0.4, 0.3, 0.19]), eval_k=4)
    assert not compare.collapsed(_rows(flat) + evals([0.2, 0.4, 0.3, 0.2]), eval_k=4)


def test_mechanisms_report_paired_differences(tmp_path):
    def write(name, length, tries, gate):
        dose = lambda s: float("nan") if s == 1 else 0.02 * gate * (s % 2)  # noqa: E731  (NaN: no sequence advantage)
        rows = [
            {"step": s, "reward/reward": 0.3, "train/completions/mean_length": length + (5.0 if s <= 10 else 0.0), "antisd/gate_calibrated": int(s > 5),
             "antisd/gate_on": gate, "antisd/term_ratio": dose(s), "antisd/term_exceeds_frac": 0.0}
            for s in range(1, 21)
        ]  # fmt: skip
        rows += [{"step": 20, "eval/avg@4": 0.3, "eval/tries": tries, "eval/deliberation_lines": 0.5}]
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    for seed, (lg, lt) in enumerate([(30.0, 40.0), (32.0, 41.0), (31.0, 43.0)]):
        write(f"grpo-s{seed}", lg, 2.0, 0)
        write(f"antisd-s{seed}", lt, 2.5 + seed * 0.1, seed % 2)
    cfg = compare.CompareConfig(variants=["grpo", "antisd"], seeds=3, steps=20, output_dir=str(tmp_path))
    mech = compare.mechanisms(cfg)
    # the last 10 steps only (steps 11..20): the +5 of steps 1..10 must not count
    assert mech["grpo"]["length_late"] == pytest.approx(31.0)
    assert mech["antisd"]["length_late_delta"]["mean"] == pytest.approx((10 + 9 + 12) / 3)
    assert mech["antisd"]["tries_delta"]["mean"] == pytest.approx(0.6)
    assert mech["antisd"]["gate_open"] == pytest.approx(1 / 3)  # seeds 0, 2 shut, seed 1 open
    assert mech["antisd"]["runaway_seeds"] == 0 and mech["antisd"]["seeds"] == 3
    assert "length_late_delta" not in mech["grpo"]
    # the dose: mean over the steps with a finite ratio (steps 2..20, 9 odd ones at 2% with the gate open: seed 1 only)
    assert mech["grpo"]["term_ratio"] == 0.0 and mech["antisd"]["term_ratio"] == pytest.approx(0.02 * 9 / 19 / 3)
    # and over the steps with the term on: seed 1 alone (seeds 0, 2 never open), 9 of its 19 finite steps at 2%
    assert mech["antisd"]["term_ratio_on"] == pytest.approx(0.02 * 9 / 19) and mech["grpo"]["term_ratio_on"] is None
    assert mech["antisd"]["collapse_seeds"] == 0 and mech["antisd"]["collapse_delta"]["p_holm"] == 1.0 and "collapse_delta" not in mech["grpo"]
    assert compare._pct(mech["antisd"]["term_ratio"]) == "0.32" and compare._pct(0.125) == "12" and compare._pct(None) == "–"



def test_collapse_trend_over_the_dose_order():
    doses = ["grpo", "no_gate@antisd_lambda_max=1.0", "no_gate@antisd_lambda_max=5.0", "no_gate@antisd_lambda_max=10"]
    cfg = compare.CompareConfig(variants=doses + ["antisd"], seeds=4, trend_variants=doses)
    mech = {v: {"collapse_seeds": c, "seeds": 4} for v, c in zip(doses, (0, 0, 1, 3))}
    trend = compare.collapse_trend(cfg, mech)
    assert trend["collapsed"] == ["0/4", "0/4", "1/4", "3/4"] and trend["p"] == pytest.approx(compare.stats.exact_trend_test([(0, 0, 4), (1, 0, 4), (2, 1, 4), (3, 3, 4)]))
    assert trend["p"] < 0.01  # four collapses at the two top doses: a trend a per-dose Fisher test (≥ 2/70 each, before Holm) cannot show
    assert compare.collapse_trend(dataclasses.replace(cfg, trend_variants=[]), mech) is None
    assert compare.collapse_trend(cfg, {v: m for v, m in mech.items() if v != "grpo"}) is None  # not every variant has run
    with pytest.raises(ValueError, match="not there: \\['sd'\\]"):
        compare.CompareConfig(variants=doses, trend_variants=["grpo", "sd"])

def test_reused_initial_evaluation_must_come_from_the_same_model_and_settings(tmp_path):
    from antisd.infra import configio
    from antisd.commands import train

    source = tmp_path / "first"
    source.mkdir()
    cfg = train.TrainConfig(model="m", seed=3, eval_k=2, output_dir=str(source))
    (source / "config.yaml").write_text(configio.to_yaml(cfg))
    (source / "metrics.jsonl").write_text(json.dumps({"step": 0, "eval/avg@2": 0.25, "eval/pass@2": 0.5, "train/x": 1}) + "\n")
    mine = dataclasses.replace(cfg, output_dir=str(tmp_path / "second"), initial_eval_from=str(source), preset="antisd")
    assert train.initial_evaluation(mine) == {"eval/avg@2": 0.25, "eval/pass@2": 0.5}
    for field, value in (("seed", 4), ("model", "other"), ("eval_problems", 64), ("eval_temperature", 1.0)):
        with pytest.raises(ValueError, match=f"its {field} is"):
            train.initial_evaluation(dataclasses.replace(mine, **{field: value}))
    (source / "metrics.jsonl").write_text(json.dumps({"step": 1, "eval/avg@2": 0.3}) + "\n")
    assert train.initial_evaluation(mine) is None  # no step-0 evaluation there yet: this run evaluates itself


def test_dose_plan_scales_lambda_from_a_pilot(tmp_path, capsys):
    """λ for a target dose from a paper-form pilot (the term is ∝ λ): the pilot's dose is the mean term_ratio over
    the steps with the term on (gate-shut and NaN steps left out), averaged over seeds."""
    pilot = "no_gate@antisd_lambda_max=1"
    for seed, ratios in ((0, [0.01, 0.03, float("nan")]), (1, [0.02, 0.04, 0.5])):
        rows = [{"step": i + 1, "antisd/gate_on": int(i < 2 or seed == 0), "antisd/term_ratio": r} for i, r in enumerate(ratios)]
        (tmp_path / f"{pilot}-s{seed}").mkdir()
        (tmp_path / f"{pilot}-s{seed}" / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    argv = ["compare", "--variants", f"grpo,{pilot}", "--seeds", "2", "--output_dir", str(tmp_path), "--plan_doses", "0.05,0.2"]
    assert cli.main(argv) == 0
    plan = json.loads((tmp_path / "dose_plan.json").read_text())
    assert plan["dose_pilot"] == pytest.approx((0.02 + 0.03) / 2)  # seed 0: (0.01 + 0.03)/2, seed 1: (0.02 + 0.04)/2
    assert plan["lambdas"] == pytest.approx({"0.05": 2.0, "0.2": 8.0})
    assert "dose 5% → λ = 2" in capsys.readouterr().out
    with pytest.raises(ValueError, match="not proportional to λ"):
        compare.plan_doses(compare.CompareConfig(variants=["grpo", "antisd_release"], seeds=2, output_dir=str(tmp_path), plan_doses=[0.05]))
    with pytest.raises(ValueError, match="doses > 0"):
        compare.CompareConfig(variants=["grpo", pilot], plan_doses=[0.0])

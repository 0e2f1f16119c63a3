"""`antisd compare` through the real CLI with a tiny budget, and the summary statistics it reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from antisd import cli
from antisd.commands import compare
from antisd.settings import preset
from tiny import make_tiny_model

pytestmark = pytest.mark.slow


def test_compare_runs_resumes_and_reports(tmp_path, capsys):
    model = make_tiny_model(tmp_path / "tiny")
    out = tmp_path / "cmp"
    argv = [
        "compare", "--variants", "grpo,antisd", "--seeds", "2", "--steps", "2", "--eval_every", "1", "--eval_k", "1",
        "--eval_problems", "3", "--model", str(model), "--prompts_per_step", "2", "--num_generations", "2", "--output_dir", str(out),
    ]  # fmt: skip
    assert cli.main(argv) == 0
    for run in ("grpo-s0", "grpo-s1", "antisd-s0", "antisd-s1"):
        summary = json.loads((out / run / "summary.json").read_text())
        assert summary["steps"] == 2
        evals = [json.loads(x) for x in (out / run / "metrics.jsonl").read_text().splitlines() if "eval/avg@1" in x]
        assert [e["step"] for e in evals] == [0, 1, 2]
    report = (out / "report.md").read_text()
    assert "| grpo |" in report and "| antisd |" in report and (out / "report.png").stat().st_size > 0
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
    cfg = compare.CompareConfig(variants=["antisd@antisd_lambda_max=2"], output_dir="/tmp/x")
    rc = compare.run_config(cfg, "antisd@antisd_lambda_max=2", 1)
    assert rc.preset == "antisd" and rc.antisd == preset("antisd").replace(lambda_max=2.0, diagnostics=True) and rc.output_dir.endswith("antisd@antisd_lambda_max=2-s1")

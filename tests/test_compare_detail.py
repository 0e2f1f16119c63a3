"""scripts/compare_detail.py on hand-made run directories: per-seed AUC, runs identical to the baseline, gate
states after calibration and a paired difference computed by hand."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _write(root: Path, name: str, evals: dict[int, float], gate: list[tuple[int, int]] | None = None) -> None:
    """gate: (calibrated, on) per training step 1..n."""
    rows = [{"step": s, "eval/avg@4": v} for s, v in evals.items()]
    for step, (calibrated, on) in enumerate(gate or [], start=1):
        rows.append({"step": step, "antisd/gate_calibrated": float(calibrated), "antisd/gate_on": float(on)})
    (root / name).mkdir(parents=True)
    (root / name / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_compare_detail(tmp_path):
    _write(tmp_path, "grpo-s0", {0: 0.2, 16: 0.3, 32: 0.4}, [(1, 1)] * 4)  # ungated: calibrated from step 1
    _write(tmp_path, "grpo-s1", {0: 0.2, 16: 0.2, 32: 0.2}, [(1, 1)] * 4)
    # antisd: seed 0 equals grpo (gate never open after calibration); seed 1 differs, gate opens at step 4
    _write(tmp_path, "antisd-s0", {0: 0.2, 16: 0.3, 32: 0.4}, [(0, 0), (1, 0), (1, 0), (1, 0)])
    _write(tmp_path, "antisd-s1", {0: 0.2, 16: 0.5, 32: 0.8}, [(0, 0), (1, 0), (1, 0), (1, 1)])
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "compare_detail.py"), str(tmp_path), "--seeds", "2", "--pair", "antisd:grpo", "--comparisons", "1"],
        capture_output=True, text=True, check=True, env={"PYTHONPATH": str(ROOT / "src")},
    ).stdout  # fmt: skip
    lines = out.splitlines()
    assert any(line.split()[:5] == ["grpo", "30.0", "20.0", "|", "40.0"] for line in lines)
    assert any(line.split()[:5] == ["antisd", "30.0", "50.0", "|", "40.0"] for line in lines)
    assert any(line.split() == ["antisd", "[0]"] for line in lines)  # seed 0's curve equals grpo's exactly
    assert any(line.split()[:4] == ["antisd", "s0", "00", "0/2"] for line in lines)  # calibration step dropped
    assert any(line.split()[:4] == ["antisd", "s1", "01", "1/2"] for line in lines)
    assert not any(line.split()[:2] == ["grpo", "s0"] for line in lines)  # ungated runs have no gate line
    # AUC deltas 0 and 0.3: mean 0.15, sd 0.2121, t(0.975, 1) = 12.706 → half-width 12.706·0.2121/√2 = 1.906
    half = 12.7062 * math.sqrt(0.045) / math.sqrt(2)
    pair = next(line for line in lines if line.startswith("AUC antisd − grpo"))
    assert "+15.00 pp" in pair and f"[{100 * (0.15 - half):+.2f}, {100 * (0.15 + half):+.2f}]" in pair


def test_dose_line_splits_the_dose_into_an_early_window_and_the_whole_run():
    """Means over the steps with the term on only (gate shut steps and NaN ratios left out), early window first."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare_detail", ROOT / "scripts" / "compare_detail.py")
    detail = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(detail)
    rows = [
        {"step": 1, "antisd/gate_on": 0.0, "antisd/term_ratio": 0.0, "antisd/term_abs_mean": 0.0, "antisd/seq_adv_abs_mean": 0.8},  # shut: not counted
        {"step": 2, "antisd/gate_on": 1.0, "antisd/term_ratio": 0.02, "antisd/term_abs_mean": 0.016, "antisd/seq_adv_abs_mean": 0.8},
        {"step": 3, "antisd/gate_on": 1.0, "antisd/term_ratio": 0.04, "antisd/term_abs_mean": 0.024, "antisd/seq_adv_abs_mean": 0.6},
        {"step": 4, "antisd/gate_on": 1.0, "antisd/term_ratio": float("nan"), "antisd/term_abs_mean": 0.03, "antisd/seq_adv_abs_mean": 0.0},
        {"step": 5, "antisd/gate_on": 1.0, "antisd/term_ratio": 0.30, "antisd/term_abs_mean": 0.06, "antisd/seq_adv_abs_mean": 0.2},
    ]
    assert detail.mean_on(rows, "antisd/term_ratio", 3) == 0.03  # steps 2, 3
    assert abs(detail.mean_on(rows, "antisd/term_ratio") - 0.12) < 1e-12  # steps 2, 3, 5 (step 4's NaN left out)
    assert detail.dose_line(rows, 3) == "3 → 12 | 0.02 → 0.0325 | 0.7 → 0.4"
    assert detail.dose_line([], 3) == "– | – | –"

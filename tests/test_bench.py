"""benchmarks/step_cost.py --replay (issue #20): every variant scores the same rollouts, so the tokens each phase
processes are equal across variants, and the report is written to --out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_replayed_rollouts_give_every_variant_the_same_tokens(tmp_path):
    argv = [sys.executable, str(ROOT / "benchmarks" / "step_cost.py"), "--steps", "2", "--prompts", "2", "--G", "4", "--max_tokens", "24",
            "--variants", "trl_grpo,grpo,antisd", "--replay", "--threads", "1", "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(argv, env=dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "step_cost.json").read_text())["summary"]
    tokens = {v: s["tokens"] for v, s in summary.items()}
    assert tokens["trl_grpo"]["generation"] == tokens["grpo"]["generation"] == tokens["antisd"]["generation"] > 0
    assert tokens["trl_grpo"]["loss_forward"] == tokens["grpo"]["loss_forward"] == tokens["antisd"]["loss_forward"] > 0
    assert tokens["antisd"]["teacher_forward"] > 0 and "teacher_forward" not in tokens["grpo"]
    assert summary["grpo"]["phases"]["generation"] < summary["trl_grpo"]["phases"]["generation"]  # replayed, not sampled
    assert "over_teacher_forward" in summary["antisd"] and "(step − TRL GRPO) / teacher forward" in (tmp_path / "step_cost.md").read_text()

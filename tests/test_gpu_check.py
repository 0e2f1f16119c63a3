"""`make gpu-check-tiny`: the GPU check's code on the CPU with tiny sizes (issue #20), so that the script a lent GPU
runs has already run here. Every part must pass; the cost part must have measured both variants."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_tiny_runs_every_part_on_the_cpu(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--tiny", "--out", str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert report["tiny"] and report["environment"]["device"] == "cpu"
    assert report["numerics"]["ok"] and report["numerics"]["worst"] == 0.0  # CPU against CPU: the same kernels
    train = report["train"]
    assert train["ok"] and train["runs"]["killed"]["rc"] == 137 and train["logged_steps"] == [1, 2, 3, 4]
    assert train["resume_line"].startswith("resume: from checkpoint-2")
    tiny = report["cost"]["shapes"]["tiny"]
    assert set(tiny["variants"]) == {"grpo", "antisd"} and all("step_seconds" in v for v in tiny["variants"].values())
    assert "teacher_forward" in tiny["variants"]["antisd"]["phase_seconds"] and "teacher_forward" not in tiny["variants"]["grpo"]["phase_seconds"]
    assert tiny["teacher_tokens"] > tiny["response_tokens"]  # the teacher's sequence holds a demonstration
    assert "## cost: ok" in (tmp_path / "gpu-check.md").read_text()

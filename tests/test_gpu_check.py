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


def test_cpu_phase_meter_sees_a_known_allocation_in_its_phase():
    sys.path.insert(0, str(ROOT / "scripts"))
    import torch
    from gpu_check import PhaseMeter, live_cpu_tensor_bytes

    meter, kept = PhaseMeter("cpu"), []
    mib = 2**20

    def step():
        with meter.phase("outer"):
            with meter.phase("big"):
                a = torch.ones(64 * mib // 4)  # 64 MiB live together with b: the phase's peak is both
                b = torch.ones(32 * mib // 4)
                kept.append(float(a[0] + b[0]))
                del a, b
            with meter.phase("small"):
                kept.append(torch.ones(8 * mib // 4))  # 8 MiB, kept past the step

    base = live_cpu_tensor_bytes() / 2**30  # what is live before the step: every phase's peak starts from it
    meter.measure(step)
    assert meter.peaks["big"] - base == pytest.approx(96 / 1024, abs=1 / 1024)
    assert meter.peaks["small"] - base == pytest.approx(8 / 1024, abs=1 / 1024)
    assert meter.peaks["outer"] == pytest.approx(meter.peaks["big"])  # a nested phase hands its peak to its parent

"""Crash safety and clear refusals (issue #11): kill -9 during a checkpoint save, one run per directory, bad input."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from antisd import cli

from antisd.infra import rundir
pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
RUN = ["train", "--model", "testbed", "--preset", "antisd_release", "--antisd_gate_warmup_steps", "1", "--steps", "5",
       "--prompts_per_step", "2", "--num_generations", "4", "--max_completion_length", "32", "--eval_k", "0",
       "--save_steps", "2", "--threads", "1", "--seed", "0"]  # fmt: skip
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
STAGES = ["model_before", "model_inside", "optimizer_before", "optimizer_inside", "state_before", "state_inside", "marker_before", "marker_after"]


def _train(out: Path, *extra: str, fault: str = "", fault_step: int = 4, base: list[str] = RUN) -> subprocess.CompletedProcess:
    env = ENV | {"ANTISD_FAULT": fault, "ANTISD_FAULT_STEP": str(fault_step)}
    return subprocess.run([sys.executable, str(HERE / "fault_driver.py"), *base, "--output_dir", str(out), *extra], env=env, capture_output=True, text=True, timeout=600)


def _metrics(out: Path) -> list[dict]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        for k in [k for k in r if k == "time" or k.startswith("perf/") or "runtime" in k or "per_second" in k or k == "train/step_time"]:
            r.pop(k)
    return rows


def _one_error_line(err: str) -> str:
    """The user-error line of stderr (library warnings may precede it); no traceback may be there."""
    assert "Traceback" not in err, err
    lines = [x for x in err.splitlines() if x.startswith("antisd: error:")]
    assert len(lines) == 1, err
    return lines[0]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clean") / "run"
    done = _train(out)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


@pytest.mark.parametrize("stage", STAGES)
def test_kill_during_checkpoint_save_then_resume_matches_uninterrupted(tmp_path, uninterrupted, stage):
    out = tmp_path / "run"
    killed = _train(out, fault=stage)
    assert killed.returncode == 137, killed.stderr[-2000:]
    resumed = _train(out, "--resume", "true")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected_from = "checkpoint-4" if stage == "marker_after" else "checkpoint-2"
    assert f"resume: from {expected_from}" in resumed.stdout
    if stage != "marker_after" and stage != "model_before":  # killed before the framework made the directory
        assert "resume: skipped checkpoint-4" in resumed.stdout
    assert _digest(out / "final" / "model.safetensors") == _digest(uninterrupted / "final" / "model.safetensors")
    got, want = _metrics(out), _metrics(uninterrupted)
    steps = [r["step"] for r in got if "antisd/gate_on" in r]
    assert steps == [1, 2, 3, 4, 5]  # each step once
    assert [r for r in got if "antisd/gate_on" in r] == [r for r in want if "antisd/gate_on" in r]


FINAL = ["--steps", "4", "--eval_k", "1", "--eval_problems", "2"]  # --steps a multiple of --save_steps 2: a checkpoint at the last step


@pytest.fixture(scope="module")
def uninterrupted_final(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clean4") / "run"
    done = _train(out, *FINAL)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


@pytest.mark.parametrize("stage", ["marker_after", "final_model_before", "summary_before", "finished_before"])
def test_kill_after_the_last_checkpoint_then_resume_ends_at_exactly_steps(tmp_path, uninterrupted_final, stage):
    """Killed after the last step's complete checkpoint and before the run's final records (final model, summary,
    run.json): the resume trains nothing more, writes the final records, and ends as the uninterrupted run ended."""
    out = tmp_path / "run"
    killed = _train(out, *FINAL, fault=stage, fault_step=4)
    assert killed.returncode == 137, killed.stderr[-2000:]
    resumed = _train(out, "--resume", "true", base=["train"])  # only the run's own recorded settings: --steps 4, evaluation
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resume: from checkpoint-4 (its last step" in resumed.stdout
    assert not (out / "checkpoint-5").exists()
    assert json.loads((out / "summary.json").read_text())["steps"] == 4
    run = json.loads((out / "run.json").read_text())
    assert run["finished"] and run["steps"] == 4
    assert _digest(out / "final" / "model.safetensors") == _digest(uninterrupted_final / "final" / "model.safetensors")
    # every step once, the held-out evaluations once, same values; TRL's end-of-training row (the mean loss of the
    # steps this process trained) is the one row a process that trains nothing cannot repeat
    steps_only = lambda rows: [r for r in rows if "train/train_loss" not in r]  # noqa: E731
    assert steps_only(_metrics(out)) == steps_only(_metrics(uninterrupted_final))
    assert [r["step"] for r in _metrics(out) if "eval/avg@1" in r] == [0, 4]
    summary, want = json.loads((out / "summary.json").read_text()), json.loads((uninterrupted_final / "summary.json").read_text())
    assert {k: summary[k] for k in ("before", "after", "gate", "gate_state")} == {k: want[k] for k in ("before", "after", "gate", "gate_state")}


def test_resume_with_a_changed_setting_is_refused_listing_it_or_applied_and_recorded(tmp_path):
    out = tmp_path / "run"
    first = _train(out, "--steps", "2")
    assert first.returncode == 0, first.stderr[-2000:]
    config = (out / "config.yaml").read_text()
    refused = _train(out, "--steps", "3", "--resume", "true", "--learning_rate", "0.05", "--num_generations", "2", "--task", "gsm")
    line = _one_error_line(refused.stderr)
    assert refused.returncode == 2 and "learning_rate: 0.0001 → 0.05" in line and "num_generations: 4 → 2" in line and "task: 'countdown' → 'gsm'" in line
    assert "--accept_changes true" in line and (out / "config.yaml").read_text() == config and not (out / "checkpoint-3").exists()
    applied = _train(out, "--steps", "3", "--resume", "true", "--learning_rate", "0.05", "--accept_changes", "true")
    assert applied.returncode == 0, applied.stderr[-2000:]
    assert "continuing with changed settings: learning_rate: 0.0001 → 0.05" in applied.stdout
    run = json.loads((out / "run.json").read_text())
    assert run["segments"] == [{"from_step": 2, "changes": {"learning_rate": [0.0001, 0.05]}}]
    assert "learning_rate 0.0001 → 0.05" in (out / "final" / "README.md").read_text()


def test_readme_resume_example_works_as_written(tmp_path):
    """README: a `--preset sd` run, then the README's resume line, as written: the run continues with its own
    recorded settings (its preset and sizes), nothing repeated. The first run is made small here (its sizes are
    recorded, so the README line trains 20 small steps)."""
    readme = (HERE.parent / "README.md").read_text()
    line = next(x for x in readme.splitlines() if "--resume true" in x and x.startswith("antisd train"))
    argv = line.split("#")[0].split()[1:]
    assert argv == ["train", "--output_dir", "runs/sd", "--steps", "60", "--resume", "true"]
    assert "antisd train --preset sd --output_dir runs/sd " in readme
    small = ["--prompts_per_step", "2", "--num_generations", "2", "--max_completion_length", "16", "--eval_k", "0", "--save_steps", "20", "--threads", "1"]
    run = lambda args: subprocess.run([sys.executable, "-m", "antisd.cli", *args], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)  # noqa: E731
    first = run(["train", "--preset", "sd", "--output_dir", "runs/sd", "--steps", "40", *small])
    assert first.returncode == 0, first.stderr[-2000:]
    resumed = run(argv)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resume: from checkpoint-40" in resumed.stdout
    summary = json.loads((tmp_path / "runs" / "sd" / "summary.json").read_text())
    assert summary["steps"] == 60 and summary["preset"] == "sd"
    assert "preset: sd" in (tmp_path / "runs" / "sd" / "config.yaml").read_text()


def test_second_run_into_a_locked_directory_is_refused(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    lock = rundir.Lock(out)  # another live run holds the directory
    try:
        before = sorted(p.name for p in out.iterdir())
        monkeypatch.setattr(sys, "argv", ["antisd", *RUN, "--output_dir", str(out)])
        assert cli.entry() == 2
        err = _one_error_line(capsys.readouterr().err)
        assert "another run is writing to" in err
        assert sorted(p.name for p in out.iterdir()) == before
    finally:
        lock.release()


def test_new_run_into_an_old_directory_refuses_then_overwrites(tmp_path, uninterrupted, capsys, monkeypatch):
    import shutil

    out = tmp_path / "old"
    shutil.copytree(uninterrupted, out)
    (out / ".lock").unlink(missing_ok=True)
    digests = {p: _digest(p) for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    monkeypatch.setattr(sys, "argv", ["antisd", *RUN, "--output_dir", str(out)])
    assert cli.entry() == 2
    err = capsys.readouterr().err
    assert "already holds run" in err and "--overwrite true" in err
    assert {p: _digest(p) for p in digests} == digests  # nothing changed
    done = _train(out, "--overwrite", "true", "--steps", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (out / "checkpoint-4").exists() and json.loads((out / "summary.json").read_text())["steps"] == 2
    assert json.loads((out / "run.json").read_text())["run_id"] != json.loads((uninterrupted / "run.json").read_text())["run_id"]


def test_resume_of_a_finished_run_says_so_and_changes_nothing(tmp_path, uninterrupted):
    import shutil

    out = tmp_path / "done"
    shutil.copytree(uninterrupted, out)
    digests = {p: _digest(p) for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    done = _train(out, "--resume", "true")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "is finished (5 steps" in done.stdout
    assert {p: _digest(p) for p in digests} == digests


def test_changed_gate_flag_on_resume_is_refused_or_applied_with_recalibration(tmp_path):
    out = tmp_path / "run"
    first = _train(out, "--steps", "2")
    assert first.returncode == 0, first.stderr[-2000:]
    refused = _train(out, "--steps", "3", "--resume", "true", "--antisd_gate_down_ratio", "0.8")
    assert refused.returncode == 2 and "gate_down_ratio: 0.93 → 0.8" in _one_error_line(refused.stderr)
    applied = _train(out, "--steps", "3", "--resume", "true", "--antisd_gate_down_ratio", "0.8", "--antisd_recalibrate_on_resume", "true")
    assert applied.returncode == 0, applied.stderr[-2000:]
    state = json.loads((out / "checkpoint-3" / "antisd_state.json").read_text())
    assert state["gate"]["down_ratio"] == 0.8 and state["gate"]["warm_values"]  # new ratio, warmed up again


def test_data_problems_are_refused_or_counted(tmp_path, capsys, monkeypatch):
    """Prompts over the model's context are refused; repeated rows and train/held-out overlap are counted."""
    f = tmp_path / "d.jsonl"
    rows = [{"prompt": f"What is {i}+{i}?", "answer": str(2 * i)} for i in range(20)]
    rows += [rows[5], rows[6], rows[0]]  # rows 0..1 are held out: two repeats of training rows, one of a held-out row
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(sys, "argv", ["antisd", *RUN, "--task", str(f), "--steps", "1", "--output_dir", str(tmp_path / "o")])
    assert cli.entry() == 0
    out = capsys.readouterr().out
    assert "warning: 2 of 21 training rows repeat an earlier prompt" in out
    assert "warning: 1 of 2 held-out problems are also training prompts" in out
    long = tmp_path / "long.jsonl"
    long.write_text("".join(json.dumps({"prompt": ("word " * (4000 if i == 7 else 1)) + "?", "answer": "1"}) + "\n" for i in range(20)))
    monkeypatch.setattr(sys, "argv", ["antisd", *RUN, "--task", str(long), "--output_dir", str(tmp_path / "o2")])
    assert cli.entry() == 2
    err = _one_error_line(capsys.readouterr().err)
    assert "1 of 18 training prompts are longer than the model's context of 1024 tokens" in err and "training row 6" in err
    assert not (tmp_path / "o2").exists()  # refused before anything was written


def test_prune_keeps_the_newest_complete_checkpoints_and_never_the_last_complete_one(tmp_path):
    def checkpoint(step: int, complete: bool, run_id: str = "r1"):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.bin").write_bytes(b"x" * step)
        if complete:
            rundir.mark_complete(folder, run_id, step)

    checkpoint(1, True)
    checkpoint(2, False)  # a killed save, older than the newest complete one: garbage
    checkpoint(3, True)
    checkpoint(4, True)
    checkpoint(5, False)  # newer than the newest complete one: kept (it is not this function's to judge)
    assert rundir.prune(tmp_path, "r1", 0) == []
    assert rundir.prune(tmp_path, "r1", 1) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4", "checkpoint-5"]
    assert rundir.prune(tmp_path, "another-run", 1) == []  # none complete for that run: nothing to anchor on

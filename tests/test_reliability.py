"""Crash safety and clear refusals (issue #11): kill -9 during a checkpoint save, one run per directory, bad input."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from antisd import cli, rundir

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
RUN = ["train", "--model", "testbed", "--preset", "antisd_release", "--antisd_gate_warmup_steps", "1", "--steps", "5",
       "--prompts_per_step", "2", "--num_generations", "4", "--max_completion_length", "32", "--eval_k", "0",
       "--save_steps", "2", "--threads", "1", "--seed", "0"]  # fmt: skip
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
STAGES = ["model_before", "model_inside", "optimizer_before", "optimizer_inside", "state_before", "state_inside", "marker_before", "marker_after"]


def _train(out: Path, *extra: str, fault: str = "", fault_step: int = 4) -> subprocess.CompletedProcess:
    env = ENV | {"ANTISD_FAULT": fault, "ANTISD_FAULT_STEP": str(fault_step)}
    return subprocess.run([sys.executable, str(HERE / "fault_driver.py"), *RUN, "--output_dir", str(out), *extra], env=env, capture_output=True, text=True, timeout=600)


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


# --- bad input: one line, non-zero, nothing changed ---------------------------------------------------------


def _bad_files(tmp: Path) -> dict[str, Path]:
    files = {
        "yaml_syntax": ("bad.yaml", "steps: [1, 2\n"),
        "yaml_list": ("list.yaml", "- steps\n"),
        "yaml_key": ("key.yaml", "stepz: 3\n"),
        "jsonl_bad": ("bad.jsonl", '{"prompt": "q", "answer": "1"}\n{not json\n'),
        "jsonl_missing": ("miss.jsonl", '{"prompt": "q", "answer": "1"}\n{"prompt": "q"}\n'),
        "not_utf8": ("latin.jsonl", None),
        "a_file": ("plainfile", "x"),
    }
    out = {}
    for name, (fname, text) in files.items():
        path = tmp / fname
        if text is None:
            path.write_bytes(b'{"prompt": "caf\xe9", "answer": "1"}\n')
        else:
            path.write_text(text)
        out[name] = path
    broken = tmp / "broken_model"
    from antisd.runtime import shipped_model_dir

    import shutil

    shutil.copytree(shipped_model_dir(), broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 100)
    out["broken_model"] = broken
    return out


BAD = [
    (["--steps", "0"], "--steps must be ≥ 1"),
    (["--steps", "-3"], "--steps must be ≥ 1"),
    (["--antisd_lambda_max", "nan"], "is not a finite number"),
    (["--antisd_lambda_max", "inf"], "is not a finite number"),
    (["--learning_rate", "nan"], "is not a finite number"),
    (["--learning_rate", "0"], "--learning_rate must be a finite number > 0"),
    (["--temperature", "-1"], "--temperature must be a finite number > 0"),
    (["--num_generations", "1"], "--num_generations must be ≥ 2"),
    (["--prompts_per_step", "0"], "--prompts_per_step must be ≥ 1"),
    (["--max_completion_length", "0"], "--max_completion_length must be ≥ 1"),
    (["--eval_k", "-1"], "--eval_k must be ≥ 0"),
    (["--steps", "many"], "--steps: cannot read 'many' as int"),
    (["--preset", "antisdd"], "Unknown preset 'antisdd'"),
    (["--antisd_shaping", "papr"], "antisd_shaping='papr' is not one of"),
    (["--antisd_gate_warmup_steps", "0"], "needs antisd_gate_warmup_steps ≥ 1"),
    (["--antisd_gate_up_ratio", "0.5"], "no hysteresis band"),
    (["--config", "{missing}"], "does not exist"),
    (["--config", "{yaml_syntax}"], "bad.yaml: not valid YAML at line 2"),
    (["--config", "{yaml_list}"], "the top level must be a mapping"),
    (["--config", "{yaml_key}"], "unknown key 'stepz'"),
    (["--trl_args", "{{bogus_field: 1}}"], "'bogus_field' is not a GRPOConfig field"),
    (["--trl_args", "{{antisd_gate: true}}"], "trl_args may not set AntiSD fields"),
    (["--trl_args", "{{unclosed: [1"], "--trl_args: cannot read"),
    (["--output_dir", "{a_file}"], "is a file, not a directory"),
    (["--model", "/nonexistent/model"], "is not a model directory"),
    (["--model", "{broken_model}"], "are damaged"),
    (["--task", "{jsonl_bad}"], "bad.jsonl:2: not valid JSON"),
    (["--task", "{jsonl_missing}"], "miss.jsonl:2: field 'answer' is missing"),
    (["--task", "{not_utf8}"], "latin.jsonl: not UTF-8"),
    (["--task", "/nonexistent.jsonl"], "/nonexistent.jsonl: no such file"),
    (["--resume", "true"], "holds no run"),
    (["--resume", "true", "--overwrite", "true"], "contradict each other"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a)[:40] for a, _ in BAD])
def test_bad_input_one_line_nonzero_nothing_changed(tmp_path, capsys, monkeypatch, argv, message):
    files = _bad_files(tmp_path)
    run_dir = tmp_path / "existing"
    run_dir.mkdir()
    (run_dir / "keep.txt").write_text("untouched")
    argv = [a.format(missing=tmp_path / "nope.yaml", **files) for a in argv]
    if "--output_dir" not in argv:
        argv += ["--output_dir", str(run_dir)]
    before = {p: _digest(p) for p in tmp_path.rglob("*") if p.is_file()}
    monkeypatch.setattr(sys, "argv", ["antisd", "train", "--model", "testbed", "--steps", "1", *argv] if "--model" not in argv else ["antisd", "train", "--steps", "1", *argv])
    code = cli.entry()
    assert code != 0
    err = _one_error_line(capsys.readouterr().err)
    assert message in err, err
    after = {p: _digest(p) for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # nothing in any existing file or run directory changed


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

"""Bad input to every command (issue #19): exit code ≠ 0, exactly one `antisd: error:` line on stderr naming the
problem, nothing created or changed on disk, within 10 s.

Each case is a whole command line after `antisd`, run in-process through the console script's error path
(`cli.entry`), in an empty working directory (so a default output directory such as runs/train would show up);
`{name}` is one of the files made by `_files`. A handful also run as real subprocesses, where nothing else may
reach stderr (third-party warnings, progress bars).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from antisd import cli
ENV = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def _files(tmp: Path) -> dict[str, Path]:
    texts = {
        "yaml_syntax": ("bad.yaml", "steps: [1, 2\n"),
        "yaml_list": ("list.yaml", "- steps\n"),
        "yaml_key": ("key.yaml", "stepz: 3\n"),
        "yaml_dup": ("dup.yaml", "steps: 3\nlearning_rate: 0.001\nsteps: 4\n"),
        "yaml_none": ("none.yaml", "steps:\n"),
        "jsonl_bad": ("bad.jsonl", '{"prompt": "q", "answer": "1"}\n{not json\n'),
        "jsonl_missing": ("miss.jsonl", '{"prompt": "q", "answer": "1"}\n{"prompt": "q"}\n'),
        "one_row": ("one.jsonl", '{"prompt": "What is 1+1?", "answer": "2"}\n'),
        "code_no_tests": ("code.jsonl", '{"prompt": "Write f.", "tests": ["assert f() == 1"]}\n{"prompt": "Write g."}\n'),
        "code_bad_tests": ("codebad.jsonl", '{"prompt": "Write f.", "tests": ["assert f() == 1"]}\n{"prompt": "Write g.", "ground_truth": {"inputs": [1], "outputs": []}}\n'),
        "rollouts_bad": ("rollouts.jsonl", '{"problem": 0, "completion": "x"}\n{"problem": 99, "completion": "y"}\n'),
        "a_file": ("plainfile", "x"),
    }
    out = {}
    for name, (fname, text) in texts.items():
        (tmp / fname).write_text(text)
        out[name] = tmp / fname
    (tmp / "latin.jsonl").write_bytes(b'{"prompt": "caf\xe9", "answer": "1"}\n')
    out["not_utf8"] = tmp / "latin.jsonl"
    out["a_dir"] = tmp / "somedir"
    out["a_dir"].mkdir()
    (out["a_dir"] / "keep.txt").write_text("untouched")

    import shutil

    from antisd.infra.models import shipped_model_dir

    broken = tmp / "broken_model"
    shutil.copytree(shipped_model_dir(), broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 100)
    out["broken_model"] = broken
    existing = tmp / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("untouched")
    out["existing"] = existing
    return out


T = ["train", "--steps", "1"]  # train cases start here; the default model is the shipped testbed
CASES = [
    # --- antisd (top level) ---
    (["trian"], "unknown command 'trian'; did you mean 'train'?"),
    (["--frob"], "unknown command '--frob'"),
    # --- antisd train: values ---
    ([*T, "--steps", "0"], "--steps must be ≥ 1"),
    ([*T, "--steps", "-3"], "--steps must be ≥ 1"),
    ([*T, "--steps", "1.5"], "--steps: cannot read '1.5' as int"),
    ([*T, "--steps", "many"], "--steps: cannot read 'many' as int"),
    ([*T, "--steps"], "--steps needs a value"),
    ([*T, "--stepz", "3"], "antisd train has no option --stepz; did you mean --steps?"),
    ([*T, "--antisd_lambda_max", "nan"], "is not a finite number"),
    ([*T, "--antisd_lambda_max", "inf"], "is not a finite number"),
    ([*T, "--antisd_lambda_max", "-1"], "antisd_lambda_max must be ≥ 0"),
    ([*T, "--learning_rate", "nan"], "is not a finite number"),
    ([*T, "--learning_rate", "0"], "--learning_rate must be a finite number > 0"),
    ([*T, "--learning_rate", "-1e-4"], "--learning_rate must be a finite number > 0, got -0.0001"),
    ([*T, "--temperature", "-1"], "--temperature must be a finite number > 0"),
    ([*T, "--eval_temperature", "0"], "--eval_temperature must be a finite number > 0"),
    ([*T, "--num_generations", "1"], "--num_generations must be ≥ 2"),
    ([*T, "--prompts_per_step", "0"], "--prompts_per_step must be ≥ 1"),
    ([*T, "--max_completion_length", "0"], "--max_completion_length must be ≥ 1"),
    ([*T, "--eval_k", "-1"], "--eval_k must be ≥ 0"),
    ([*T, "--threads", "0"], "--threads must be ≥ 1"),
    ([*T, "--grad_accum", "0"], "--grad_accum must be ≥ 1"),
    ([*T, "--seed", "4294967296"], "--seed must be in [0, 2^32 − 1], got 4294967296"),
    ([*T, "--seed", "-1"], "--seed must be in [0, 2^32 − 1], got -1"),
    ([*T, "--bf16", "maybe"], "--bf16: cannot read 'maybe' as bool"),
    ([*T, "--loss_type", "dapoo"], "--loss_type must be one of"),
    ([*T, "--vllm_mode", "remote"], "--vllm_mode must be one of ['colocate', 'server'], got 'remote'"),
    ([*T, "--report_to", "wandbb"], "--report_to 'wandbb': 'wandbb' is not one of"),
    ([*T, "--model", ""], "--model is empty"),
    ([*T, "--preset", "antisdd"], "Unknown preset 'antisdd'"),
    ([*T, "--antisd_shaping", "papr"], "antisd_shaping='papr' is not one of"),
    ([*T, "--antisd_signal", "bogus"], "antisd_signal='bogus' is not one of"),
    ([*T, "--antisd_gate_warmup_steps", "0"], "needs antisd_gate_warmup_steps ≥ 1"),
    ([*T, "--antisd_gate_up_ratio", "0.5"], "no hysteresis band"),
    ([*T, "--antisd_lambda_min", "0.6"], "antisd_lambda_min (0.6) is above antisd_lambda_max (0.5)"),
    ([*T, "--antisd_ppl_spike", "0.5"], "antisd_ppl_spike must be > 1"),
    ([*T, "--antisd_len_mask", "0"], "antisd_len_mask must be ≥ 1"),
    ([*T, "--resume", "true", "--overwrite", "true"], "contradict each other"),
    ([*T, "--accept_changes", "true"], "--accept_changes true applies to --resume true only"),
    ([*T, "--eval_every", "5", "--eval_k", "0"], "--eval_every 5 evaluates with --eval_k samples per problem, but --eval_k is 0"),
    ([*T, "--output_dir", " "], "--output_dir is empty"),
    # --- antisd train: files and directories ---
    ([*T, "--config", "{missing}"], "does not exist"),
    ([*T, "--config", "{yaml_syntax}"], "bad.yaml: not valid YAML at line 2"),
    ([*T, "--config", "{yaml_list}"], "the top level must be a mapping"),
    ([*T, "--config", "{yaml_key}"], "unknown key 'stepz'"),
    ([*T, "--config", "{yaml_dup}"], "key 'steps' is given twice"),
    ([*T, "--config", "{yaml_none}"], "steps: None is not allowed"),
    ([*T, "--trl_args", "{{bogus_field: 1}}"], "'bogus_field' is not a GRPOConfig field"),
    ([*T, "--trl_args", "{{antisd_gate: true}}"], "trl_args may not set AntiSD fields"),
    ([*T, "--trl_args", "{{unclosed: [1"], "--trl_args: cannot read"),
    ([*T, "--trl_args", "{{learning_rate: abc}}"], "--trl_args learning_rate: antisd train sets it from --learning_rate"),
    ([*T, "--trl_args", "{{epsilon_high: abc}}"], "--trl_args epsilon_high: cannot read 'abc' as float"),
    ([*T, "--trl_args", "{{num_iterations: 1.5}}"], "--trl_args num_iterations: cannot read 1.5 as int"),
    ([*T, "--trl_args", "{{max_steps: 5}}"], "--trl_args max_steps: antisd train sets it from --steps"),
    ([*T, "--launch_config", "{yaml_list}"], "list.yaml: the top level must be a mapping"),
    ([*T, "--config", "{a_dir}"], "somedir is a directory, not a YAML file"),
    ([*T, "--output_dir", "{a_file}"], "is a file, not a directory"),
    ([*T, "--output_dir", "{a_file}/run"], "is a file, so nothing can be written under it"),
    ([*T, "--launch_config", "{missing}"], "--launch_config"),
    ([*T, "--initial_eval_from", "{missing}"], "no such run directory"),
    ([*T, "--model", "/nonexistent/model"], "is not a model directory"),
    ([*T, "--model", "{broken_model}"], "are damaged"),
    ([*T, "--task", "{jsonl_bad}"], "bad.jsonl:2: not valid JSON"),
    ([*T, "--task", "{jsonl_missing}"], "miss.jsonl:2: field 'answer' is missing"),
    ([*T, "--task", "{not_utf8}"], "latin.jsonl: not UTF-8"),
    ([*T, "--task", "/nonexistent.jsonl"], "/nonexistent.jsonl: no such file"),
    ([*T, "--task", "code:{code_no_tests}"], "code.jsonl:2: field 'tests' is missing or empty"),
    ([*T, "--task", "code:{code_bad_tests}"], "codebad.jsonl:2: field 'ground_truth': tests: 1 inputs but 0 outputs"),
    ([*T, "--task", "code:data/x.csv"], "--task code:data/x.csv: expected code:PATH.jsonl, code:PATH.parquet or code:hf:ORG/NAME[:split]"),
    ([*T, "--task", "{one_row}"], "1 training row(s) (after 0 held out), fewer than --prompts_per_step 8"),
    ([*T, "--task", "nosuchtask"], "Unknown task 'nosuchtask'"),
    ([*T, "--resume", "true", "--output_dir", "{existing}"], "holds no run"),
    # --- antisd eval ---
    (["eval", "--k", "-1"], "--k must be ≥ 0, got -1"),
    (["eval", "--top_p", "1.5"], "--top_p must be in (0, 1], got 1.5"),
    (["eval", "--top_p", "0"], "--top_p must be in (0, 1], got 0.0"),
    (["eval", "--temperature", "0"], "--temperature must be a finite number > 0"),
    (["eval", "--max_new_tokens", "0"], "--max_new_tokens must be ≥ 1"),
    (["eval", "--problems", "-2"], "--problems must be ≥ 0"),
    (["eval", "--batch_size", "0"], "--batch_size must be ≥ 1"),
    (["eval", "--backend", "tgi"], "--backend must be one of ['transformers', 'vllm']"),
    (["eval", "--benchmarks", "aime99"], "--benchmarks must be one of"),
    (["eval", "--benchmarks", ""], "--benchmarks is empty"),
    (["eval", "--data", "name=/missing.jsonl"], "'name' is not among --benchmarks ['countdown'], so the file would not be used"),
    (["eval", "--benchmarks", "countdown,math500", "--data", "math500=/missing.jsonl"], "/missing.jsonl: no such file"),
    (["eval", "--data", "math500"], "expected NAME=PATH"),
    (["eval", "--benchmarks", "math500"], "benchmark 'math500' (HuggingFaceH4/MATH-500, split test) is not available on this machine"),
    (["eval", "--output_dir", "{a_file}"], "is a file, not a directory"),
    (["eval", "--model", "/nonexistent/model"], "is not a model directory"),
    (["eval", "--kk", "3"], "antisd eval has no option --kk; did you mean --k?"),
    (["eval", "--output_dir", ""], "--output_dir is empty"),
    (["eval", "--benchmarks", "countdown,countdown"], "--benchmarks names ['countdown'] twice"),
    # --- antisd pmi ---
    (["pmi", "--problems", "-1"], "--problems must be ≥ 1, got -1"),
    (["pmi", "--G", "1"], "--G must be ≥ 2, got 1"),
    (["pmi", "--context", "bogus"], "--context must be one of ['', 'group', 'reference', 'group_then_reference'], got 'bogus'"),
    (["pmi", "--settings_from", "{missing}"], "not a training run directory (no run.json)"),
    (["pmi", "--preset", "antisd_relase"], "--preset must be one of"),
    ([*T, "--antisd_solution_source", "group_only"], "--antisd_solution_source was renamed --antisd_demonstration_source"),
    ([*T, "--antisd_teacher", "none"], "antisd_lambda_max=0.5 needs a teacher pass: set antisd_teacher=live"),
    ([*T, "--antisd_teacher_ema_decay", "1.0"], "antisd_teacher_ema_decay must be in [0, 1), got 1.0"),
    (["pmi", "--temperature", "0"], "--temperature must be a finite number > 0"),
    (["pmi", "--max_new_tokens", "0"], "--max_new_tokens must be ≥ 1"),
    (["pmi", "--skip_first", "-1"], "--skip_first must be ≥ 0"),
    (["pmi", "--batch_size", "0"], "--batch_size must be ≥ 1"),
    (["pmi", "--rollouts", "{missing}"], "no such file"),
    (["pmi", "--rollouts", "{rollouts_bad}", "--problems", "4"], "rollouts.jsonl:2: 'problem' must be an index in 0..3"),
    (["pmi", "--deliberation", ""], "--deliberation is empty"),
    (["pmi", "--output_dir", "{a_file}"], "is a file, not a directory"),
    (["pmi", "--model", "/nonexistent/model"], "is not a model directory"),
    (["pmi", "--task", "/nonexistent.jsonl"], "/nonexistent.jsonl: no such file"),
    (["pmi", "--output_dir", ""], "--output_dir is empty"),
    # --- antisd compare ---
    (["compare", "--seeds", "0"], "--seeds must be ≥ 1, got 0"),
    (["compare", "--first_seed", "-1"], "--first_seed must be ≥ 0"),
    (["compare", "--baseline", "sd", "--variants", "grpo,antisd"], "--baseline 'sd' is not among --variants ['grpo', 'antisd']"),
    (["compare", "--variants", "grpo,grpo"], "--variants names ['grpo'] twice"),
    (["compare", "--variants", ""], "--variants is empty"),
    (["compare", "--variants", "grpo,antisd@lambda=2"], "is not field=value with an antisd_* field"),
    (["compare", "--variants", "grpo,antisdd"], "Unknown preset 'antisdd'"),
    (["compare", "--variants", "grpo,antisd", "--steps", "3", "--eval_every", "1"], "variant 'antisd': its warm-up of 5 steps (λ = 0) is not shorter than --steps 3"),
    (["compare", "--eval_every", "0"], "--eval_every must be ≥ 1"),
    (["compare", "--eval_every", "200"], "--eval_every 200 > --steps 100"),
    (["compare", "--learning_rate", "0"], "--learning_rate must be a finite number > 0"),
    (["compare", "--target_halfwidth", "0"], "--target_halfwidth must be a finite number > 0"),
    (["compare", "--output_dir", "{a_file}"], "is a file, not a directory"),
    (["compare", "--model", ""], "--model is empty"),
    (["compare", "--report_only", "true", "--output_dir", "{existing}"], "holds no evaluated runs"),
    (["compare", "--plan_seeds", "true", "--output_dir", "{existing}"], "needs finished grpo runs"),
    # --- antisd models ---
    (["models"], "antisd models needs a sub-command"),
    (["models", "install"], "antisd models install needs exactly one model name"),
    (["models", "install", "a", "b"], "antisd models install needs exactly one model name"),
    (["models", "install", "gpt5"], "Unknown model 'gpt5'"),
    (["models", "remove", "x"], "antisd models: unknown sub-command 'remove'"),
    # --- antisd testbed ---
    (["testbed"], "antisd testbed needs a sub-command: build or check"),
    (["testbed", "frobnicate"], "antisd testbed: unknown sub-command 'frobnicate'"),
    (["testbed", "check", "--k", "0"], "--k must be ≥ 1, got 0"),
    (["testbed", "check", "--problems", "0"], "--problems must be ≥ 1"),
    (["testbed", "check", "--G", "1"], "--G must be ≥ 2"),
    (["testbed", "check", "--out", "{a_dir}"], "somedir is a directory; give a file name"),
    (["testbed", "check", "--out", "{a_file}/x.json"], "is a file, so nothing can be written under it"),
    (["testbed", "check", "--model", "/nonexistent/model"], "is not a model directory"),
    (["testbed", "build", "--hidden_size", "0"], "--hidden_size must be a positive multiple of 32"),
    (["testbed", "build", "--hidden_size", "48"], "--hidden_size must be a positive multiple of 32"),
    (["testbed", "build", "--steps", "0"], "--steps must be ≥ 1"),
    (["testbed", "build", "--p_context", "1.5"], "--p_context must be in [0.0, 1.0], got 1.5"),
    (["testbed", "build", "--style", "fancy"], "--style must be one of ['plain', 'varied'], got 'fancy'"),
    (["testbed", "build", "--vocab_size", "10"], "--vocab_size must be ≥ 300"),
    (["testbed", "build", "--lr", "-1"], "--lr must be a finite number > 0"),
    (["testbed", "build", "--out", "{a_file}"], "is a file, not a directory"),
    (["testbed", "build", "--out", ""], "--out is empty"),
]


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under root (directories included) with the digest of its contents."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir") for p in sorted(root.rglob("*"))}


def test_the_table_covers_every_command():
    assert len(CASES) >= 60
    commands = {argv[0] if argv[0] in ("train", "eval", "pmi", "compare", "models", "testbed") else "antisd" for argv, _ in CASES}
    assert commands == {"antisd", "train", "eval", "pmi", "compare", "models", "testbed"}


@pytest.mark.parametrize("argv, message", CASES, ids=[" ".join(a)[:48] for a, _ in CASES])
def test_bad_input_one_line_nonzero_nothing_changed(tmp_path, capsys, monkeypatch, argv, message):
    files = _files(tmp_path)
    work = tmp_path / "work"  # the working directory: default output directories would appear here
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("ANTISD_CACHE", str(tmp_path / "cache"))
    argv = [a.format(missing=tmp_path / "nope.yaml", **files) for a in argv]
    before = _snapshot(tmp_path)
    monkeypatch.setattr(sys, "argv", ["antisd", *argv])
    if argv[0] == "train":  # time the refusal, not the cold import of TRL that train.main does lazily (≈ 7 s on slow CPUs)
        __import__("antisd.integrations.trl")
    start = time.perf_counter()
    code = cli.entry()
    seconds = time.perf_counter() - start
    out, err = capsys.readouterr()
    assert code != 0
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("antisd: error: "), err
    assert message in lines[0], lines[0]
    assert _snapshot(tmp_path) == before  # nothing created, changed or removed
    assert seconds < 10, f"{seconds:.1f} s to refuse"


SUBPROCESS = [
    ["train", "--seed", "4294967296"],
    ["train", "--learning_rate", "-1e-4"],
    ["train", "--task", "{one_row}", "--steps", "1"],
    ["eval", "--k", "-1"],
    ["pmi", "--G", "1"],
    ["compare", "--seeds", "0"],
    ["models", "install"],
    ["testbed", "build", "--hidden_size", "0"],
]


@pytest.mark.slow
@pytest.mark.parametrize("argv", SUBPROCESS, ids=[" ".join(a)[:40] for a in SUBPROCESS])
def test_console_script_prints_exactly_one_line(tmp_path, argv):
    """The real console script: nothing else reaches stderr (no warning, no progress bar), nothing is written."""
    files = _files(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    before = _snapshot(tmp_path)
    done = subprocess.run([sys.executable, "-m", "antisd.cli", *[a.format(**files) for a in argv]], cwd=work, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("antisd: error: "), done.stderr
    assert _snapshot(tmp_path) == before


def test_a_run_the_output_disk_cannot_hold_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    """Issue #20: two checkpoints and the final model must fit on the output disk (free space faked here)."""
    from antisd.commands import train

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train, "free_disk_bytes", lambda path: 1000)
    monkeypatch.setattr(sys, "argv", ["antisd", "train", "--steps", "2", "--output_dir", "runs/x"])
    assert cli.entry() == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("antisd: error: the output disk of runs/x has 0.00 GiB free; the run needs at least") and "\n" not in line
    assert not (tmp_path / "runs").exists()

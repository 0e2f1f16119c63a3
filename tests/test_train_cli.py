"""End-to-end runs of `antisd train` through the real CLI on a tiny in-process model (CPU, seconds each)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from antisd import cli
from antisd.integrations.trl import AntiSDTrainer
from tiny import make_tiny_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


def _run(model: Path, out: Path, preset: str, *extra: str) -> dict:
    argv = [
        "train", "--model", str(model), "--output_dir", str(out), "--preset", preset,
        "--prompts_per_step", "2", "--num_generations", "4", "--max_completion_length", "12",
        "--eval_k", "1", "--eval_problems", "2", "--save_steps", "1", *extra,
    ]  # fmt: skip
    assert cli.main(argv) == 0
    return json.loads((out / "summary.json").read_text())


@pytest.fixture
def capture(monkeypatch):
    """Record what reaches TRL's loss and what the AntiSD step saw, for every step."""
    seen = {"loss_inputs": [], "batches": []}
    original_loss, original_adv = AntiSDTrainer._compute_loss, AntiSDTrainer._antisd_advantages

    def compute_loss(self, model, inputs):
        result = original_loss(self, model, inputs)  # after: the per-token term may be composed inside the loss
        seen["loss_inputs"].append({k: inputs[k].detach().clone() for k in ("advantages", "prompt_ids", "completion_ids")})
        return result

    def antisd_advantages(self, prompts, out):
        adv = original_adv(self, prompts, out)
        seen["batches"].append((self.last_antisd_batch, {f"antisd_{k}": v for k, v in self.args.antisd.to_dict().items()}, self.gate.warm))
        return adv

    monkeypatch.setattr(AntiSDTrainer, "_compute_loss", compute_loss)
    monkeypatch.setattr(AntiSDTrainer, "_antisd_advantages", antisd_advantages)
    return seen


def _rows(prompt_ids, completion_ids, adv):
    return {(tuple(p.tolist()), tuple(c.tolist())): a for p, c, a in zip(prompt_ids, completion_ids, adv)}


def test_resume_restores_gate_without_new_warmup(tiny_model, tmp_path, capture):
    gate_args = ["--antisd_gate_warmup_steps", "2", "--antisd_gate_signal", "teacher_entropy_median"]
    first = _run(tiny_model, tmp_path / "run", "antisd", "--steps", "2", *gate_args)
    assert first["gate"]["warm"] is not None and first["gate"]["steps"] == 2
    state = json.loads((tmp_path / "run" / "checkpoint-2" / "antisd_state.json").read_text())
    assert state["gate"] == first["gate"]
    resumed = _run(tiny_model, tmp_path / "run", "antisd", "--steps", "3", "--resume", "true", *gate_args)
    assert resumed["steps"] == 3
    assert resumed["gate"]["warm"] == first["gate"]["warm"]  # not re-calibrated from the new step
    assert resumed["gate"]["warm_values"] == first["gate"]["warm_values"]
    assert resumed["gate"]["steps"] == 3
    batch, _, _ = capture["batches"][-1]
    assert batch.step == 2  # the resumed step ran after warm-up, so the gate decided it
    assert capture["batches"][-1][0].gate_on == resumed["gate"]["active"] or resumed["gate"]["lag"] == 1


def test_grpo_preset_is_plain_trl_unless_given_a_teacher(tiny_model, tmp_path, capture):
    _run(tiny_model, tmp_path / "grpo", "grpo", "--steps", "1")
    assert capture["batches"] == [] and capture["loss_inputs"][0]["advantages"].dim() == 1  # no teacher, TRL's [B]
    lines = [json.loads(x) for x in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert not any(k.startswith("antisd/") for line in lines for k in line)
    _run(tiny_model, tmp_path / "grpo-diag", "grpo", "--steps", "1", "--antisd_teacher", "live", "--antisd_diagnostics", "true")
    batch, _, _ = capture["batches"][0]
    loss_in = capture["loss_inputs"][1]
    assert loss_in["advantages"].dim() == 2
    want = _rows(batch.prompt_ids, batch.completion_ids, batch.seq_adv_B[:, None].expand(-1, batch.completion_ids.size(1)))
    got = _rows(loss_in["prompt_ids"], loss_in["completion_ids"], loss_in["advantages"])
    for key in want:
        assert torch.equal(got[key], want[key])  # λ = 0: bit-identical to GRPO's sequence advantages


def test_run_directory_contents(tiny_model, tmp_path, capsys):
    out = tmp_path / "dir"
    _run(tiny_model, out, "antisd", "--steps", "1")
    said = capsys.readouterr().out
    assert f"outputs in {out}/" in said and f"antisd eval --model {out}/final" in said  # where the outputs are, what next
    assert "warning: --antisd_gate_warmup_steps 5 ≥ --steps 1" in said  # a run that cannot act as AntiSD says so
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "plots.png", "checkpoint-1/antisd_state.json", "final/config.json"):
        assert (out / name).exists(), name
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    keys = set().union(*lines)
    for key in ("reward/reward", "antisd/u_mean", "antisd/frac_u_neg", "antisd/gate_on", "antisd/demonstration_fraction", "eval/avg@1", "train/entropy"):
        assert key in keys, key
    assert "signal: antisd" in (out / "config.yaml").read_text()


def test_bad_config_key_is_named(tmp_path, tiny_model):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("stepz: 3\n")
    with pytest.raises(ValueError, match="unknown key 'stepz'.*Did you mean 'steps'"):
        cli.main(["train", "--config", str(cfg), "--model", str(tiny_model)])


def test_bad_preset_and_field_values_are_named(tmp_path, tiny_model):
    with pytest.raises(KeyError, match="Did you mean 'antisd'"):
        cli.main(["train", "--model", str(tiny_model), "--preset", "antisdd", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="antisd_shaping='papr'"):
        cli.main(["train", "--model", str(tiny_model), "--antisd_shaping", "papr", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="--steps: cannot read 'many' as int"):
        cli.main(["train", "--steps", "many"])


def test_tokenizer_without_chat_template_is_refused(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    broken = tmp_path / "nochat"
    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.chat_template = None
    tok.save_pretrained(broken)
    for f in ("config.json", "model.safetensors"):
        (broken / f).write_bytes((tiny_model / f).read_bytes())
    with pytest.raises(ValueError, match="has no chat template"):
        cli.main(["train", "--model", str(broken), "--output_dir", str(tmp_path / "o"), "--steps", "1"])


def test_teacher_prompt_over_budget_is_truncated_and_counted(tiny_model, tmp_path, capture):
    _run(tiny_model, tmp_path / "t", "antisd", "--steps", "1", "--antisd_max_reprompt_len", "12")
    lines = [json.loads(x) for x in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    counted = [x["antisd/teacher_prompt_truncated"] for x in lines if "antisd/teacher_prompt_truncated" in x]
    assert counted == [8.0]  # every one of the 2 × 4 teacher prompts was longer than 12 tokens
    batch, _, _ = capture["batches"][0]
    assert batch.signal_mask_BT.any()


def test_nonfinite_logprobs_are_dropped_and_counted(tiny_model, tmp_path, capture, monkeypatch):
    original = AntiSDTrainer._score

    def poisoned(self, ids, mask, n, entropy=True, model=None):
        logp, ent = original(self, ids, mask, n, entropy, model=model)
        logp[0, 0] = float("-inf")  # one valid token of the first rollout (the teacher; the student comes from the loss)
        return logp, ent

    monkeypatch.setattr(AntiSDTrainer, "_score", poisoned)
    _run(tiny_model, tmp_path / "nf", "no_gate", "--steps", "1")
    batch, _, _ = capture["batches"][0]
    assert not batch.signal_mask_BT[0, 0]
    assert torch.isfinite(capture["loss_inputs"][0]["advantages"]).all()
    lines = [json.loads(x) for x in (tmp_path / "nf" / "metrics.jsonl").read_text().splitlines()]
    assert [x["antisd/nonfinite_teacher_tokens"] for x in lines if "antisd/nonfinite_teacher_tokens" in x] == [1.0]


def test_category_means_are_logged_every_n_steps(tiny_model, tmp_path):
    _run(tiny_model, tmp_path / "cat", "antisd", "--steps", "2", "--antisd_log_categories_every", "2", "--max_completion_length", "24")
    lines = [json.loads(x) for x in (tmp_path / "cat" / "metrics.jsonl").read_text().splitlines()]
    logged = [x["step"] for x in lines if any(k.startswith("antisd/cat/") for k in x)]
    assert logged == [1]  # global_step 0 is divisible by 2 (logged at the end of step 1); step 1 is not


def test_reference_solution_fallback_is_a_named_option(tiny_model, tmp_path, capture):
    _run(tiny_model, tmp_path / "ref", "antisd", "--steps", "1", "--task", "gsm", "--antisd_demonstration_source", "group_then_reference")
    batch, _, _ = capture["batches"][0]
    # a random model solves nothing, so every teacher prompt falls back to the worked solution
    assert all("Your previous attempt:" in m[-1]["content"] and "\\boxed{" in m[-1]["content"] for m in batch.teacher_prompts)
    lines = [json.loads(x) for x in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    assert [x["antisd/reference_fraction"] for x in lines if "antisd/reference_fraction" in x] == [1.0]
    _run(tiny_model, tmp_path / "grp", "antisd", "--steps", "1", "--task", "gsm")  # default: group_only
    batch, _, _ = capture["batches"][1]
    assert not any("Your previous attempt:" in m[-1]["content"] for m in batch.teacher_prompts)


@pytest.mark.parametrize(
    "preset, extra",
    [
        ("no_gate", []),  # paper shaping, term on from step 1
        ("no_gate", ["--grad_accum", "2"]),  # two micro-batches composed at two loss calls
        ("no_gate", ["--trl_args", "{num_iterations: 2}"]),  # TRL computes old log-probs: they are used
        # σ_ref warm-up forward, then release shaping at the loss; an entropy gate and no spike cut because the random
        # tiny model's teacher PPL (≈ 400) is far above the release's spike of 3
        ("antisd_release", ["--antisd_gate_warmup_steps", "1", "--antisd_gate_signal", "teacher_entropy_median", "--antisd_ppl_spike", "1e9",
                            "--antisd_warmup_statistic", "step_mean", "--antisd_gate_min_threshold", "none", "--antisd_gate_rearm_from_floor", "false"]),
    ],
)
@pytest.mark.exact
def test_advantages_unchanged_without_the_extra_student_forward(tiny_model, tmp_path, capture, preset, extra):
    """Issue #13: the per-token term composed at loss time from the training forward's detached log-probs gives the
    advantages the separate no-grad student forward gave, to float tolerance."""
    trl = extra[extra.index("--trl_args") + 1].strip("{} ") if "--trl_args" in extra else ""
    args = ["--steps", "2", "--seed", "1", *(x for x in extra if x != "--trl_args" and not x.startswith("{"))]
    runs = []
    for separately in (True, False):
        capture["loss_inputs"].clear()
        trl_args = "{" + ", ".join(x for x in (trl, f"score_student_separately: {str(separately).lower()}") if x) + "}"
        _run(tiny_model, tmp_path / str(separately), preset, *args, "--trl_args", trl_args)
        runs.append([_rows(x["prompt_ids"], x["completion_ids"], x["advantages"]) for x in capture["loss_inputs"]])
    reference, deferred = runs
    assert len(reference) == len(deferred) > 0
    assert reference[0].keys() == deferred[0].keys()  # the first loss call sees the same rollouts
    compared = varied = 0
    for want, got in zip(reference, deferred):
        for key in want.keys() & got.keys():  # later steps may sample differently after float-level weight changes
            torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=1e-5)
            compared += 1
            varied += int(got[key].dim() == 1 and not torch.equal(got[key], got[key][0].expand_as(got[key])))
    assert compared >= len(reference[0]) and varied > 0  # the per-token term was on for some compared row


def _merged(record_dir: Path) -> dict:
    """The records of every process of a run, merged (rows by global index; gate decisions must agree)."""
    merged: dict = {"teacher": {}, "lam": {}, "gate": {}, "loss": {}}
    for path in sorted(record_dir.glob("rank*.json")):
        rec = json.loads(path.read_text())
        for key in ("teacher", "lam", "loss"):
            for step, rows in rec[key].items():
                merged[key].setdefault(step, {}).update(rows)
        for step, on in rec["gate"].items():
            assert merged["gate"].setdefault(step, on) == on, f"processes disagree on the gate at step {step}"
    return merged


@pytest.mark.exact
def test_two_processes_match_one_process(tmp_path):
    """Issue #9: 2 CPU processes (torchrun, gloo) vs 1 process, same global batch, seed and rollouts: the same gate
    decisions and teacher prompts, advantages equal to float tolerance, and one metrics file without duplicates.
    A group is split across the two processes (3 prompts × 4 rollouts = 12 rows, 6 per process). The warm-up
    statistic is the per-step one: the release's micro-batch statistic (each process's upper median, averaged over
    processes) depends on the process count by its definition; the closing ratio 0.5 keeps λ_i > 0 in play."""
    import subprocess

    driver = Path(__file__).resolve().parent / "dist_driver.py"
    common = ["train", "--model", "testbed", "--preset", "antisd_release", "--antisd_gate_warmup_steps", "1", "--steps", "3",
              "--antisd_warmup_statistic", "step_mean", "--antisd_gate_down_ratio", "0.5",
              "--prompts_per_step", "3", "--num_generations", "4", "--max_completion_length", "64", "--eval_k", "2",
              "--eval_problems", "5", "--save_steps", "3", "--threads", "1", "--seed", "0"]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, str(driver), *common, "--output_dir", str(tmp_path / "one")],
                         env=env | {"ANTISD_RECORD": str(tmp_path / "rec1")}, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"]
    two = subprocess.run([*torchrun, str(driver), *common, "--output_dir", str(tmp_path / "two")],
                         env=env | {"ANTISD_RECORD": str(tmp_path / "rec2"), "ANTISD_REPLAY": str(tmp_path / "rec1" / "rank0.json")},
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _merged(tmp_path / "rec1"), _merged(tmp_path / "rec2")
    assert len(list((tmp_path / "rec2").glob("rank*.json"))) == 2
    assert a["gate"] == b["gate"] and len(a["gate"]) == 3
    assert a["teacher"] == b["teacher"]  # every teacher prompt, siblings from the other process included
    demos = sum("Your previous attempt" in t[-1]["content"] for rows in a["teacher"].values() for t in rows.values())
    assert demos > 0
    for step in a["lam"]:
        assert a["lam"][step].keys() == b["lam"][step].keys()
        for row in a["lam"][step]:
            assert b["lam"][step][row] == pytest.approx(a["lam"][step][row], abs=1e-5)
    compared = 0
    for step in a["loss"]:
        assert a["loss"][step].keys() == b["loss"][step].keys()
        for key, adv in a["loss"][step].items():
            assert b["loss"][step][key] == pytest.approx(adv, abs=2e-5)
            compared += 1
    assert compared == 3 * 12
    assert any(lam > 0 for lam in a["lam"]["1"].values()) or any(lam > 0 for lam in a["lam"]["2"].values())
    lines = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    train_steps = [x["step"] for x in lines if "antisd/gate_on" in x]
    eval_steps = [x["step"] for x in lines if "eval/avg@2" in x]
    assert train_steps == [1, 2, 3] and eval_steps == [0, 3]  # each once: the main process alone writes
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["after"]["eval/avg@2"] == [x for x in lines if "eval/avg@2" in x][-1]["eval/avg@2"]
    assert (tmp_path / "two" / "checkpoint-3" / "antisd_state.json").exists()
    for said in ("precision:", "held-out before:", "held-out after:", "outputs in"):  # the main process alone prints
        assert two.stdout.count(said) == 1, (said, two.stdout[-3000:])


def test_report_to_tensorboard_and_model_card(tiny_model, tmp_path):
    """Issue #9: --report_to reaches TRL (TensorBoard events with the antisd/* scalars); the card names antisd."""
    out = tmp_path / "tb"
    _run(tiny_model, out, "no_gate", "--steps", "2", "--report_to", "tensorboard")
    events = list(out.rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    blob = b"".join(e.read_bytes() for e in events)
    assert b"antisd/u_mean" in blob and b"antisd/lambda_mean" in blob
    card = (out / "final" / "README.md").read_text()
    assert "AntiSD" in card and "2605.11609" in card and "antisd" in card and "Anti-Self-Distillation" in card
    assert f"Trained from `{tiny_model}`" in card and "| eval/avg@1 |" in card and "None" not in card  # our card, not TRL's
    assert (out / "README.md").read_text() == card


def test_a_run_is_quiet_unless_verbose(tiny_model, tmp_path):
    """The console script prints no third-party warning or progress bar on stderr (issue #19); --verbose does."""
    import subprocess

    argv = [sys.executable, "-m", "antisd.cli", "train", "--model", str(tiny_model), "--preset", "grpo", "--steps", "1", "--prompts_per_step", "2",
            "--num_generations", "2", "--max_completion_length", "8", "--eval_k", "1", "--eval_problems", "2", "--threads", "1"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in cli.QUIET_ENV} | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    quiet = subprocess.run([*argv, "--output_dir", str(tmp_path / "q")], env=env, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr[-2000:]
    loud = subprocess.run([*argv, "--output_dir", str(tmp_path / "v"), "--verbose"], env=env, capture_output=True, text=True, timeout=300)
    assert loud.returncode == 0 and "Loading weights" in loud.stderr, loud.stderr[-2000:]


@pytest.mark.exact
def test_teacher_scoring_in_smaller_row_batches_changes_nothing(tiny_model, tmp_path, capture):
    """score_batch_size only splits the no-grad teacher forward into fewer rows at a time (less memory)."""
    runs = []
    for trl_args in ("{}", "{score_batch_size: 3}"):
        capture["loss_inputs"].clear()
        _run(tiny_model, tmp_path / trl_args.strip("{}").replace(": ", "") or "default", "no_gate", "--steps", "1", "--trl_args", trl_args)
        runs.append(_rows(capture["loss_inputs"][0]["prompt_ids"], capture["loss_inputs"][0]["completion_ids"], capture["loss_inputs"][0]["advantages"]))
    assert runs[0].keys() == runs[1].keys()
    for key in runs[0]:
        torch.testing.assert_close(runs[1][key], runs[0][key], atol=1e-6, rtol=1e-5)
    assert any(not torch.equal(a, a[0].expand_as(a)) for a in runs[0].values())


def test_keep_checkpoints_prunes_only_after_a_checkpoint_is_complete(tiny_model, tmp_path):
    """Issue #20: the newest --keep_checkpoints complete checkpoints stay; 0 keeps all."""
    _run(tiny_model, tmp_path / "two", "grpo", "--steps", "4", "--keep_checkpoints", "2")
    assert sorted(p.name for p in (tmp_path / "two").glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]
    _run(tiny_model, tmp_path / "all", "grpo", "--steps", "3", "--keep_checkpoints", "0")
    assert sorted(p.name for p in (tmp_path / "all").glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]


def test_trainer_built_from_python_refuses_adamw_on_bf16_weights(tiny_model, tmp_path):
    """Issue #20: the precision check lives in AntiSDTrainer, so Python users get it too (not only the CLI)."""
    from datasets import Dataset

    from antisd.integrations.trl import AntiSDConfig
    from antisd.infra.models import load_model
    from antisd.tasks import load_task

    model, tok = load_model(str(tiny_model))
    task = load_task("countdown")
    args = AntiSDConfig(output_dir=str(tmp_path / "py"), max_steps=1, per_device_train_batch_size=4, num_generations=2, report_to="none")
    build = lambda m: AntiSDTrainer(model=m, reward_funcs=[task.reward_fn()], args=args, train_dataset=Dataset.from_list(task.train_rows[:8]), processing_class=tok)  # noqa: E731
    assert build(model).antisd_precision.startswith("precision: weights float32")
    with pytest.raises(ValueError, match="trainable weights are bfloat16: AdamW would update them in 16 bits"):
        build(model.to(torch.bfloat16))


def test_dry_run_reports_checkpoint_size_and_disk_need(capsys):
    assert cli.main(["train", "--config", "configs/recipes/qwen3-8b.yaml", "--dry_run", "true"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("disk:"))
    assert "a checkpoint ≈ 122" in line and "held at once (--keep_checkpoints 2)" in line, line  # 16 B × 8.19B params

"""One teacher pass for every caller (issue #21): PMI scores what training scores, the adapters report the same
context metrics, and the three teacher sources (live, frozen, EMA) behave as their definitions say."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from antisd import cli
from antisd.commands import pmi as pmi_command
from antisd.integrations.trl import AntiSDConfig, AntiSDTrainer
from antisd.integrations.verl import batch as vb
from antisd.method.settings import preset
from antisd.method.teacher_pass import TeacherPass
from antisd.method.teachers import WEIGHTS_FILE
from antisd.tasks import load_task
from tiny import make_tiny_model

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
G = 4
QUESTIONS = [(f"What is {a} plus {b}? Put the final answer in \\boxed{{}}.", a + b) for a, b in [(3, 4), (5, 9), (12, 7), (8, 8), (21, 5), (6, 13)]]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def task_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("task") / "sums.jsonl"
    rows = [{"prompt": q, "answer": str(x), "reference": f"Adding gives {x}.\nSo the answer is \\boxed{{{x}}}.\nDone."} for q, x in QUESTIONS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _scripted_generation(monkeypatch, tok) -> None:
    """Training rollouts written by the test: in each group, rollouts 0 and 2 answer right, 1 and 3 wrong."""

    def generate(self, prompt_ids, *args, **kwargs):
        out = []
        for i, ids in enumerate(prompt_ids):
            text = tok.decode(ids)
            answer = next(x for q, x in QUESTIONS if q.split("?")[0] in text)
            reply = f"I add them.\nThe answer is \\boxed{{{answer if i % 2 == 0 else answer + 1}}}.\nThen I check it twice."
            out.append(tok(reply, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
        return out, None

    monkeypatch.setattr(AntiSDTrainer, "_generate_single_turn", generate)


def _train_one_step(model: Path, out: Path, task_file: Path, monkeypatch) -> tuple:
    batches = []
    original = AntiSDTrainer._antisd_advantages

    def record(self, prompts, step_out):
        result = original(self, prompts, step_out)
        batches.append((self.last_antisd_batch, list(prompts)))
        return result

    monkeypatch.setattr(AntiSDTrainer, "_antisd_advantages", record)
    argv = ["train", "--model", str(model), "--output_dir", str(out), "--task", str(task_file), "--preset", "antisd",
            "--antisd_demonstration_source", "group_then_reference", "--antisd_max_demonstration_tokens", "12",
            "--prompts_per_step", "2", "--num_generations", str(G), "--max_completion_length", "40", "--eval_k", "0", "--steps", "1"]  # fmt: skip
    assert cli.main(argv) == 0
    return batches[0]


def test_pmi_teacher_input_equals_training_byte_for_byte(tiny_model, task_file, tmp_path, monkeypatch):
    from antisd.infra.models import load_model

    _, tok = load_model(str(tiny_model))
    _scripted_generation(monkeypatch, tok)
    batch, prompts = _train_one_step(tiny_model, tmp_path / "train", task_file, monkeypatch)
    kinds = batch.teacher_inputs.kinds
    assert "demonstration" in kinds and "feedback" not in kinds, kinds  # siblings serve, and the cut budget binds (12 tokens)

    # the same rollouts through `antisd pmi`, problems matched by their prompt
    items = pmi_command._problems(load_task(str(task_file), seed=0, n_heldout=len(QUESTIONS)), len(QUESTIONS))
    index = [next(p for p, it in enumerate(items) if it.messages == prompt) for prompt in prompts]
    mask = batch.response_mask_BT.bool()
    lines = [json.dumps({"problem": index[i], "completion_ids": batch.completion_ids[i][mask[i]].tolist()}) for i in range(len(prompts))]
    (tmp_path / "rollouts.jsonl").write_text("\n".join(lines) + "\n")
    seen = []
    original_inputs = TeacherPass.inputs

    def spy(self, rollouts, *, control=False):
        result = original_inputs(self, rollouts, control=control)
        if not control:
            seen.append((rollouts, result))
        return result

    monkeypatch.setattr(TeacherPass, "inputs", spy)
    cfg = pmi_command.PMIConfig(model=str(tiny_model), task=str(task_file), problems=len(QUESTIONS), G=G, rollouts=str(tmp_path / "rollouts.jsonl"),
                                settings_from=str(tmp_path / "train"), output_dir=str(tmp_path / "pmi"), threads=1)  # fmt: skip
    pmi_command.main(cfg)
    (pmi_rollouts, pmi_inputs), = seen
    # PMI sorts rollouts by problem (stable): rollout i of training is PMI's row order.index(i)
    order = sorted(range(len(prompts)), key=lambda i: index[i])
    for k, i in enumerate(order):
        assert pmi_rollouts.rewards[k] == batch.rewards[i], f"rollout {i}: PMI graded {pmi_rollouts.rewards[k]}, training rewarded {batch.rewards[i]}"
        assert pmi_inputs.prompts[k] == batch.teacher_prompts[i], f"rollout {i}: teacher prompt differs"
        assert pmi_inputs.prompt_ids[k] == batch.teacher_inputs.prompt_ids[i], f"rollout {i}: teacher token ids differ"


def test_both_adapters_report_the_same_context_metrics(tiny_model, task_file, tmp_path, monkeypatch):
    """The TRL trainer's logged antisd/* context metrics, and the verl adapter's on the same batch after verl's
    balancer has reordered it and padded it with a synthetic row (which counts in no fraction)."""
    from antisd.infra.models import load_model
    from antisd.tasks import cut_after_last_boxed

    _, tok = load_model(str(tiny_model))
    _scripted_generation(monkeypatch, tok)
    batch, prompts = _train_one_step(tiny_model, tmp_path / "train", task_file, monkeypatch)
    logged = next(json.loads(x) for x in (tmp_path / "train" / "metrics.jsonl").read_text().splitlines() if "antisd/demonstration_fraction" in x)
    B = len(prompts)
    texts = [tok.decode(c[m.bool()], skip_special_tokens=True) for c, m in zip(batch.completion_ids, batch.response_mask_BT)]
    perm = torch.randperm(B, generator=torch.Generator().manual_seed(1)).tolist() + [0]  # a padding copy of row 0 at the end
    padding = [False] * B + [True]
    rows = vb.rollouts(
        [prompts[i] for i in perm], [texts[i] for i in perm], [batch.rewards[i] if not pad else float("nan") for i, pad in zip(perm, padding)],
        [f"u{i // G}" for i in perm], references=[None] * (B + 1), is_padding_B=padding,
        order_B=vb.rollout_order([f"u{i // G}_{i % G}_0" if not pad else "pad" for i, pad in zip(perm, padding)]),
    )  # fmt: skip
    settings = preset("antisd").replace(demonstration_source="group_then_reference", max_demonstration_tokens=12)
    tpass = TeacherPass(settings, tok, cut_demonstration=cut_after_last_boxed)
    x = tpass.inputs(rows)
    verl_metrics = tpass.context_metrics(x, None)
    assert set(verl_metrics) == {k for k in logged if k in verl_metrics} and len(verl_metrics) == 4
    for key, value in verl_metrics.items():
        assert value == logged[key], f"{key}: verl {value}, TRL {logged[key]}"
    assert [x.prompt_ids[k] for k in range(B)] == [batch.teacher_inputs.prompt_ids[i] for i in perm[:B]]
    assert x.has_context[-1] is False and x.kinds[-1] == "none"


# --- teacher sources -------------------------------------------------------------------------------------------


def _trainer(model_dir: Path, out: Path, teacher: str, steps: int = 3, **extra):
    from datasets import Dataset

    from antisd.infra.models import load_model

    model, tok = load_model(str(model_dir))
    rows = [{"prompt": [{"role": "user", "content": f"Count to {i}."}]} for i in range(8)]

    def reward(completions, **kwargs):
        return [float(i % 2) for i in range(len(completions))]

    settings = preset("no_gate").replace(teacher=teacher, **extra)
    args = AntiSDConfig(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=G, num_generations=G, max_completion_length=8, learning_rate=5e-2,
        beta=0.0, use_cpu=True, report_to="none", logging_steps=1, save_strategy="no", disable_tqdm=True, seed=0, antisd=settings,
        lr_scheduler_type="constant",
    )  # fmt: skip
    return AntiSDTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)


def _logp(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(model(ids).logits.float(), dim=-1)


def test_frozen_teacher_scores_with_the_initial_weights_after_updates(tiny_model, tmp_path):
    from antisd.infra.models import load_model

    trainer = _trainer(tiny_model, tmp_path, "frozen")
    trainer.train()
    initial, _ = load_model(str(tiny_model))
    teacher = trainer.antisd_teacher.model
    moved = [n for (n, p), q in zip(trainer.model.named_parameters(), initial.parameters()) if not torch.equal(p, q)]
    assert moved, "the policy never moved: the test would not see a drifting teacher"
    assert all(torch.equal(t, q) for t, q in zip(teacher.parameters(), initial.parameters())), "the frozen teacher's weights moved"
    ids = torch.tensor([[1, 5, 9, 14, 3, 7]])
    assert torch.equal(_logp(teacher, ids), _logp(initial, ids)) and not torch.equal(_logp(trainer.model, ids), _logp(initial, ids))
    # the last step's teacher pass scored with those weights (after two updates of the policy), through TRL's fused head
    from trl.trainer.utils import add_fused_lm_head

    add_fused_lm_head(initial, temperature=trainer.temperature, outputs=("log_probs", "entropy"))
    b = trainer.last_antisd_batch
    ids, mask = trainer._tokenize_teacher(b.teacher_inputs.prompt_ids, b.completion_ids, b.response_mask_BT)
    want, _ = trainer._score(ids, mask, b.completion_ids.size(1), False, model=initial)
    assert torch.equal(b.teacher_logp_BT[b.response_mask_BT.bool()], want[b.response_mask_BT.bool()])


@pytest.mark.parametrize("offload", [False, True])
def test_ema_teacher_is_the_hand_computed_average_of_the_weights(tiny_model, tmp_path, offload):
    from transformers import TrainerCallback

    decay = 0.7
    trainer = _trainer(tiny_model, tmp_path, "ema", teacher_ema_decay=decay, teacher_offload=offload)
    history = [[p.detach().clone() for p in trainer.model.parameters()]]

    class Record(TrainerCallback):  # after the trainer's own callbacks: sees θ after each optimizer step
        def on_step_end(self, args, state, control, **kwargs):
            history.append([p.detach().clone() for p in trainer.model.parameters()])

    trainer.add_callback(Record())
    trainer.train()
    assert len(history) == 4
    expected = [p.clone() for p in history[0]]
    for weights in history[1:]:
        for e, w in zip(expected, weights):
            e.mul_(decay).add_(w, alpha=1.0 - decay)
    got = list(trainer.antisd_teacher.model.parameters())
    assert all(torch.equal(g.cpu(), e) for g, e in zip(got, expected)), "the EMA teacher is not d·θ_T + (1 − d)·θ after every step"
    assert not all(torch.equal(g.cpu(), w) for g, w in zip(got, history[-1])) and not all(torch.equal(g.cpu(), w) for g, w in zip(got, history[0]))
    assert all(p.device.type == "cpu" for p in got)  # on the policy's device (CPU here), or offloaded to host memory


def test_teacher_state_survives_a_kill_and_resume_bit_exactly(tmp_path):
    run = ["train", "--model", "testbed", "--preset", "antisd_ema_teacher", "--antisd_teacher_ema_decay", "0.5", "--antisd_gate", "false",
           "--steps", "3", "--prompts_per_step", "2", "--num_generations", "4", "--max_completion_length", "24", "--eval_k", "0",
           "--save_steps", "1", "--learning_rate", "1e-3", "--threads", "1", "--seed", "0"]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")

    def train(out: Path, *extra: str, fault: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(HERE / "fault_driver.py"), *run, "--output_dir", str(out), *extra], capture_output=True, text=True,
                              env=env | {"ANTISD_FAULT": fault, "ANTISD_FAULT_STEP": "3"}, timeout=600)  # fmt: skip

    clean = train(tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr[-2000:]
    killed = train(tmp_path / "run", fault="marker_before")  # checkpoint-3 written but not complete: resume from 2
    assert killed.returncode == 137, killed.stderr[-2000:]
    resumed = train(tmp_path / "run", "--resume", "true")
    assert resumed.returncode == 0 and "resume: from checkpoint-2" in resumed.stdout, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    for name in (f"checkpoint-3/{WEIGHTS_FILE}", f"checkpoint-2/{WEIGHTS_FILE}", "final/model.safetensors"):
        a, b = (tmp_path / "clean" / name).read_bytes(), (tmp_path / "run" / name).read_bytes()
        assert a == b, f"{name} differs after kill and resume"
    initial = (tmp_path / "clean" / f"checkpoint-2/{WEIGHTS_FILE}").read_bytes()
    assert initial != (tmp_path / "clean" / f"checkpoint-3/{WEIGHTS_FILE}").read_bytes(), "the EMA teacher never moved"
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time" and not k.startswith("perf/") and "runtime" not in k and "per_second" not in k}  # noqa: E731
                          for r in rows]  # fmt: skip
    metrics = [strip(json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()) for d in ("clean", "run")]
    assert [r for r in metrics[0] if "antisd/u_mean" in r] == [r for r in metrics[1] if "antisd/u_mean" in r]


def test_a_kept_teacher_is_refused_where_weights_are_sharded_and_none_refuses_a_term():
    with pytest.raises(ValueError, match="lambda_max=0.5 needs a teacher pass: set antisd_teacher=live"):
        preset("antisd").replace(teacher="none")
    with pytest.raises(ValueError, match="diagnostics=True needs a teacher pass"):
        preset("grpo").replace(diagnostics=True)
    assert preset("grpo").replace(teacher="live", diagnostics=True).scores_teacher


def test_dry_run_states_the_teacher_copy(capsys):
    assert cli.main(["train", "--model", "testbed", "--preset", "antisd_ema_teacher", "--dry_run", "true", "--output_dir", "/tmp/never"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"teacher: ema: one more copy of the weights \(fp32, [0-9.]+ GiB per GPU\); an EMA update", text), text
    assert re.search(r"disk: a checkpoint .* \(weights \+ optimizer \+ teacher\)", text), text

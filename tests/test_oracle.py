"""End-to-end oracle for the trainer (issue #10).

A seeded 4-step run (3 warm-up steps) of `antisd train` on the shipped testbed model. From the raw rollouts (prompts, sampled
token ids), TRL's rewards and a snapshot of the weights at generation time, this file recomputes, with its own
code written from the paper/release equations and the released template strings:
every teacher prompt (text and tokens), every teacher and student log-prob (one unpadded forward per rollout),
the gate statistic, the warm value, σ_ref, τ, λ_i and the [B, T] advantages; and asserts they equal what the
trainer used and what reached TRL's loss. It calls none of the trainer's, step's, context's or core's helpers.
`scripts/mutants.py` plants wiring errors in the trainer and shows that this test fails for each.

Tolerances follow from fp32 arithmetic, measured on the machine that runs the test (any CPU, any
ATEN_CPU_CAPABILITY): the oracle runs every forward twice, in float64 (the truth, exact to ~1e-15 here) and in
float32 unpadded. The trainer's values come from padded, batched fp32 forwards: different kernels and summation
orders than the oracle's fp32 forward, hence different rounding, but errors of the same size. So each trainer value
may differ from the float64 truth by FP32_FACTOR × (the largest error the oracle's own fp32 computation of that
quantity made in the step), plus a few ulps of the value; a scalar statistic by FP32_FACTOR × its Lipschitz constant ×
the largest fp32 error of its inputs (a median or a mean moves by at most the largest change of its inputs). Every
tolerance is checked to stay below 1e-3: a wiring error (a shifted token, a wrong context, a wrong statistic)
moves these values by 1e-2 or more, so no tolerance can hide one.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from antisd import cli
from antisd.integrations.trl import AntiSDTrainer
from antisd.infra.models import load_model
from antisd.tasks import countdown as cd

pytestmark = [pytest.mark.slow, pytest.mark.exact]

G, PROMPTS, STEPS, WARMUP = 4, 4, 4, 3
FEEDBACK_OK, FEEDBACK_BAD = "Your answer is correct.", "Your answer is incorrect."
LN2 = math.log(2.0)


@pytest.fixture
def record(monkeypatch):
    """What the trainer saw and produced at each step, captured around TRL's and our hooks."""
    rec = {"gen": [], "loss": [], "teacher_in": [], "teacher_tok": [], "rewards": [], "batch": []}
    orig_gen, orig_rew = AntiSDTrainer._generate_and_score_completions, AntiSDTrainer._calculate_rewards
    orig_tok, orig_loss = AntiSDTrainer._tokenize_teacher, AntiSDTrainer._compute_loss

    def gen(self, inputs):
        weights = copy.deepcopy(self.model.state_dict())
        out = orig_gen(self, inputs)
        if self.model.training:
            keep = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")
            rec["gen"].append({"weights": weights, "prompts": [x["prompt"] for x in inputs]} | {k: out[k].clone() for k in keep})
            rec["batch"].append(self.last_antisd_batch)
            rec["teacher_in"].append(copy.deepcopy(self.last_antisd_batch.teacher_prompts))
        return out

    def rewards(self, inputs, prompts, completions, completion_ids_list):
        r = orig_rew(self, inputs, prompts, completions, completion_ids_list)
        rec["rewards"].append(r.clone())
        return r

    def tokenize(self, prompt_ids, completion_ids, completion_mask):
        ids, mask = orig_tok(self, prompt_ids, completion_ids, completion_mask)
        rec["teacher_tok"].append((ids.clone(), mask.clone()))
        return ids, mask

    def loss(self, model, inputs):
        result = orig_loss(self, model, inputs)  # read after: the per-token term may be composed inside the loss
        keys = ("advantages", "prompt_ids", "completion_ids", "antisd_student_logp")
        rec["loss"].append({k: inputs[k].detach().clone() for k in keys if k in inputs})
        rec["loss"][-1]["advantages_carry_grad"] = inputs["advantages"].requires_grad or inputs["advantages"].grad_fn is not None
        return result

    monkeypatch.setattr(AntiSDTrainer, "_generate_and_score_completions", gen)
    monkeypatch.setattr(AntiSDTrainer, "_calculate_rewards", rewards)
    monkeypatch.setattr(AntiSDTrainer, "_tokenize_teacher", tokenize)
    monkeypatch.setattr(AntiSDTrainer, "_compute_loss", loss)
    return rec


# --- the oracle: everything below is written from the equations, not from the package ----------------------


def teacher_user_text(prompt: str, demo: str | None, feedback: str) -> str:
    """The released code's reprompt strings (SelfDistillationConfig defaults), written out."""
    if demo is not None:
        return f"{prompt}\nYour previous attempt:\n\n{demo}\n\n\nPrevious assessment: {feedback}\n\n\nNow solve this problem step by step.\n"
    return f"{prompt}\nPrevious assessment: {feedback}\n\n\nNow solve this problem step by step.\n"


# Measured (docs/LOG.md, 2026-11-29, ATEN_CPU_CAPABILITY default/avx2/avx512): the trainer's largest error was at most
# 2.4× the oracle's own largest fp32 error of the same quantity in the same step; 8 leaves 3× headroom.
FP32_FACTOR = 8.0
U32 = 2.0**-24  # unit roundoff of float32
ULPS = 64 * U32  # the rounding of a value itself and of A_seq's few fp32 operations in TRL (mean, std, division)
VACUOUS = 1e-3  # a tolerance this large could hide a wiring error


def fp32_close(got: torch.Tensor, truth: torch.Tensor, error32: float, what: str, lipschitz: float = 1.0) -> None:
    """|got − truth| ≤ FP32_FACTOR·lipschitz·error32 + ULPS·|truth|, elementwise; the tolerance must stay far
    below a wiring error's size."""
    tol = FP32_FACTOR * lipschitz * error32 + ULPS * truth.double().abs()
    assert float(tol.max()) < VACUOUS, f"{what}: the fp32 tolerance {float(tol.max()):.2e} would be vacuous"
    excess = (got.double() - truth.double()).abs() - tol
    worst = int(excess.argmax())
    assert float(excess.max()) <= 0, f"{what}: |got − truth| = {float((got.double() - truth.double()).abs().flatten()[worst]):.3e} at {worst} > tolerance {float(tol.flatten()[worst]):.3e} (fp32 error here {error32:.2e})"


def fp32_scalar(got: float, truth: float, error32: float, what: str, lipschitz: float = 1.0) -> None:
    fp32_close(torch.tensor([got], dtype=torch.float64), torch.tensor([truth], dtype=torch.float64), error32, what, lipschitz)


def forward_logp_entropy(model, prompt_ids: list[int], response_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """log p and entropy of each response token, from one unpadded forward (temperature 1), in the model's dtype
    (float32, or float64 for the truth)."""
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    P, T = len(prompt_ids), len(response_ids)
    logp_all = F.log_softmax(logits[P - 1 : P + T - 1], dim=-1)
    logp = logp_all.gather(1, torch.tensor(response_ids)[:, None]).squeeze(1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def grpo_advantages(rewards: list[float]) -> list[float]:
    """(r − mean_g) / (std_g + 1e-4), unbiased std, 0 for a uniform group (TRL's scale_rewards='group')."""
    out = []
    for g in range(0, len(rewards), G):
        group = rewards[g : g + G]
        mean = sum(group) / G
        std = math.sqrt(sum((r - mean) ** 2 for r in group) / (G - 1))
        out += [0.0 if max(group) == min(group) else (r - mean) / (std + 1e-4) for r in group]
    return out


def phi(u: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.softplus(u) - LN2)


def lower_median(values: list[float]) -> float:
    values = sorted(values)
    return values[(len(values) - 1) // 2]


def oracle_step(rec: dict, k: int, tok, model_path: Path, release: bool) -> dict:
    """Teacher prompts, log-probs and per-row quantities of step k from the raw rollouts; every forward in float32
    (``t``, ``s``, ``h``) and in float64 (``t64``, ``s64``, ``h64``)."""
    gen = rec["gen"][k]
    model, _ = load_model(str(model_path))
    model.load_state_dict(gen["weights"])
    model.eval()
    model64 = copy.deepcopy(model).double()
    rewards = rec["rewards"][k].sum(dim=1).tolist()  # one reward function, weight 1
    responses = [ids[m.bool()].tolist() for ids, m in zip(gen["completion_ids"], gen["completion_mask"])]
    texts = [tok.decode(r, skip_special_tokens=True) for r in responses]
    rows = []
    for i, prompt in enumerate(gen["prompts"]):
        start = (i // G) * G
        sibling = next((j for j in range(start, start + G) if j != i and rewards[j] >= 1.0), None)
        demo = cd.truncate_demonstration(texts[sibling]) if sibling is not None else None
        feedback = FEEDBACK_OK if rewards[i] >= 1.0 else FEEDBACK_BAD
        user = teacher_user_text(prompt[-1]["content"], demo, feedback)
        messages = (prompt[:-1] if release else [m for m in prompt if m["role"] == "system"]) + [{"role": "user", "content": user}]
        teacher_prompt = list(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False))
        student_prompt = list(tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False))
        assert len(teacher_prompt) < 4096 - 300 and (demo is None or len(tok(demo)["input_ids"]) < 128)  # no budget cut here
        t, h = forward_logp_entropy(model, teacher_prompt, responses[i])
        s, _ = forward_logp_entropy(model, student_prompt, responses[i])
        t64, h64 = forward_logp_entropy(model64, teacher_prompt, responses[i])
        s64, _ = forward_logp_entropy(model64, student_prompt, responses[i])
        rows.append({"messages": messages, "teacher_ids": teacher_prompt + responses[i], "student_prompt": student_prompt, "demo": demo,
                     "t": t, "s": s, "h": h, "t64": t64, "s64": s64, "h64": h64})  # fmt: skip
    return {"rows": rows, "rewards": rewards, "adv_seq": grpo_advantages(rewards), "responses": responses}


def in_float64(steps: list[dict]) -> list[dict]:
    """The same steps with the float64 forwards as the rows' t, s, h (the truth)."""
    return [st | {"rows": [r | {"t": r["t64"], "s": r["s64"], "h": r["h64"]} for r in st["rows"]]} for st in steps]


def max_error(st: dict, key: str) -> float:
    """The largest |fp32 − fp64| of one per-token quantity (t, s or h) over a step's rows."""
    return max(float((r[key].double() - r[key + "64"]).abs().max()) for r in st["rows"])


def ppl_error(st: dict) -> float:
    """The largest |fp32 − fp64| of a sequence's teacher perplexity over a step's rows."""
    return max(abs(ppl(r["t"]) - ppl(r["t64"])) for r in st["rows"])


def ppl(t: torch.Tensor) -> float:
    return math.exp(-t.double().mean().item())


def sigma_ref_of(steps: list[dict]) -> float:
    """σ_ref: the mean over the warm-up steps of the population std of (s − t) over all valid tokens of the step."""
    stds = [torch.cat([r["s"] - r["t"] for r in st["rows"]]).double().std(unbiased=False).item() for st in steps[:WARMUP]]
    return sum(stds) / len(stds)


def paper_advantages(steps: list[dict]) -> tuple[list[list[torch.Tensor]], list[float], float]:
    """Paper Alg. 1 with W warm-up steps (λ = 0) and the median of their statistics as H_warm, then λ = 0.5·g,
    g from the median-entropy Schmitt trigger."""
    stats = [lower_median([v for r in st["rows"] for v in r["h"].tolist()]) for st in steps]
    warm, gate_on, advantages = sorted(stats[:WARMUP])[WARMUP // 2], [False] * WARMUP, []  # the median of W = 3 values
    tau_down, tau_up, active = 0.93 * warm, 1.0 * warm, True
    for stat in stats[WARMUP:]:  # lag 0: this step's statistic decides this step
        if active and stat < tau_down:
            active = False
        elif not active and stat >= tau_up:
            active = True
        gate_on.append(active)
    for st, on in zip(steps, gate_on):
        lam = 0.5 if on else 0.0
        advantages.append([a + lam * -phi(r["t"] - r["s"]) for a, r in zip(st["adv_seq"], st["rows"])])
    return advantages, stats, warm


def release_advantages(steps: list[dict]) -> tuple[list[list[torch.Tensor]], list[float], dict]:
    """The released grpo_ca path with W warm-up steps (digest §3.3, §4.2), one micro-batch per step on one process."""
    ppls = [[ppl(r["t"]) for r in st["rows"]] for st in steps]
    stats = [sum(p for p in ps if p <= 3.0) / sum(p <= 3.0 for p in ps) for ps in ppls]  # gate: mean over PPL ≤ 3
    mb_means = [sum(ps) / len(ps) for ps in ppls[:WARMUP]]  # each warm-up micro-batch: mean over all its sequences
    kept = sorted(m for m in mb_means if m < 3.0)  # a micro-batch mean ≥ 3 is dropped
    m = kept[len(kept) // 2]  # the upper median
    tau = max(0.93 * m, 1.01)
    sigma_ref = sigma_ref_of(steps)
    advantages = [[torch.full_like(r["t"], a) for a, r in zip(st["adv_seq"], st["rows"])] for st in steps[:WARMUP]]  # λ = 0
    lambdas = []
    assert len(steps) == WARMUP + 1  # one post-warm-up step: with lag 1 it runs with the gate open
    for st, ps in zip(steps[WARMUP:], ppls[WARMUP:]):
        step_adv = []
        for a, r, p in zip(st["adv_seq"], st["rows"], ps):
            u = r["t"] - r["s"]
            u = torch.where(u.abs() > 2.0 * sigma_ref, torch.zeros_like(u), u).clamp(-5.0, 5.0)
            prm = -phi(u)
            z = ((prm - prm.mean()) / prm.std(unbiased=False).clamp(min=1e-6)).clamp(-5.0, 5.0)
            lam = 0.0 if p > 3.0 else min(max(0.1 * 2.0 * math.log(min(max(p / tau, 0.5), 3.0)), 0.0), 0.5)
            lambdas.append(lam)
            step_adv.append(a + lam * z)
        advantages.append(step_adv)
    return advantages, stats, {"m": m, "tau": tau, "sigma_ref": sigma_ref, "lambdas": lambdas}


# --- the test --------------------------------------------------------------------------------------------------


def _run(out: Path, preset: str) -> tuple[list[dict], dict]:
    argv = [
        "train", "--model", "testbed", "--output_dir", str(out), "--preset", preset, "--steps", str(STEPS),
        "--prompts_per_step", str(PROMPTS), "--num_generations", str(G), "--max_completion_length", "96",
        "--eval_k", "0", "--save_steps", "0", "--antisd_gate_warmup_steps", str(WARMUP), "--seed", "0",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()], json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("preset", ["antisd", "antisd_release"])
def test_trainer_matches_independent_oracle(tmp_path, record, preset):
    release = preset == "antisd_release"
    lines, summary = _run(tmp_path / preset, preset)
    metrics = [m for m in lines if "antisd/gate_statistic" in m]
    model_path = Path(__file__).resolve().parents[1] / "src" / "antisd" / "assets" / "testbed"
    _, tok = load_model(str(model_path))
    steps = [oracle_step(record, k, tok, model_path, release) for k in range(STEPS)]
    assert len(record["gen"]) == STEPS == len(metrics)

    n_demo = 0
    for k, st in enumerate(steps):
        gen, batch = record["gen"][k], record["batch"][k]
        ids, mask = record["teacher_tok"][k]
        error_t = max_error(st, "t")
        for i, row in enumerate(st["rows"]):
            # teacher prompt text and tokens, student prompt tokens
            assert record["teacher_in"][k][i] == row["messages"], f"step {k} row {i}: teacher messages"
            assert ids[i][mask[i].bool()].tolist() == row["teacher_ids"], f"step {k} row {i}: teacher tokens"
            assert gen["prompt_ids"][i][gen["prompt_mask"][i].bool()].tolist() == row["student_prompt"]
            # log-probs of the sampled tokens: padded batched fp32 forward (trainer) vs the float64 truth
            n = len(st["responses"][i])
            fp32_close(batch.teacher_logp_BT[i, :n], row["t64"], error_t, f"step {k} row {i}: teacher log-probs")
            n_demo += row["demo"] is not None
    assert n_demo > 0, "no rollout had a correct sibling: the demonstration path was not exercised"

    truth = in_float64(steps)
    warm_steps = steps[:WARMUP]
    if release:
        expected32, _, cal32 = release_advantages(steps)
        expected, stats, cal = release_advantages(truth)
        error_m = max(ppl_error(st) for st in warm_steps)  # m: the upper median of means of sequence PPLs (1-Lipschitz)
        fp32_scalar(metrics[-1]["antisd/warm_teacher_ppl"], cal["m"], error_m, "warm teacher PPL m")
        fp32_scalar(summary["gate"]["warm"], cal["m"], error_m, "the gate's warm value")
        # σ_ref: the mean of per-step population stds of s − t, each 1-Lipschitz in the largest change of s − t
        fp32_scalar(metrics[-1]["antisd/sigma_ref"], cal["sigma_ref"], max(max_error(st, "t") + max_error(st, "s") for st in warm_steps), "σ_ref")
        # λ_i = clamp(0.2·ln(PPL_i/τ)), PPL ≥ 1 and τ ≥ 1.01: |dλ| ≤ 0.2·(|dPPL| + |dm|)
        fp32_scalar(metrics[-1]["antisd/lambda_mean"], sum(cal["lambdas"]) / len(cal["lambdas"]), 0.2 * (ppl_error(steps[-1]) + error_m), "λ mean")
        assert any(lam > 0 for lam in cal["lambdas"]), "λ_i was 0 everywhere: τ and λ were not exercised"
        stat_errors = [ppl_error(st) for st in steps]  # the statistic: a mean of sequence PPLs ≤ 3
    else:
        expected32, _, _ = paper_advantages(steps)
        expected, stats, warm = paper_advantages(truth)
        stat_errors = [max_error(st, "h") for st in steps]  # the statistic: a median of token entropies
        fp32_scalar(summary["gate"]["warm"], warm, max(stat_errors[:WARMUP]), "the gate's warm value (median of the warm-up statistics)")
    for k in range(STEPS):
        fp32_scalar(metrics[k]["antisd/gate_statistic"], stats[k], stat_errors[k], f"step {k}: gate statistic")

    nontrivial = 0
    for k, st in enumerate(steps):
        loss_in = record["loss"][k]
        assert not loss_in["advantages_carry_grad"], f"step {k}: the advantages reaching TRL's loss carry a gradient (a teacher or student forward ran with grad)"
        keys = [(tuple(p.tolist()), tuple(c.tolist())) for p, c in zip(loss_in["prompt_ids"], loss_in["completion_ids"])]
        got = dict(zip(keys, loss_in["advantages"]))
        # student log-probs: the trainer's own (a generation-time forward) or the training forward's (at the loss)
        batch = record["batch"][k]
        students = dict(zip(keys, loss_in["antisd_student_logp"])) if "antisd_student_logp" in loss_in else None
        gen = record["gen"][k]
        error_s = max_error(st, "s")
        error_adv = max(float((a32.double() - a64.double()).abs().max()) for a32, a64 in zip(expected32[k], expected[k]))
        for i, adv in enumerate(expected[k]):
            key = (tuple(gen["prompt_ids"][i].tolist()), tuple(gen["completion_ids"][i].tolist()))
            n = len(st["responses"][i])
            student = students[key] if students is not None else batch.student_logp_BT[i]
            fp32_close(student[:n], st["rows"][i]["s64"], error_s, f"step {k} row {i}: student log-probs")
            fp32_close(got[key][:n], adv, error_adv, f"step {k} row {i}: advantages at TRL's loss")
            nontrivial += int((adv - st["adv_seq"][i]).abs().max() > 1e-3)
    assert nontrivial > 0, "the per-token term never changed an advantage: the oracle would not see a wrong term"


def test_step_matches_the_oracle_exactly_at_its_thresholds():
    """The two comparisons an end-to-end run never hits exactly (real statistics never equal a threshold):
    the gate closes only when the statistic is *below* τ_down (Eq. 7), and λ_i is zeroed only *above* the PPL
    spike (digest §3.3 step 9). Crafted batches put the statistic exactly on each threshold."""
    from antisd.method.settings import preset
    from antisd.method.step import AntiSDStep, StepInputs

    def batch(teacher_logp: float, entropy: float, B: int = 2, T: int = 4) -> StepInputs:
        return StepInputs(seq_adv_B=torch.zeros(B), teacher_logp_BT=torch.full((B, T), teacher_logp), student_logp_BT=torch.full((B, T), -1.5), response_mask_BT=torch.ones(B, T), teacher_entropy_BT=torch.full((B, T), entropy))

    # gate: warm value 100, τ_down = 0.5 · 100 = 50 exactly (both exact in binary floating point)
    step = AntiSDStep(preset("antisd").replace(gate_warmup_steps=1, gate_down_ratio=0.5))
    step(batch(-1.0, 100.0))
    out = step(batch(-1.0, 50.0))
    oracle_open = not (50.0 < 0.5 * 100.0)
    assert out.gate_on == oracle_open is True

    # spike: a sequence whose teacher perplexity is exactly 3.0 keeps its λ_i
    three = -torch.log(torch.tensor(3.0))
    assert torch.exp(-three).item() == 3.0  # the crafted perplexity is exact in float32
    release = AntiSDStep(preset("antisd_release").replace(gate_warmup_steps=1, warmup_statistic="step_mean"))
    release(batch(-math.log(1.5), 0.5))  # warm-up: m = 1.5, τ = max(0.93 · 1.5, 1.01) = 1.395
    out = release(batch(three.item(), 0.5))
    tau = max(0.93 * 1.5, 1.01)
    oracle_lam = 0.0 if 3.0 > 3.0 else min(max(0.1 * 2.0 * math.log(min(max(3.0 / tau, 0.5), 3.0)), 0.0), 0.5)
    assert oracle_lam > 0
    torch.testing.assert_close(out.lam_B, torch.full((2,), oracle_lam), atol=1e-6, rtol=0)

"""The experimental control-subtracted preset (issue #12 §2): A_t = A_seq − λ·φ(u − u_control), u − u_control =
log π_T − log π_C, π_C the policy given *another group's* correct solution in the same template.

A seeded 2-step run of `antisd train --preset antisd_control_experimental` (gate off, so the term acts from step 0);
from the raw rollouts, TRL's rewards and the weights at generation time, this file rebuilds every teacher and
control prompt with its own code, recomputes both log-probs with one unpadded forward per rollout, and checks the
advantages that reached TRL's loss against the formula, evaluated in float64 (the truth), with the fp32
tolerance of tests/test_oracle.py (FP32_FACTOR × the largest error of the same formula on fp32 forwards).
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
from antisd.infra.models import load_model
from antisd.tasks import countdown as cd
from tests.test_oracle import FEEDBACK_BAD, FEEDBACK_OK, G, PROMPTS, forward_logp_entropy, fp32_close, grpo_advantages, record, teacher_user_text  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.exact]
LAMBDA, STEPS = 2.0, 2


def test_control_preset_advantages_follow_the_formula(tmp_path, record):
    out = tmp_path / "control"
    argv = [
        "train", "--model", "testbed", "--output_dir", str(out), "--preset", "antisd_control_experimental", "--steps", str(STEPS),
        "--prompts_per_step", str(PROMPTS), "--num_generations", str(G), "--max_completion_length", "96", "--eval_k", "0",
        "--save_steps", "0", "--antisd_gate", "false", "--antisd_lambda_max", str(LAMBDA), "--seed", "0",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(m["perf/antisd_control_forward_s"] > 0 for m in metrics if "antisd/u_mean" in m)  # the third forward is logged
    path = Path(__file__).resolve().parents[1] / "src" / "antisd" / "assets" / "testbed"
    model, tok = load_model(str(path))
    checked = controlled = 0
    for k in range(STEPS):
        gen, loss_in = record["gen"][k], record["loss"][k]
        model.load_state_dict(gen["weights"])
        model.eval()
        model64 = copy.deepcopy(model).double()
        rewards = record["rewards"][k].sum(dim=1).tolist()
        responses = [ids[m.bool()].tolist() for ids, m in zip(gen["completion_ids"], gen["completion_mask"])]
        texts = [tok.decode(r, skip_special_tokens=True) for r in responses]
        first_correct = {g: next((j for j in range(g * G, g * G + G) if rewards[j] >= 1.0), None) for g in range(len(rewards) // G)}
        adv_seq = grpo_advantages(rewards)
        got = {(tuple(p.tolist()), tuple(c.tolist())): a for p, c, a in zip(loss_in["prompt_ids"], loss_in["completion_ids"], loss_in["advantages"])}
        rows = []  # (key, expected in float64, expected from fp32 forwards), for the rows with a term
        for i, prompt in enumerate(gen["prompts"]):
            g = i // G
            sibling = next((j for j in range(g * G, g * G + G) if j != i and rewards[j] >= 1.0), None)
            # the control's solution: the first correct rollout of the next group (cyclically) that has one
            other = next((first_correct[(g + d) % len(first_correct)] for d in range(1, len(first_correct)) if first_correct[(g + d) % len(first_correct)] is not None), None)
            feedback = FEEDBACK_OK if rewards[i] >= 1.0 else FEEDBACK_BAD
            key = (tuple(gen["prompt_ids"][i].tolist()), tuple(gen["completion_ids"][i].tolist()))
            n = len(responses[i])
            if sibling is None or other is None:  # no solution (the same feedback-only prompt twice), or no control: no term
                fp32_close(got[key][:n], torch.full((n,), adv_seq[i], dtype=torch.float64), 0.0, f"step {k} row {i}: A_seq only")
                continue
            prompts = []
            for demo_row in (sibling, other):
                user = teacher_user_text(prompt[-1]["content"], cd.truncate_demonstration(texts[demo_row]), feedback)
                prompts.append(list(tok.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True, tokenize=True, return_dict=False)))
            expected = []
            for m in (model64, model):
                t, _ = forward_logp_entropy(m, prompts[0], responses[i])
                c, _ = forward_logp_entropy(m, prompts[1], responses[i])
                expected.append(adv_seq[i] - LAMBDA * 0.5 * (F.softplus(t.double() - c.double()) - math.log(2.0)))
            rows.append((key, n, *expected))
            controlled += int((t - c).abs().max() > 1e-3)
        error32 = max((float((e32 - e64).abs().max()) for _, _, e64, e32 in rows), default=0.0)
        for key, n, e64, _ in rows:
            fp32_close(got[key][:n], e64, error32, f"step {k}: advantages of a controlled row")
            checked += 1
    assert checked > 0 and controlled > 0, "no row had a solution and a control: the formula was not exercised"

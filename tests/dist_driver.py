"""`antisd train` under torchrun (or alone), recording what the AntiSD step saw and produced at every step.

Environment: ANTISD_RECORD=DIR (required): each process writes DIR/rank<R>.json with, per step, the sampled
completions by global row, the teacher prompts, λ_i, the gate decision, and the advantages that reached TRL's loss
keyed by the unpadded (prompt, completion) tokens. ANTISD_REPLAY=FILE: instead of sampling, each process takes the
completions of its global rows from another run's record, so that runs with different process counts see the same
rollouts (each process samples from its own RNG stream, so they would not otherwise).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from antisd import cli
from antisd.integrations.trl import AntiSDTrainer

RECORD = Path(os.environ["ANTISD_RECORD"])
REPLAY = json.loads(Path(os.environ["ANTISD_REPLAY"]).read_text())["gen"] if os.environ.get("ANTISD_REPLAY") else None
log: dict = {"gen": {}, "teacher": {}, "lam": {}, "gate": {}, "loss": {}}
original_gen, original_adv, original_loss = AntiSDTrainer._generate_single_turn, AntiSDTrainer._antisd_advantages, AntiSDTrainer._compute_loss


def generate(self, prompt_ids, *args, **kwargs):
    step, offset = str(self.state.global_step), self.accelerator.process_index * len(prompt_ids)
    if REPLAY is not None:
        return [REPLAY[step][str(offset + i)] for i in range(len(prompt_ids))], None
    ids, logprobs = original_gen(self, prompt_ids, *args, **kwargs)
    log["gen"].setdefault(step, {}).update({str(offset + i): c for i, c in enumerate(ids)})
    return ids, logprobs


def antisd_advantages(self, prompts, out):
    result = original_adv(self, prompts, out)
    step, offset, batch = str(self.state.global_step), self.accelerator.process_index * len(prompts), self.last_antisd_batch
    log["gate"][step] = batch.gate_on
    log["teacher"].setdefault(step, {}).update({str(offset + i): t for i, t in enumerate(batch.teacher_prompts)})
    log["lam"].setdefault(step, {}).update({str(offset + i): v for i, v in enumerate(batch.lam_B.tolist())})
    return result


def compute_loss(self, model, inputs):
    result = original_loss(self, model, inputs)
    step = str(self.state.global_step)
    for p, pm, c, cm, a in zip(inputs["prompt_ids"], inputs["prompt_mask"], inputs["completion_ids"], inputs["completion_mask"], inputs["advantages"]):
        key = json.dumps([p[pm.bool()].tolist(), c[cm.bool()].tolist()])
        log["loss"].setdefault(step, {})[key] = a[cm.bool()].tolist()
    return result


AntiSDTrainer._generate_single_turn = generate
AntiSDTrainer._antisd_advantages = antisd_advantages
AntiSDTrainer._compute_loss = compute_loss

if __name__ == "__main__":
    code = cli.main(sys.argv[1:])
    RECORD.mkdir(parents=True, exist_ok=True)
    (RECORD / f"rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(log))
    sys.exit(code)

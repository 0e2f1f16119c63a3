"""The verl plug-in (issue #8 part 2), in the verl environment (`make test-verl`; verl pins transformers<5.11).

On CPU: the plug-in registers on `import verl`; the config group parses with every preset; on real `DataProto`
batches the plug-in's advantages equal the shared step's and what the TRL trainer computed for the same rollouts,
teacher contexts and log-probs (a seeded TRL run in this environment is the source); siblings are found by uid
wherever the balancer put the group's rows; `_compute_advantage` and the teacher pass are wired through
TransferQueue and the worker group as the trainer calls them (an in-memory TransferQueue and a worker group
that runs the model); gate state round-trips through a checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

import verl  # noqa: F401  (loads the plug-in through its entry point)
from verl import DataProto
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

from antisd import cli
from antisd.integrations.trl import AntiSDTrainer as TRLTrainer
from antisd.integrations.verl import batch as vb
from antisd.integrations.verl.config import CONFIG_DIR, CONFIG_NAME, config_group_yaml, settings_from_config
from antisd.infra.models import load_model
from antisd.method.settings import PRESETS, preset
from antisd.method.step import AntiSDStep, StepInputs

ROOT = Path(__file__).resolve().parents[1]
TESTBED = ROOT / "src" / "antisd" / "assets" / "testbed"
G, PROMPTS, STEPS, WARMUP, ACCUM = 4, 4, 4, 3, 2


# --- registration and config ---------------------------------------------------------------------------------


def _registered(env_extra: dict) -> str:
    code = "import verl\nfrom verl.trainer.ppo.v1 import get_trainer_cls\ntry:\n    print(get_trainer_cls('antisd_sync').__module__)\nexcept Exception as e:\n    print('missing', type(e).__name__)"
    env = {k: v for k, v in os.environ.items() if k != "VERL_USE_EXTERNAL_PLUGINS"} | env_extra
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    return out.stdout.strip().splitlines()[-1]


def test_plugin_registers_on_import_of_verl_through_its_entry_point():
    assert _registered({}) == "antisd.integrations.verl.trainer"
    assert _registered({"VERL_USE_EXTERNAL_PLUGINS": "antisd"}) == "antisd.integrations.verl.trainer"
    # with verl's plug-in loading switched off nothing else registers it: the entry point is what does
    assert _registered({"VERL_USE_EXTERNAL_PLUGINS": "none"}).startswith("missing")


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(CONFIG_NAME, overrides=overrides)


def test_shipped_config_is_generated_from_the_settings():
    assert (CONFIG_DIR / f"{CONFIG_NAME}.yaml").read_text() == config_group_yaml()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_config_group_parses_with_every_preset(name):
    cfg = _compose([f"antisd.preset={name}"])
    assert cfg.trainer.v1.trainer_mode == "antisd_sync"
    assert cfg.actor_rollout_ref.actor.ppo_mini_batch_size > 0  # verl's own tree is there, under ours
    assert settings_from_config(cfg.antisd) == preset(name)


def test_config_group_overrides_and_refusals():
    cfg = _compose(["antisd.preset=antisd_release", "antisd.lambda_max=0.3", "antisd.gate_warmup_steps=10"])
    assert settings_from_config(cfg.antisd) == preset("antisd_release").replace(lambda_max=0.3, gate_warmup_steps=10)
    assert settings_from_config(None) == preset("antisd")
    with pytest.raises(KeyError, match="lambda_maxx"):
        settings_from_config({"lambda_maxx": 0.3})
    with pytest.raises(KeyError, match="antisd_relase"):
        settings_from_config({"preset": "antisd_relase"})
    with pytest.raises(ValueError, match="gate_warmup_steps"):
        settings_from_config({"gate_warmup_steps": 0})
    with pytest.raises(Exception, match="lambda_maxx"):  # Hydra's struct mode refuses unknown keys
        _compose(["antisd.lambda_maxx=0.3"])
    from antisd.integrations.verl.trainer import AntiSDTrainer

    with pytest.raises(NotImplementedError, match="TRL trainer only"):  # refused before verl starts anything
        AntiSDTrainer(OmegaConf.create({"antisd": {"preset": "antisd_control_experimental"}}))
    for teacher in ("ema", "frozen"):  # a kept teacher needs a second model on the actor workers
        with pytest.raises(NotImplementedError, match=f"antisd.teacher={teacher} is implemented for the TRL trainer only.*actor workers"):
            AntiSDTrainer(OmegaConf.create({"antisd": {"preset": "antisd", "teacher": teacher}}))
    with pytest.raises(KeyError, match="antisd_solution_source was renamed antisd_demonstration_source"):
        settings_from_config({"solution_source": "group_only"})


def _script_overrides(path: Path, val_n: str = "4") -> list[str]:
    text = path.read_text()
    block = text.split("# BEGIN OVERRIDES")[1].split("# END OVERRIDES")[0]
    lines = [line.strip() for line in block.splitlines()[2:] if line.strip() and line.strip() != ")"]
    env = {"$PRESET": "antisd_release", "$TRAIN_FILE": "/data/train.parquet", "$VAL_FILE": "/data/val.parquet", "$MODEL": "Qwen/Qwen3-8B", "$NNODES": "2", "$GPUS_PER_NODE": "8", "$OUT": "/ckpt",
           "$VAL_N": val_n, "$REWARD_FILE": "/site/antisd/integrations/verl/reward.py"}  # fmt: skip
    for name, value in env.items():
        lines = [line.replace(name, value) for line in lines]
    assert not any("$" in line for line in lines), lines
    return lines


def test_paper_launch_script_composes_in_verls_config():
    overrides = _script_overrides(ROOT / "scripts" / "verl" / "qwen3_8b_antisd.sh")
    cfg = _compose(overrides)
    assert settings_from_config(cfg.antisd) == preset("antisd_release").replace(len_mask=12000)
    assert (cfg.data.train_batch_size, cfg.actor_rollout_ref.actor.ppo_mini_batch_size, cfg.actor_rollout_ref.rollout.n) == (32, 32, 8)
    assert (cfg.data.max_response_length, cfg.actor_rollout_ref.actor.optim.lr, cfg.actor_rollout_ref.actor.use_kl_loss) == (16384, 1e-6, False)
    assert cfg.data.apply_chat_template_kwargs.enable_thinking is False and cfg.trainer.total_training_steps == 200


def test_code_launch_script_composes_in_verls_config():
    """scripts/verl/qwen3_8b_code.sh = the math launcher's overrides (avg@10) + its own: the code reward, the cut."""
    overrides = _script_overrides(ROOT / "scripts" / "verl" / "qwen3_8b_antisd.sh", val_n="10") + _script_overrides(ROOT / "scripts" / "verl" / "qwen3_8b_code.sh")
    cfg = _compose(overrides)
    assert cfg.antisd.demonstration_cut == "code" and cfg.actor_rollout_ref.rollout.val_kwargs.n == 10
    assert (cfg.reward.custom_reward_function.path, cfg.reward.custom_reward_function.name) == ("/site/antisd/integrations/verl/reward.py", "compute_score")
    assert "VAL_N=${VAL_N:-10}" in (ROOT / "scripts" / "verl" / "qwen3_8b_code.sh").read_text()


# --- the same rollouts through TRL and through the plug-in ---------------------------------------------------


def _trl_run(tmp_path: Path, name: str, monkeypatch) -> list:
    batches = []
    orig = TRLTrainer._generate_and_score_completions

    def gen(self, inputs):
        out = orig(self, inputs)
        if self.model.training:
            b = self.last_antisd_batch
            batches.append({"batch": b, "prompts": [x["prompt"] for x in inputs], "completion_mask": out["completion_mask"].clone()})
        return out

    monkeypatch.setattr(TRLTrainer, "_generate_and_score_completions", gen)
    out_dir = tmp_path / name
    argv = [
        "train", "--model", "testbed", "--output_dir", str(out_dir), "--preset", name, "--steps", str(STEPS),
        "--prompts_per_step", str(PROMPTS), "--num_generations", str(G), "--max_completion_length", "96", "--grad_accum", str(ACCUM),
        "--eval_k", "0", "--save_steps", "0", "--antisd_gate_warmup_steps", str(WARMUP), "--seed", "0",
        "--trl_args", "{score_student_separately: true}",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    logged = [json.loads(x) for x in (out_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [m for m in logged if "antisd/gate_statistic" in m]
    assert len(batches) == len(logged) == STEPS
    for rec, m in zip(batches, logged):
        rec["metrics"] = m
    return batches


def _dataproto(rec: dict, tok, perm: torch.Tensor) -> DataProto:
    """The rollouts of one TRL step as verl's padded batch, rows re-ordered by ``perm`` (as verl's balancer does)."""
    b = rec["batch"]
    mask_BT = rec["completion_mask"]
    lengths = mask_BT.sum(dim=1)
    scores_BT = torch.zeros(mask_BT.shape)
    scores_BT[torch.arange(len(lengths)), (lengths - 1).clamp(min=0)] = torch.tensor(b.rewards, dtype=torch.float32)
    uids = np.array([f"prompt-{i // G}" for i in range(len(lengths))], dtype=object)
    raw = np.empty(len(lengths), dtype=object)
    raw[:] = rec["prompts"]
    seq_adv = b.seq_adv_B.float()
    data = DataProto.from_dict(
        tensors={
            "responses": b.completion_ids, "response_mask": mask_BT, "rm_scores": scores_BT,
            "old_log_probs": b.student_logp_BT, "advantages": seq_adv[:, None] * mask_BT,
            "teacher_logp": b.teacher_logp_BT, "teacher_entropy": b.teacher_entropy_BT if b.teacher_entropy_BT is not None else torch.zeros(mask_BT.shape),
            "microbatch": torch.arange(len(lengths)) // (len(lengths) // ACCUM),
        },
        non_tensors={"uid": uids, "raw_prompt": raw, "key": np.array([f"{u}_{i % G}_0" for i, u in enumerate(uids)], dtype=object)},
    )  # fmt: skip
    data.reorder(perm)
    return data


def _plugin_on(step: AntiSDStep, data: DataProto, tok, entropy: bool):
    t = data.batch
    texts = vb.decode_responses(tok, t["responses"], t["response_mask"])
    rewards = vb.sequence_rewards(t["rm_scores"], t["response_mask"])
    tpass = _teacher_pass(step.settings, tok)
    rows = tpass.inputs(vb.rollouts(
        list(data.non_tensor_batch["raw_prompt"]), texts, rewards, list(data.non_tensor_batch["uid"]), order_B=vb.rollout_order(list(data.non_tensor_batch["key"])),
    ))  # fmt: skip
    out = vb.apply_step(
        step, t["advantages"], t["teacher_logp"], t["old_log_probs"], t["response_mask"], torch.tensor(rows.has_context),
        t["teacher_entropy"] if entropy else None, t["microbatch"],
    )  # fmt: skip
    return rows, out, tpass.context_metrics(rows, None)


def _teacher_pass(settings, tok):
    from antisd.method.teacher_pass import TeacherPass
    from antisd.tasks import countdown as cd

    return TeacherPass(settings, tok, cut_demonstration=cd.truncate_demonstration)


@pytest.mark.parametrize("name", ["antisd", "antisd_release"])
def test_plugin_advantages_equal_the_step_and_the_trl_trainer(tmp_path, monkeypatch, name):
    records = _trl_run(tmp_path, name, monkeypatch)
    _, tok = load_model(str(TESTBED))
    settings = preset(name).replace(gate_warmup_steps=WARMUP)
    plugin_step, shared_step = AntiSDStep(settings), AntiSDStep(settings)
    entropy = settings.gate_signal == "teacher_entropy_median"
    changed = 0
    for k, rec in enumerate(records):
        b = rec["batch"]
        perm = torch.randperm(len(b.rewards), generator=torch.Generator().manual_seed(k))
        data = _dataproto(rec, tok, perm)
        rows, out, context_metrics = _plugin_on(plugin_step, data, tok, entropy)
        mask_BT = data.batch["response_mask"].bool()
        # the TRL trainer's teacher contexts, row for row
        assert rows.prompts == [b.teacher_prompts[i] for i in perm.tolist()], f"step {k}: teacher prompts differ from TRL's"
        assert rows.prompt_ids == [b.teacher_inputs.prompt_ids[i] for i in perm.tolist()], f"step {k}: teacher token ids differ from TRL's"
        # the TRL trainer's advantages, on every response token
        trl_BT = b.advantages_BT[perm]
        assert torch.equal(out.advantages_BT[mask_BT], trl_BT[mask_BT].float()), f"step {k}: advantages differ from TRL's"
        # the shared step on the same inputs, in TRL's row order
        t = data.batch
        inv = torch.argsort(perm)
        direct = vb.apply_step(
            shared_step, t["advantages"][inv], t["teacher_logp"][inv], t["old_log_probs"][inv], t["response_mask"][inv],
            torch.tensor(rows.has_context)[inv], t["teacher_entropy"][inv] if entropy else None, t["microbatch"][inv],
        )  # fmt: skip
        assert torch.equal(direct.advantages_BT[inv.argsort()], out.advantages_BT), f"step {k}: plug-in differs from the shared step"
        # the metrics TRL logged for the step
        assert set(context_metrics) <= set(rec["metrics"]), "a context metric of the plug-in is missing from TRL's"
        for key, value in (out.metrics | context_metrics).items():
            if key in rec["metrics"] and not (isinstance(value, float) and math.isnan(value)):
                assert value == pytest.approx(rec["metrics"][key], rel=1e-5, abs=1e-6), f"step {k}: {key}"
        assert out.gate_on == b.gate_on
        changed += int((out.advantages_BT - t["advantages"]).abs()[mask_BT].max() > 1e-4)
    assert changed > 0, "the per-token term never acted: the comparison would not see a wrong term"
    assert plugin_step.state_dict() == shared_step.state_dict()


def test_verl_grpo_gives_trl_sequence_advantage_up_to_its_epsilon(tmp_path, monkeypatch):
    """A_seq from verl's own grpo estimator (ε = 1e-6) against TRL's (std + 1e-4): the documented difference."""
    rec = _trl_run(tmp_path, "antisd", monkeypatch)[0]
    mask_BT = rec["completion_mask"].float()
    lengths = mask_BT.sum(dim=1).long()
    scores_BT = torch.zeros(mask_BT.shape)
    scores_BT[torch.arange(len(lengths)), lengths - 1] = torch.tensor(rec["batch"].rewards, dtype=torch.float32)
    adv_BT, _ = compute_grpo_outcome_advantage(scores_BT, mask_BT, np.array([i // G for i in range(len(lengths))]))
    seq = vb.sequence_advantages(adv_BT, mask_BT)
    torch.testing.assert_close(seq, rec["batch"].seq_adv_B.float(), atol=2e-3, rtol=1e-3)


# --- siblings by uid, wherever the rows are -------------------------------------------------------------------


def test_groups_split_across_workers_get_their_own_siblings():
    _, tok = load_model(str(TESTBED))
    settings = preset("antisd")
    # 3 groups of 4, interleaved the way a balancer spreads them over 2 data-parallel ranks
    uids = ["a", "b", "c", "a", "b", "c", "a", "b", "c", "a", "b", "c"]
    rewards = [0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    texts = [f"try {i} answer: {u}{i}" for i, u in enumerate(uids)]
    prompts = [[{"role": "user", "content": f"problem {u}"}] for u in uids]
    responses = torch.tensor([tok(t, add_special_tokens=False)["input_ids"][:3] for t in texts])
    rows = _teacher_pass(settings, tok).inputs(vb.rollouts(prompts, texts, rewards, uids))
    for i, (u, msgs) in enumerate(zip(uids, rows.prompts)):
        user = msgs[-1]["content"]
        assert user.startswith(f"problem {u}")
        correct_others = [j for j in range(12) if uids[j] == u and rewards[j] >= 1.0 and j != i]
        demos = [j for j in range(12) if f"\n{texts[j]}\n" in user]
        assert demos == correct_others[:1], f"row {i}: demonstration {demos}, expected the first other correct row of group {u}"
        assert ("Your answer is correct." in user) == (rewards[i] >= 1.0)
    assert all(rows.has_context)  # every row has feedback
    # verl's synthetic padding rows: no feedback, never a demonstration, no term
    rewards_pad = vb.sequence_rewards(torch.tensor([[0.0, 1.0], [0.0, 0.0]]), torch.ones(2, 2), [False, True])
    assert rewards_pad[0] == 1.0 and math.isnan(rewards_pad[1])


def test_a_token_level_estimator_is_refused_with_the_row():
    adv_BT = torch.tensor([[1.0, 1.0, 0.0], [0.5, 0.2, 0.1]])
    mask_BT = torch.tensor([[1, 1, 0], [1, 1, 1]])
    with pytest.raises(ValueError, match="row 1.*adv_estimator"):
        vb.sequence_advantages(adv_BT, mask_BT)
    assert vb.sequence_advantages(adv_BT[:1], mask_BT[:1]).tolist() == [1.0]


# --- the trainer's wiring: TransferQueue in, teacher pass on the workers, advantages out ----------------------


def nested(rows: list[torch.Tensor]) -> torch.Tensor:
    return torch.nested.as_nested_tensor(rows, layout=torch.jagged)


class MemoryTransferQueue:
    """The three TransferQueue calls the trainer makes, in memory: rows of 1-D tensors (nested on the way out)."""

    def __init__(self):
        self.rows: dict[tuple, dict] = {}

    def kv_batch_put(self, keys, partition_id, fields=None, tags=None):
        for i, key in enumerate(keys):
            row = self.rows.setdefault((partition_id, key), {})
            for name in fields.keys() if fields is not None else []:
                value = fields[name]
                row[name] = value.unbind()[i] if value.is_nested else value[i]
            if tags is not None:
                row["__tag"] = tags[i]

    def kv_batch_get(self, keys, partition_id, select_fields):
        out = {}
        for name in select_fields:
            values = [self.rows[(partition_id, key)][name] for key in keys]
            out[name] = torch.nested.as_nested_tensor(values, layout=torch.jagged) if isinstance(values[0], torch.Tensor) else values
        return out

    def kv_clear(self, keys, partition_id):
        for key in keys:
            del self.rows[(partition_id, key)]

    def put_rows(self, partition_id, keys, rows):
        for key, row in zip(keys, rows):
            self.rows[(partition_id, key)] = dict(row)

    def stored_keys(self, partition_id) -> list[str]:
        return [k for p, k in self.rows if p == partition_id]


class RealTransferQueue:
    """verl's own batch store (transfer_queue: a controller and storage units as Ray actors, ZMQ between them), in
    this one CPU process on a local Ray instance; the same calls as MemoryTransferQueue."""

    def __init__(self):
        import transfer_queue

        self.tq = transfer_queue
        self.kv_batch_put, self.kv_batch_get, self.kv_clear = transfer_queue.kv_batch_put, transfer_queue.kv_batch_get, transfer_queue.kv_clear

    def put_rows(self, partition_id, keys, rows):
        from tensordict import NonTensorStack, TensorDict

        fields = {}
        for name in rows[0]:
            values = [r[name] for r in rows]
            fields[name] = nested(values) if isinstance(values[0], torch.Tensor) else NonTensorStack(*values)
        self.kv_batch_put(keys=keys, partition_id=partition_id, fields=TensorDict(fields, batch_size=len(rows)))

    def stored_keys(self, partition_id) -> list[str]:
        return list((self.tq.kv_list(partition_id) or {}).get(partition_id, {}))


def full_logp_entropy(model, ids: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """verl's actor output layout: entry j scores token j+1 (the last entry is padding)."""
    with torch.no_grad():
        logits = model(ids[None]).logits[0].float() / temperature
    logp = F.log_softmax(logits, dim=-1)
    token = logp[:-1].gather(-1, ids[1:, None]).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return torch.cat([token, torch.zeros(1)]), entropy


class ModelWorkers:
    """``actor_rollout_wg.compute_log_prob`` of one CPU worker: reads its rows from TransferQueue, writes back
    ``log_probs`` and ``entropy`` over the whole sequence (verl's layout)."""

    def __init__(self, model, tq):
        self.model, self.tq, self.calls, self.inputs = model, tq, [], []

    def compute_log_prob(self, meta):
        from tensordict import TensorDict

        self.calls.append(dict(meta.extra_info))
        ids = self.tq.kv_batch_get(keys=meta.keys, partition_id=meta.partition_id, select_fields=["input_ids"])["input_ids"].unbind()
        self.inputs.append([x.tolist() for x in ids])
        scored = [full_logp_entropy(self.model, x, meta.extra_info["temperature"]) for x in ids]
        out = TensorDict({"log_probs": nested([lp for lp, _ in scored]), "entropy": nested([e for _, e in scored])}, batch_size=len(ids))
        self.tq.kv_batch_put(keys=meta.keys, partition_id=meta.partition_id, fields=out)
        return meta.keys


def _wired_trainer(settings, tok, model, tq, antisd_group: dict | None = None):
    from antisd.integrations.verl.trainer import AntiSDTrainer, teacher_pass_for

    trainer = AntiSDTrainer.__new__(AntiSDTrainer)  # verl's __init__ starts Ray and the workers
    trainer.config = OmegaConf.create({
        "antisd": antisd_group or {},
        "data": {"apply_chat_template_kwargs": {}},
        "actor_rollout_ref": {"rollout": {"temperature": 1.0}, "actor": {"ppo_micro_batch_size_per_gpu": 4}},
        "trainer": {"default_local_dir": "unused", "resume_mode": "auto", "resume_from_path": None},
    })  # fmt: skip
    trainer.tokenizer, trainer.tq = tok, tq
    trainer.antisd_settings, trainer.antisd_step = settings, AntiSDStep(settings)
    trainer.teacher_pass = teacher_pass_for(settings, tok, trainer.config)
    trainer.actor_rollout_wg = ModelWorkers(model, tq)
    return trainer


def _put_rollouts(tq, tok, model, step: int):
    """Eight rollouts of two Countdown problems, interleaved as the balancer leaves them, with old log-probs."""
    from transfer_queue import KVBatchMeta

    problems = [("Use 3 5 7 to make 22.", ("3 * 5", "5 * 3"), "15 + 7 = 22", "+ 7"), ("Use 2 4 9 to make 17.", ("2 * 4", "4 * 2"), "8 + 9 = 17", "+ 9")]
    wrong = "try 5 - 3 = 2 * 7 = 14 no\nwait\ntry 7 + 5 = 12 + 3 = 15 no\nanswer: ( 7 + 5 ) + 3"
    keys, fields = [], []
    for s in range(4):
        for p, (question, products, rest, last) in enumerate(problems):
            product = products[s // 2]  # two wordings, so which sibling is the demonstration shows in the prompt
            right = f"try {product} = {rest} yes\nanswer: ( {product} ) {last}"
            correct = {(step % 4), (step + 2) % 4} if p == 0 else {(step + 3) % 4}  # group 1: a lone correct rollout
            text = right if s in correct else wrong
            messages = [{"role": "user", "content": question}]
            prompt = list(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False))
            response = tok(text, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]
            ids = torch.tensor(prompt + response)
            logp, _ = full_logp_entropy(model, ids, 1.0)
            reward = 1.0 if text == right else 0.0
            scores = torch.zeros(len(response))
            scores[-1] = reward
            keys.append(f"prob{p}-step{step}_{s}_0")
            fields.append({"uid": f"prob{p}-step{step}", "raw_prompt": messages, "responses": torch.tensor(response), "response_mask": torch.ones(len(response), dtype=torch.long),
                           "rm_scores": scores, "old_log_probs": logp[len(prompt) - 1 : len(ids) - 1], "reward": reward,
                           "extra_fields": {"reward_extra_info": {"acc": reward}}})  # fmt: skip
    order = [4, 7, 2, 5, 0, 3, 6, 1]  # groups interleaved, members in reverse generation order
    keys, fields = [keys[i] for i in order], [fields[i] for i in order]
    tq.put_rows("train", keys, [{k: v for k, v in f.items() if k != "reward"} for f in fields])
    return KVBatchMeta(keys=keys, tags=[{} for _ in keys], partition_id="train"), fields


def _grpo_into(tq):
    """Stands in for verl's own ``_compute_advantage`` (needs a live TransferQueue): verl's grpo estimator."""

    def compute(self, batch, metrics):
        data = tq.kv_batch_get(batch.keys, batch.partition_id, ["rm_scores", "response_mask", "uid"])
        scores, mask = data["rm_scores"].to_padded_tensor(0.0), data["response_mask"].to_padded_tensor(0)
        adv, _ = compute_grpo_outcome_advantage(scores, mask.float(), np.array(data["uid"], dtype=object))
        from verl.workers.utils.padding import response_to_nested
        from tensordict import TensorDict

        tq.kv_batch_put(batch.keys, batch.partition_id, TensorDict({"advantages": response_to_nested(adv, data["response_mask"])}, batch_size=len(batch)))
        return batch

    return compute


@pytest.fixture(scope="module")
def real_transfer_queue():
    """A local Ray instance with TransferQueue initialised (its controller and storage units need logical CPUs:
    with num_cpus=2 `transfer_queue.init()` waits for ever for their placement)."""
    import ray
    import transfer_queue

    ray.init(include_dashboard=False, log_to_driver=False, num_cpus=8)
    transfer_queue.init()
    yield RealTransferQueue()
    transfer_queue.close()
    ray.shutdown()


def _recomputed(trainer, reference: AntiSDStep, settings, model, tok, fields: list[dict], keys: list[str]):
    """The same step, recomputed here: teacher prompts by uid in generation order (with each row's feedback from its
    reward extras), one unpadded forward per row, verl's grpo, then the shared step → (StepOutput, A_seq, rows)."""
    responses = [f["responses"] for f in fields]
    rows = trainer.teacher_pass.inputs(vb.rollouts(
        [f["raw_prompt"] for f in fields], [tok.decode(r.tolist(), skip_special_tokens=True) for r in responses],
        [f["reward"] for f in fields], [f["uid"] for f in fields], order_B=vb.rollout_order(keys),
        feedback_B=[f["extra_fields"]["reward_extra_info"].get("feedback") for f in fields],
    ))  # fmt: skip
    teacher, entropy = [], []
    for prompt, r in zip(rows.prompt_ids, responses):
        logp, ent = full_logp_entropy(model, torch.tensor(prompt + r.tolist()), 1.0)
        teacher.append(logp[len(prompt) - 1 : len(prompt) + len(r) - 1])
        entropy.append(ent[len(prompt) - 1 : len(prompt) + len(r) - 1])
    pad = lambda xs: torch.nn.utils.rnn.pad_sequence(xs, batch_first=True)  # noqa: E731
    mask_BT = pad([torch.ones(len(r), dtype=torch.long) for r in responses])
    scores = pad([f["rm_scores"] for f in fields])
    adv, _ = compute_grpo_outcome_advantage(scores, mask_BT.float(), np.array([f["uid"] for f in fields], dtype=object))
    expected = vb.apply_step(
        reference, adv, pad(teacher), pad([f["old_log_probs"] for f in fields]), mask_BT, torch.tensor(rows.has_context),
        pad(entropy) if settings.gate_signal == "teacher_entropy_median" else None, torch.arange(len(fields)) // 4,
    )  # fmt: skip
    return expected, adv, rows


@pytest.mark.parametrize("store", ["memory", "transfer_queue"])
@pytest.mark.parametrize("name", ["no_gate", "antisd", "antisd_release"])
def test_compute_advantage_runs_the_teacher_on_the_workers_and_writes_the_steps_advantages(monkeypatch, request, name, store):
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    model, tok = load_model(str(TESTBED))
    tq = MemoryTransferQueue() if store == "memory" else request.getfixturevalue("real_transfer_queue")
    monkeypatch.setattr(PPOTrainerSync, "_compute_advantage", _grpo_into(tq))
    # no_gate without feedback: the lone correct rollout has no context at all (no term there)
    changes = {"lambda_max": 2.0} | ({"include_feedback": False} if name == "no_gate" else {"gate_warmup_steps": 1})
    changes |= {"ppl_spike": 1e3} if name == "antisd_release" else {}  # the tiny model's PPLs: keep micro-batch means
    settings = preset(name).replace(**changes)
    trainer, reference = _wired_trainer(settings, tok, model, tq), AntiSDStep(settings)
    for step in range(2):
        batch, fields = _put_rollouts(tq, tok, model, step)
        metrics: dict = {}
        trainer._compute_advantage(batch, metrics)
        got = tq.kv_batch_get(batch.keys, "train", ["advantages"])["advantages"].to_padded_tensor(0.0)

        expected, adv, rows = _recomputed(trainer, reference, settings, model, tok, fields, batch.keys)
        assert torch.isfinite(got).all() and torch.isfinite(expected.advantages_BT).all(), (got.isnan().sum(), expected.advantages_BT.isnan().sum(), step)
        torch.testing.assert_close(got, expected.advantages_BT, atol=1e-5, rtol=1e-5)
        assert metrics["antisd/gate_on"] == float(expected.gate_on)
        assert metrics["antisd/demonstration_fraction"] > 0
        assert all(rows.has_context) == (name != "no_gate")
        assert not any(k.endswith("::antisd_teacher") for k in tq.stored_keys("train")), "teacher rows were left in TransferQueue"
        tq.kv_clear(keys=batch.keys, partition_id="train")
    assert (got - adv).abs().max() > 1e-3, "the per-token term never acted"
    entropy = settings.gate_signal == "teacher_entropy_median"  # the statistic is logged even with the gate off
    assert trainer.actor_rollout_wg.calls[-1] == {"calculate_entropy": entropy, "compute_loss": False, "temperature": 1.0}
    assert trainer.antisd_step.state_dict() == reference.state_dict()


CODE_PROBLEMS = [  # (question, ground truth as verl data carries it, function)
    ("Write add(a, b).", json.dumps({"tests": ["assert add(2, 3) == 5", "assert add(-1, 1) == 0", "assert add(-2, -3) == -5"], "entry_point": "add"}), "add"),
    ("Write twice(s).", ["assert twice('a') == 'aa'", "assert twice('') == ''", "assert twice('xy') == 'xyxy'"], "twice"),  # Dolci's layout
]
CODE_ROLLOUTS = {  # name → body; 'right' passes 3 of 3, 'partial' 1 of 3 (add) or 2 of 3 (twice), 'prose' has no code
    "right": {"add": "return a + b", "twice": "return s + s"},
    "partial": {"add": "return abs(a) + abs(b)", "twice": "return s * 2 if len(s) < 2 else s"},
    "zero": {"add": "return 0", "twice": "return ''"},
}


def _put_code_rollouts(tq, tok, model, step: int):
    """Eight rollouts of two code problems scored by antisd's verl reward function (sandboxed tests), its extras in
    each row's ``extra_fields`` as verl's reward loop leaves them; interleaved as the balancer leaves them."""
    from transfer_queue import KVBatchMeta

    from antisd.integrations.verl.reward import compute_score

    kinds = ["right", "partial", "zero", "prose"]
    keys, fields = [], []
    for s in range(4):
        for p, (question, ground_truth, fn) in enumerate(CODE_PROBLEMS):
            kind = kinds[(s + step) % 4]
            args = "a, b" if fn == "add" else "s"
            text = ("I am not sure how to write it." if kind == "prose" else
                    f"Here:\n```python\ndef {fn}({args}):\n    {CODE_ROLLOUTS[kind][fn]}\n```\nThis is the {kind} one.")  # fmt: skip
            result = compute_score("antisd_code", text, ground_truth, {})
            messages = [{"role": "user", "content": question}]
            prompt = list(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False))
            response = tok(text, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]
            logp, _ = full_logp_entropy(model, torch.tensor(prompt + response), 1.0)
            scores = torch.zeros(len(response))
            scores[-1] = result["score"]
            keys.append(f"code{p}-step{step}_{s}_0")
            fields.append({"uid": f"code{p}-step{step}", "raw_prompt": messages, "responses": torch.tensor(response), "response_mask": torch.ones(len(response), dtype=torch.long),
                           "rm_scores": scores, "old_log_probs": logp[len(prompt) - 1 : len(prompt) + len(response) - 1], "reward": result["score"],
                           "extra_fields": {"reward_extra_info": result}, "text": text})  # fmt: skip
    order = [4, 7, 2, 5, 0, 3, 6, 1]
    keys, fields = [keys[i] for i in order], [fields[i] for i in order]
    tq.put_rows("train", keys, [{k: v for k, v in f.items() if k not in ("reward", "text")} for f in fields])
    return KVBatchMeta(keys=keys, tags=[{} for _ in keys], partition_id="train"), fields


@pytest.mark.parametrize("store", ["memory", "transfer_queue"])
def test_two_steps_with_the_code_reward_give_the_teacher_its_feedback_and_a_cut_demonstration(monkeypatch, request, store):
    """Issue #22: verl's custom reward (antisd.integrations.verl.reward) grades code in the sandbox; its feedback
    ("Your code passes N of M test cases.") reaches the teacher through reward_extra_info, the demonstration is a
    sibling that passes every test, cut after its code block (antisd.demonstration_cut=code); the advantages equal an
    independent recomputation on both steps."""
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    model, tok = load_model(str(TESTBED))
    tq = MemoryTransferQueue() if store == "memory" else request.getfixturevalue("real_transfer_queue")
    monkeypatch.setattr(PPOTrainerSync, "_compute_advantage", _grpo_into(tq))
    settings = preset("antisd").replace(lambda_max=2.0, gate_warmup_steps=1, ppl_spike=1e30)  # the tiny model knows no code: PPLs ≫ 3
    trainer, reference = _wired_trainer(settings, tok, model, tq, {"demonstration_cut": "code"}), AntiSDStep(settings)
    for step in range(2):
        batch, fields = _put_code_rollouts(tq, tok, model, step)
        assert sorted({f["reward"] for f in fields}) == [0.0, 1 / 3, 2 / 3, 1.0]  # fractions of tests passed
        metrics: dict = {}
        trainer._compute_advantage(batch, metrics)
        got = tq.kv_batch_get(batch.keys, "train", ["advantages"])["advantages"].to_padded_tensor(0.0)
        expected, adv, rows = _recomputed(trainer, reference, settings, model, tok, fields, batch.keys)
        torch.testing.assert_close(got, expected.advantages_BT, atol=1e-5, rtol=1e-5)

        inputs = trainer.actor_rollout_wg.inputs[-1]  # teacher prompt ⊕ the row's own response
        teacher_texts = [tok.decode(ids[: len(ids) - len(f["responses"])]) for ids, f in zip(inputs, fields)]
        for f, text in zip(fields, teacher_texts):
            passed = round(f["reward"] * 3)
            assert f"Previous assessment: Your code passes {passed} of 3 test cases." in text, text
            assert "Your answer is" not in text  # the task's words, not the math line
            assert "This is the right one." not in text  # the demonstration is cut after its code
            if f["reward"] < 1:  # the demonstration: the sibling that passes every test (the passing one has none)
                right = next(g["text"] for g in fields if g["uid"] == f["uid"] and g["reward"] == 1.0)
                assert right[: right.index("```\nThis")] + "```" in text
        assert metrics["antisd/demonstration_fraction"] == 6 / 8  # the passing rollout has no *other* passing sibling
        tq.kv_clear(keys=batch.keys, partition_id="train")
    assert (got - adv).abs().max() > 1e-3, "the per-token term never acted (step 2: after the one warm-up step)"
    assert trainer.antisd_step.state_dict() == reference.state_dict()


def test_code_reward_function_scores_each_layout_and_math():
    from antisd.integrations.verl.reward import compute_score

    good = "```python\ndef add(a, b):\n    return a + b\n```"
    for gt in (["assert add(1, 2) == 3"], json.dumps(["assert add(1, 2) == 3"]), {"inputs": [[1, 2]], "outputs": [3], "fn_name": "add"}):
        assert compute_score("Dolci-RL-Zero-Code-7B", good, gt)["score"] == 1.0
    stdio = compute_score("apps", "```python\na, b = map(int, input().split())\nprint(a + b)\n```", json.dumps({"inputs": ["1 2\n", "5 5\n"], "outputs": ["3\n", "11\n"]}))
    assert (stdio["score"], stdio["feedback"]) == (0.5, "Your code passes 1 of 2 test cases.")
    assert compute_score("math_dapo", "so \\boxed{4}", "4")["score"] == 1.0 and "feedback" not in compute_score("math_dapo", "5", "4")
    with pytest.raises(ValueError, match="tests"):
        compute_score("code", good, "not json")
    with pytest.raises(ValueError, match="antisd.demonstration_cut='python': choose one of boxed, code, none"):
        settings_from_config({"demonstration_cut": "python"})
    assert settings_from_config({"demonstration_cut": "code"}) == preset("antisd")


def test_gate_state_round_trips_through_a_checkpoint(tmp_path, monkeypatch):
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    model, tok = load_model(str(TESTBED))
    saved = []
    monkeypatch.setattr(PPOTrainerSync, "_save_checkpoint", lambda self: saved.append(self.global_steps))
    monkeypatch.setattr(PPOTrainerSync, "_load_checkpoint", lambda self: setattr(self, "global_steps", 3))
    settings = preset("antisd_release").replace(gate_warmup_steps=2)
    trainer = _wired_trainer(settings, tok, model, None)
    trainer.config.trainer.default_local_dir = str(tmp_path)
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):  # calibrate: warm values, σ_ref, the gate's thresholds
        t = -torch.rand(6, 10, generator=gen) * 2
        trainer.antisd_step(StepInputs(seq_adv_B=torch.randn(6, generator=gen), teacher_logp_BT=t, student_logp_BT=t - torch.rand(6, 10, generator=gen), response_mask_BT=torch.ones(6, 10)))
    trainer.global_steps = 3
    trainer._save_checkpoint()
    assert saved == [3] and (tmp_path / "global_step_3" / "antisd_state.json").exists()

    resumed = _wired_trainer(settings, tok, model, None)
    resumed.config.trainer.default_local_dir = str(tmp_path)
    resumed._load_checkpoint()
    assert resumed.antisd_step.state_dict() == trainer.antisd_step.state_dict()
    assert resumed.antisd_step.gate.calibrated and resumed.antisd_step.sigma_ref.value is not None

    resumed.config.trainer.resume_mode = "resume_path"
    resumed.config.trainer.resume_from_path = str(tmp_path / "global_step_9")
    with pytest.raises(FileNotFoundError, match="global_step_9/antisd_state.json"):
        resumed._load_checkpoint()


def test_release_microbatch_statistic_is_refused_under_dynamic_batch_sizes():
    """Issue #20: under use_dynamic_bsz the driver cannot know the update micro-batches, so the release's statistic
    would silently become one whole-batch mean: refused, naming the fix; the shipped script uses fixed ones."""
    from antisd.integrations.verl.config import check_batching

    release = preset("antisd_release")
    with pytest.raises(ValueError, match="use_dynamic_bsz=true makes unknowable on the driver"):
        check_batching(release, {"use_dynamic_bsz": True, "ppo_micro_batch_size_per_gpu": None})
    with pytest.raises(ValueError, match="needs actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu"):
        check_batching(release, {"use_dynamic_bsz": False, "ppo_micro_batch_size_per_gpu": None})
    check_batching(release, {"use_dynamic_bsz": False, "ppo_micro_batch_size_per_gpu": 2})
    check_batching(release.replace(warmup_statistic="step_mean"), {"use_dynamic_bsz": True})
    check_batching(preset("antisd"), {"use_dynamic_bsz": True})
    cfg = _compose(_script_overrides(ROOT / "scripts" / "verl" / "qwen3_8b_antisd.sh"))
    check_batching(settings_from_config(cfg.antisd), cfg.actor_rollout_ref.actor)  # the shipped script passes
    assert cfg.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu == 2 and cfg.actor_rollout_ref.rollout.log_prob_use_dynamic_bsz


def test_node_probe_names_what_a_node_cannot_import():
    """Issue #20: before a verl run, scripts/verl/check_nodes.py imports the plug-in on every Ray node (a local Ray
    instance here) and names what is missing, instead of verl's bare "Unknown trainer 'antisd_sync'"."""
    import importlib.util

    import ray

    spec = importlib.util.spec_from_file_location("check_nodes", ROOT / "scripts" / "verl" / "check_nodes.py")
    check_nodes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check_nodes)
    started = not ray.is_initialized()  # another test's fixture may hold a local instance already
    if started:
        ray.init(include_dashboard=False, log_to_driver=False, num_cpus=1)
    try:
        text, ok = check_nodes.report(check_nodes.check_cluster())
        assert ok and "antisd.integrations.verl.trainer" in text, text
        text, ok = check_nodes.report(check_nodes.check_cluster((*check_nodes.MODULES, "antisd_not_installed_here")))
        assert not ok and "MISSING antisd_not_installed_here (ModuleNotFoundError" in text and "pip install" in text, text
    finally:
        if started:
            ray.shutdown()

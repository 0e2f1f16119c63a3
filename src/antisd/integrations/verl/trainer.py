"""``AntiSDTrainer``: verl's synchronous v1 PPO trainer with per-token AntiSD advantages.

Registered as ``trainer.v1.trainer_mode=antisd_sync`` (``register_trainer``). It overrides only:
- ``_compute_advantage``: after verl has computed the old log-probs and its outcome advantages (GRPO), it
  translates the batch for the shared teacher pass (groups by ``uid``, generation order from the keys), whose
  scoring callback runs the teacher — the actor itself, current weights, no gradient — over those rows in one
  forward-only pass on the workers (``actor_rollout_wg.compute_log_prob``, the call verl makes for the old
  log-probs); then ``decide`` and ``compose_rows`` replace the advantages with the step's [B, T] ones. verl's policy
  loss, clipping and aggregation then apply unchanged.
- ``_save_checkpoint`` / ``_load_checkpoint``: the step's state (gate, σ_ref, warm PPL) in every checkpoint.

The teacher's entropies come from the same pass (``calculate_entropy``) only when the settings use them. The
student's log-probs are verl's ``old_log_probs``: the same weights, the plain prompt. Teachers with weights of
their own (``antisd.teacher=ema/frozen``) are refused: the workers hold one model.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import transfer_queue
from tensordict import TensorDict
from transfer_queue import KVBatchMeta
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.workers.utils.padding import response_from_nested, response_to_nested

from antisd.infra import rundir
from antisd.integrations.verl import batch as vb
from antisd.integrations.verl.config import check_batching, demonstration_cut, settings_from_config
from antisd.method.step import AntiSDStep
from antisd.method.teacher_pass import TeacherPass

TEACHER_SUFFIX = "::antisd_teacher"
FIELDS = ["uid", "raw_prompt", "responses", "response_mask", "rm_scores", "old_log_probs", "advantages", "extra_fields"]


def as_list(values) -> list:
    """A TransferQueue non-tensor field (NonTensorStack, linked list or numpy array) as a plain list."""
    return values.tolist() if hasattr(values, "tolist") else list(values)


def nested(rows: list[torch.Tensor]) -> torch.Tensor:
    return torch.nested.as_nested_tensor(rows, layout=torch.jagged)


def teacher_pass_for(settings, tokenizer, config) -> TeacherPass:
    """The teacher pass of this trainer: demonstrations cut as ``antisd.demonstration_cut`` says (``boxed``, the
    default: after the last \\boxed{}, which verl's math rewards grade; ``code``: after the last code block); the
    teacher prompt uses the data's chat-template arguments, as the student's did."""
    kwargs = dict(config.data.get("apply_chat_template_kwargs") or {})
    cut = demonstration_cut(config.get("antisd"))
    return TeacherPass(settings, tokenizer, cut_demonstration=cut, chat_template_kwargs=kwargs)


@register_trainer("antisd_sync")
class AntiSDTrainer(PPOTrainerSync):
    tq = transfer_queue  # the TransferQueue client module (a seam: the CPU tests use an in-memory one)

    def __init__(self, config):
        settings = settings_from_config(config.get("antisd"))  # refuse bad settings before verl starts Ray and workers
        if settings.control:
            raise NotImplementedError("antisd.control (the experimental control-subtracted preset) is implemented for the TRL trainer only")
        if settings.teacher in ("ema", "frozen"):
            raise NotImplementedError(
                f"antisd.teacher={settings.teacher} is implemented for the TRL trainer only: here the teacher pass runs on the actor workers "
                "(compute_log_prob with the live weights), and an EMA or frozen teacher needs a second model on those workers that "
                "the driver cannot hold; use antisd.teacher=live (the paper)"
            )
        check_batching(settings, config.actor_rollout_ref.actor)
        super().__init__(config)
        self.antisd_settings = settings
        self.antisd_step = AntiSDStep(settings)
        self.teacher_pass = teacher_pass_for(settings, self.tokenizer, self.config)

    def _compute_advantage(self, batch, metrics):
        batch = super()._compute_advantage(batch, metrics)
        if self.antisd_settings.scores_teacher:  # antisd.teacher=none: plain GRPO, no teacher pass
            self._antisd_advantages(batch, metrics)
        return batch

    # --- AntiSD -----------------------------------------------------------------------------------------------

    def _antisd_advantages(self, batch, metrics: dict) -> None:
        data = self.tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=FIELDS)
        mask_nested = data["response_mask"]
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        responses_BT = data["responses"].to_padded_tensor(padding=pad_id)
        mask_BT = mask_nested.to_padded_tensor(padding=0)
        is_padding = [bool(tag.get("is_padding", False)) for tag in batch.tags]
        rewards = vb.sequence_rewards(data["rm_scores"].to_padded_tensor(padding=0.0), mask_BT, is_padding)
        rollouts = vb.rollouts(
            as_list(data["raw_prompt"]), vb.decode_responses(self.tokenizer, responses_BT, mask_BT), rewards, as_list(data["uid"]),
            is_padding_B=is_padding, order_B=vb.rollout_order(batch.keys), feedback_B=vb.reward_feedback(as_list(data["extra_fields"])),
        )  # fmt: skip
        responses = vb.response_ids(responses_BT, data["responses"].offsets().diff())
        score = functools.partial(self._teacher_forward, batch, responses, mask_BT)
        teacher = self.teacher_pass.run(rollouts, score)
        out = vb.apply_step(
            self.antisd_step, data["advantages"].to_padded_tensor(padding=0.0), teacher.teacher_logp_BT,
            data["old_log_probs"].to_padded_tensor(padding=0.0), mask_BT, teacher.has_context_B, teacher.teacher_entropy_BT, self._microbatches(len(batch)),
        )  # fmt: skip
        advantages = TensorDict({"advantages": response_to_nested(out.advantages_BT, mask_nested)}, batch_size=len(batch))
        self.tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=advantages)
        metrics.update(out.metrics | teacher.metrics)

    def _teacher_forward(self, batch, responses: list[list[int]], mask_BT: torch.Tensor, prompt_ids: list[list[int]], entropy: bool):
        """The teacher pass's scoring callback: teacher log-probs (and entropies) of every row's response under its
        privileged context, in one forward-only pass on the actor workers, through TransferQueue rows written next
        to the batch's."""
        keys = [key + TEACHER_SUFFIX for key in batch.keys]
        samples = vb.teacher_sequences(prompt_ids, responses, mask_BT)
        fields = TensorDict({name: nested([x[name] for x in samples]) for name in samples[0]}, batch_size=len(samples))
        tags = [dict(tag, prompt_len=len(p), response_len=len(r), seq_len=len(p) + len(r)) for tag, p, r in zip(batch.tags, prompt_ids, responses)]
        self.tq.kv_batch_put(keys=keys, partition_id=batch.partition_id, fields=fields, tags=tags)
        temperature = self.config.actor_rollout_ref.rollout.temperature  # the same scale as the old log-probs
        meta = KVBatchMeta(
            keys=keys, tags=tags, partition_id=batch.partition_id,
            extra_info={"calculate_entropy": entropy, "compute_loss": False, "temperature": temperature},
        )  # fmt: skip
        try:
            output = self.actor_rollout_wg.compute_log_prob(meta)
            if len(output) != len(batch):
                raise RuntimeError(f"teacher pass returned {len(output)} rows for {len(batch)}")
            got = self.tq.kv_batch_get(keys=keys, partition_id=batch.partition_id, select_fields=["log_probs", "entropy", "response_mask"])
            logp_BT = response_from_nested(got["log_probs"], got["response_mask"]).to_padded_tensor(padding=0.0)
            ent_BT = response_from_nested(got["entropy"], got["response_mask"]).to_padded_tensor(padding=0.0) if entropy else None
        finally:
            self.tq.kv_clear(keys=keys, partition_id=batch.partition_id)
        return logp_BT.float(), (ent_BT.float() if ent_BT is not None else None)

    def _microbatches(self, n: int) -> torch.Tensor:
        """[B] the actor micro-batch of each row (the balanced batch is split in order over ranks, then micro-batches);
        only the release's micro-batch warm-up statistic reads it, and ``check_batching`` ensures they are fixed."""
        size = self.config.actor_rollout_ref.actor.get("ppo_micro_batch_size_per_gpu") or n
        return torch.arange(n) // size

    # --- checkpoints ------------------------------------------------------------------------------------------

    def _step_folder(self) -> Path:
        return Path(self.config.trainer.default_local_dir) / f"global_step_{self.global_steps}"

    def _save_checkpoint(self):
        # Written before verl's own save, which ends by pointing latest_checkpointed_iteration.txt at the folder:
        # a checkpoint verl resumes from always holds the gate.
        self._step_folder().mkdir(parents=True, exist_ok=True)
        rundir.write_step_state(self._step_folder(), self.antisd_step.state_dict())
        super()._save_checkpoint()

    def _load_checkpoint(self):
        super()._load_checkpoint()
        if self.global_steps == 0:
            return
        folder = self._step_folder()
        if self.config.trainer.resume_mode == "resume_path":
            folder = Path(self.config.trainer.resume_from_path)
        self.antisd_step.load_state_dict(rundir.read_step_state(folder, "the AntiSD trainer (antisd_sync)"))

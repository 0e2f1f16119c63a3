"""``AntiSDTrainer``: TRL's stable ``GRPOTrainer`` with per-token AntiSD advantages.

An adapter: it translates TRL's generation batch for the method (:class:`antisd.method.teacher_pass.TeacherPass`,
:class:`antisd.method.step.AntiSDStep`) and supplies a scoring callback and a reducer. It overrides as little of
TRL as possible:
- ``_calculate_rewards``: keeps the globally gathered rewards (needed to pick correct siblings);
- ``_generate_and_score_completions``: after TRL has generated, scored and computed A_seq, runs the teacher pass
  (teacher inputs, one no-grad forward under the teacher source's weights: by default the *current* policy, the
  paper's teacher under stop-gradient), then ``decide`` and ``compose_rows``, and replaces ``advantages`` [B] by
  the step's [B, T] ones. TRL's own ``_compute_loss`` accepts [B, T] advantages as-is, so every TRL loss type,
  clipping and IS correction applies. Without TRL's old log-probs the rows are composed at loss time
  (:class:`LossTimeComposition`), from the training forward's own log-probs.
- ``_save_checkpoint`` / ``_load_optimizer_and_scheduler``: the step's state (gate, σ_ref, warm PPL) and a kept
  teacher's weights live in every checkpoint.

Teacher and student log-probs come from TRL's own ``_get_per_token_logps_and_entropies`` (a tiled, fused LM head
that never materialises [B, T, V] logits), so u is exactly 0 wherever the teacher input equals the student's.
All group-level statistics (siblings, gate statistic, σ_ref) are computed on globally gathered values before
TRL's per-process slice, so every process takes the same gate decision.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from accelerate.utils import gather_object
from transformers import TrainerCallback
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing, unwrap_model_for_generation
from trl.trainer.utils import add_fused_lm_head

from antisd.infra import rundir
from antisd.infra.models import check_training_precision
from antisd.integrations.trl.config import AntiSDConfig
from antisd.method.step import AntiSDStep, StepInputs
from antisd.method.teacher_pass import Rollouts, TeacherInputs, TeacherPass
from antisd.method.teachers import make_teacher

class AccelerateReducer:
    """The step's cross-process reductions over accelerate (identity on one process)."""

    def __init__(self, accelerator):
        self.accelerator = accelerator

    def sum(self, values) -> list[float]:
        t = torch.tensor(list(values), dtype=torch.float64, device=self.accelerator.device)
        return self.accelerator.reduce(t, reduction="sum").tolist()

    def gather(self, x_N: torch.Tensor) -> torch.Tensor:
        padded = self.accelerator.pad_across_processes(x_N.to(self.accelerator.device).flatten(), dim=0, pad_index=float("nan"))
        values = self.accelerator.gather(padded)
        return values[~torch.isnan(values)]


@dataclass(kw_only=True)
class AntiSDBatch:
    """What one generation batch fed into the AntiSD advantage (local rows), kept for inspection and tests."""

    step: int
    seq_adv_B: torch.Tensor
    teacher_logp_BT: torch.Tensor
    student_logp_BT: torch.Tensor | None
    """None until the training forward composes the term (deferred student log-probs)."""
    signal_mask_BT: torch.Tensor
    lam_B: torch.Tensor
    gate_on: bool
    sigma_ref: float | None
    advantages_BT: torch.Tensor | None
    prompt_ids: torch.Tensor
    completion_ids: torch.Tensor
    teacher_inputs: TeacherInputs
    """The teacher prompts and their token ids, as the teacher pass built them."""
    control_inputs: TeacherInputs | None = None
    teacher_entropy_BT: torch.Tensor | None = None
    response_mask_BT: torch.Tensor | None = None
    rewards: list | None = None
    """The whole generation batch's rewards (all processes), from which siblings and feedback were chosen."""

    @property
    def teacher_prompts(self) -> list:
        return self.teacher_inputs.prompts


class LossTimeComposition:
    """The per-token term composed inside TRL's training forward, without a student forward of our own.

    When TRL has no old log-probs, the step's plan (λ_i, term mask, teacher log-probs) rides with the rows through
    TRL's shuffle and split as ``antisd_*`` tensors of ``inputs``. TRL's ``_compute_loss`` first runs the training
    forward (``_get_per_token_logps_and_entropies``) and only then reads ``inputs["advantages"]``: so the trainer
    opens a composition for the micro-batch around ``_compute_loss`` (:meth:`around`), and its forward override
    calls :meth:`compose` with the forward's detached log-probs, which calls ``AntiSDStep.compose_rows`` and writes
    the [B, T] advantages into ``inputs`` before TRL reads them. One composition, one compose call."""

    KEYS = ("antisd_teacher_logp", "antisd_term_mask", "antisd_lam", "antisd_control_logp")

    def __init__(self, trainer: "AntiSDTrainer"):
        self.trainer, self.inputs = trainer, None

    @contextlib.contextmanager
    def around(self, inputs: dict):
        self.inputs = inputs if "antisd_teacher_logp" in inputs else None
        try:
            yield
        finally:
            self.inputs = None

    def compose(self, student_logp_BT: torch.Tensor) -> None:
        """Compose the open micro-batch's advantages from the training forward's log-probs (no-op when none is open)."""
        x, self.inputs = self.inputs, None
        if x is None:
            return
        tr = self.trainer
        out = tr.antisd_step.compose_rows(
            seq_adv_B=x["advantages"], teacher_logp_BT=x["antisd_teacher_logp"], student_logp_BT=student_logp_BT.detach().float(),
            term_mask_BT=x["antisd_term_mask"], lam_B=x["antisd_lam"], control_logp_BT=x.get("antisd_control_logp"), reducer=tr.antisd_reducer,
        )  # fmt: skip
        tr._log_tokens(out, x["completion_ids"])
        x["advantages"], x["antisd_student_logp"] = out.advantages_BT, student_logp_BT.detach()


class _TeacherUpdate(TrainerCallback):
    """Moves an EMA teacher after every optimizer step (a no-op for live and frozen teachers)."""

    def __init__(self, trainer: "AntiSDTrainer"):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.antisd_teacher.after_optimizer_step(self.trainer.model)


RENAMED_KWARGS = {"demonstration_cutter": "cut_demonstration"}  # one name per idea (docs/architecture.md glossary)


class AntiSDTrainer(GRPOTrainer):
    # What TRL writes into a saved model's card (create_model_card / push_to_hub)
    _tag_names = ["trl", "grpo", "antisd"]
    _name = "AntiSD"
    _paper = {
        "title": "Anti-Self-Distillation for Reasoning RL via Pointwise Mutual Information",
        "id": "2605.11609",
        "citation": (
            "@article{shen2026antisd,\n    title   = {{Anti-Self-Distillation for Reasoning RL via Pointwise Mutual Information}},\n"
            "    author  = {Guobin Shen and Xiang Cheng and Chenxiao Zhao and Lei Huang and Jindong Li and Dongcheng Zhao and Xing Yu},\n"
            "    journal = {arXiv preprint arXiv:2605.11609},\n    year    = {2026}\n}"
        ),
    }

    def __init__(
        self, *args, cut_demonstration: Callable[[str], str] | None = None, feedback: Callable[[float, dict], str | None] | None = None,
        run_id: str | None = None, **kwargs,
    ):  # fmt: skip
        for old, new in RENAMED_KWARGS.items():
            if old in kwargs:
                raise TypeError(f"AntiSDTrainer({old}=...) was renamed {new}=...")
        super().__init__(*args, **kwargs)
        self.antisd_run_id = run_id  # written into each checkpoint's completeness marker (antisd.infra.rundir); set it before training
        if not isinstance(self.args, AntiSDConfig):
            raise TypeError(f"AntiSDTrainer needs an AntiSDConfig, got {type(self.args).__name__}")
        tok = self.processing_class
        if getattr(tok, "chat_template", None) is None:
            raise ValueError("The tokenizer has no chat template: the teacher prompt is built with apply_chat_template")
        # AdamW must step fp32 weights: decided from the live engine (a DeepSpeed optimizer keeps an fp32 master copy)
        mixed = "bf16" if self.args.bf16 else "fp16" if self.args.fp16 else "no"
        self.antisd_precision = check_training_precision(self.model, mixed, engine_keeps_fp32_master=self.is_deepspeed_enabled)
        s = self.args.antisd
        self.antisd_step = AntiSDStep(s)
        self.antisd_reducer = AccelerateReducer(self.accelerator)
        self.teacher_pass = TeacherPass(s, tok, cut_demonstration=cut_demonstration, chat_template_kwargs=self.chat_template_kwargs)
        self.antisd_teacher = self._make_teacher(s)
        self.task_feedback = feedback  # (reward, dataset row) → the task's feedback text (code), or None: the settings' strings
        self.add_callback(_TeacherUpdate(self))
        self.loss_time_composition = LossTimeComposition(self)
        self.last_antisd_batch: AntiSDBatch | None = None
        self._antisd_references: list = []
        self._antisd_rewards: torch.Tensor | None = None

    def _make_teacher(self, s):
        sharded = self.is_fsdp_enabled or (self.is_deepspeed_enabled and self.accelerator.state.deepspeed_plugin.zero_stage == 3)
        if s.teacher in ("ema", "frozen") and sharded:
            raise ValueError(f"antisd_teacher={s.teacher!r} keeps a full copy of the weights on every process, but DeepSpeed ZeRO-3 and "
                             "FSDP shard them: use antisd_teacher=live there, or ZeRO-2/DDP")  # fmt: skip
        def prepare(copy):  # as TRL patched the policy (and its reference model): the fused, chunked LM head
            add_fused_lm_head(copy.get_base_model() if hasattr(copy, "get_base_model") else copy, temperature=self.temperature,
                              cast_lm_head_to_fp32=self.args.cast_lm_head_to_fp32, outputs=("log_probs", "entropy"))  # fmt: skip

        return make_teacher(s.teacher, self.model, decay=s.teacher_ema_decay, offload=s.teacher_offload, prepare=prepare)

    @property
    def gate(self):
        return self.antisd_step.gate

    @contextlib.contextmanager
    def generation_model(self):
        """The model ready for ``generate`` outside TRL's own generation (held-out evaluation), as TRL prepares it:
        parameters gathered under DeepSpeed ZeRO-3, full parameters under FSDP, the plain model otherwise. Under
        ZeRO-3 or FSDP call it once ``train()`` has prepared the engine (e.g. from ``on_train_begin``)."""
        with (
            unwrap_model_for_generation(self.model_wrapped, self.accelerator, gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                                        gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs) as model,
            self._dist.summon_full_params(self.model_wrapped, recurse=False),
        ):  # fmt: skip
            yield model

    @property
    def sigma_ref(self):
        return self.antisd_step.sigma_ref

    # --- TRL hooks --------------------------------------------------------------------------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        weighted = (rewards_per_func * self.reward_weights.to(rewards_per_func.device)[None]).nansum(dim=1)
        weighted[torch.isnan(rewards_per_func).all(dim=1)] = float("nan")  # unscorable: no feedback, no demonstration
        self._antisd_rewards = weighted
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        if not self.model.training or not self.args.antisd.scores_teacher:
            return out  # no teacher pass (antisd_teacher=none): plain GRPO
        self._antisd_references = [x.get("reference") for x in inputs]
        self._antisd_rows = inputs
        prompts = [x["prompt"] for x in inputs]
        out["advantages"] = self._antisd_advantages(prompts, out)
        return out

    # --- AntiSD -----------------------------------------------------------------------------------------------

    def _antisd_advantages(self, prompts: list, out: dict) -> torch.Tensor:
        completion_ids, completion_mask = out["completion_ids"], out["completion_mask"]
        mask_BT = completion_mask if "tool_mask" not in out else completion_mask * out["tool_mask"]
        teacher = self.teacher_pass.run(self._rollouts(prompts, completion_ids, completion_mask), functools.partial(self._score_teacher, out), self.antisd_reducer)
        student_logp_BT = self._student_logp(out)
        step = self.antisd_step
        inputs = StepInputs(
            seq_adv_B=out["advantages"], teacher_logp_BT=teacher.teacher_logp_BT, student_logp_BT=student_logp_BT, response_mask_BT=mask_BT,
            teacher_entropy_BT=teacher.teacher_entropy_BT, has_context_B=teacher.has_context_B, control_logp_BT=teacher.control_logp_BT,
            microbatch_B=torch.arange(completion_ids.size(0)) // self.args.per_device_train_batch_size,  # TRL's micro-batches here
        )  # fmt: skip
        plan = step.decide(inputs, self.antisd_reducer)
        for key, value in (plan.metrics | teacher.metrics).items():
            self._metrics["train"][key].append(value)
        self.last_antisd_batch = AntiSDBatch(
            step=self.state.global_step, seq_adv_B=out["advantages"].detach().clone(), teacher_logp_BT=teacher.teacher_logp_BT,
            student_logp_BT=student_logp_BT, signal_mask_BT=plan.term_mask_BT, lam_B=plan.lam_B, gate_on=plan.gate_on,
            sigma_ref=self.sigma_ref.value, advantages_BT=None, prompt_ids=out["prompt_ids"], completion_ids=completion_ids,
            teacher_inputs=teacher.inputs, control_inputs=teacher.control_inputs, teacher_entropy_BT=teacher.teacher_entropy_BT,
            response_mask_BT=mask_BT, rewards=self._antisd_rewards.tolist(),
        )  # fmt: skip
        if student_logp_BT is None:  # deferred: TRL shuffles and splits these with the rows; LossTimeComposition composes
            out["antisd_teacher_logp"], out["antisd_term_mask"], out["antisd_lam"] = teacher.teacher_logp_BT, plan.term_mask_BT, plan.lam_B
            if teacher.control_logp_BT is not None:
                out["antisd_control_logp"] = teacher.control_logp_BT
            return out["advantages"]
        result = step.compose_rows(
            seq_adv_B=out["advantages"], teacher_logp_BT=teacher.teacher_logp_BT, student_logp_BT=student_logp_BT, term_mask_BT=plan.term_mask_BT,
            lam_B=plan.lam_B, control_logp_BT=teacher.control_logp_BT, reducer=self.antisd_reducer,
        )  # fmt: skip
        self._log_tokens(result, completion_ids)
        self.last_antisd_batch.advantages_BT = result.advantages_BT
        return result.advantages_BT.to(self.accelerator.device)

    def _student_logp(self, out: dict) -> torch.Tensor | None:
        """The student's log-probs when the step needs them now: TRL's own old log-probs when it computed them (vLLM,
        several iterations, misaligned accumulation), else a forward only if asked or needed to decide; otherwise
        None, and the training forward computes them moments later with the same weights (no extra forward)."""
        student_logp_BT = out.get("old_per_token_logps")
        if student_logp_BT is None and (self.args.score_student_separately or self.antisd_step.needs_student_to_decide()):
            ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
            mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
            student_logp_BT, _ = self._score(ids, mask, out["completion_ids"].size(1), False)
        return student_logp_BT

    def _rollouts(self, prompts: list, completion_ids: torch.Tensor, completion_mask: torch.Tensor) -> Rollouts:
        """TRL's generation batch as the teacher pass takes it: every process's decoded responses and rewards
        (gathered), groups as consecutive runs of G, and this process's rows."""
        tok = self.processing_class
        local_texts = [tok.decode(ids[m.bool()], skip_special_tokens=True) for ids, m in zip(completion_ids, completion_mask)]
        rewards = self._antisd_rewards.tolist()
        offset = self.accelerator.process_index * len(prompts)
        feedback = None
        if self.task_feedback is not None:  # the task's own words (code: "passes N of M"), from every process's rows
            local = [None if r != r else self.task_feedback(r, row) for r, row in zip(rewards[offset : offset + len(prompts)], self._antisd_rows)]
            feedback = gather_object(local)
        return Rollouts(
            texts=gather_object(local_texts), rewards=rewards, group_ids=[i // self.num_generations for i in range(len(rewards))],
            rows=range(offset, offset + len(prompts)), prompts=prompts, references=self._antisd_references, feedback=feedback,
        )  # fmt: skip

    def _score_teacher(self, out: dict, prompt_ids: list[list[int]], entropy: bool):
        """The teacher pass's scoring callback: each teacher prompt ⊕ the row's completion, under the teacher's weights."""
        completion_ids, completion_mask = out["completion_ids"], out["completion_mask"]
        ids, mask = self._tokenize_teacher(prompt_ids, completion_ids, completion_mask)
        with self.antisd_teacher.scoring(self.model) as model:
            return self._score(ids, mask, completion_ids.size(1), entropy, model=model)

    def _tokenize_teacher(self, prompt_ids: list[list[int]], completion_ids: torch.Tensor, completion_mask: torch.Tensor):
        """Left-padded teacher prompt ids ⊕ the student's completion tokens."""
        width = max(len(r) for r in prompt_ids)
        pad = torch.full((len(prompt_ids), width), self.processing_class.pad_token_id, dtype=completion_ids.dtype)
        pad_mask = torch.zeros((len(prompt_ids), width), dtype=completion_mask.dtype)
        for i, r in enumerate(prompt_ids):
            pad[i, width - len(r) :] = torch.tensor(r, dtype=completion_ids.dtype)
            pad_mask[i, width - len(r) :] = 1
        ids = torch.cat([pad.to(completion_ids.device), completion_ids], dim=1)
        return ids, torch.cat([pad_mask.to(completion_mask.device), completion_mask], dim=1)

    def _score(self, ids: torch.Tensor, mask: torch.Tensor, n_completion: int, entropy: bool = True, model=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """No-grad per-token log-probs (and entropies, if asked) of the last ``n_completion`` tokens under ``model``
        (default: the policy, current weights)."""
        model = self.model if model is None else model
        checkpointing = (
            disable_gradient_checkpointing(model, self.args.gradient_checkpointing_kwargs)
            if self.args.gradient_checkpointing
            else contextlib.nullcontext()
        )
        with torch.no_grad(), checkpointing:
            logp, ent, _ = self._get_per_token_logps_and_entropies(
                model, ids, mask, n_completion, batch_size=self.args.score_batch_size or self.args.per_device_train_batch_size, compute_entropy=entropy
            )
        return logp.float(), (ent.float() if ent is not None else None)

    # --- loss-time composition (no extra student forward) -------------------------------------------------------

    def _compute_loss(self, model, inputs):
        with self.loss_time_composition.around(inputs):
            return super()._compute_loss(model, inputs)

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        result = super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)
        self.loss_time_composition.compose(result[0])  # the training forward of _compute_loss; a no-op otherwise
        return result

    def _log_tokens(self, out, completion_ids: torch.Tensor) -> None:
        for key, value in out.metrics.items():
            # At loss time a micro-batch may hold only uniform groups (term_ratio undefined, NaN): it is left out of
            # the step's mean rather than making the whole step NaN.
            if value == value:
                self._metrics["train"][key].append(value)
        every = self.args.antisd.log_categories_every
        if every and self.state.global_step % every == 0:
            self._log_categories(completion_ids, out.u_BT, out.signal_mask_BT)

    def _log_categories(self, completion_ids: torch.Tensor, u_BT: torch.Tensor, mask_BT: torch.Tensor) -> None:
        """Mean u per token category (antisd.evaluation.pmi_report lists), local to this process: the paper's Fig. 2 split, tracked."""
        from antisd.evaluation.pmi_report import DELIBERATION, STRUCTURAL, normalise

        tok = self.processing_class
        for name, words in (("deliberation", DELIBERATION), ("structural", STRUCTURAL)):
            values = [
                u_BT[i, j].item()
                for i, j in mask_BT.nonzero().tolist()
                if normalise(tok.decode([completion_ids[i, j].item()])) in words
            ]
            if values:
                self._metrics["train"][f"antisd/cat/{name}_u_mean"].append(sum(values) / len(values))
                self._metrics["train"][f"antisd/cat/{name}_count"].append(float(len(values)))

    # --- checkpoints ------------------------------------------------------------------------------------------

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
            rundir.write_step_state(folder, self.antisd_step.state_dict())
            self.antisd_teacher.save(folder)
            if self.antisd_run_id is not None:  # last: only now is the checkpoint complete
                rundir.mark_complete(folder, self.antisd_run_id, self.state.global_step)
                rundir.prune(folder.parent, self.antisd_run_id, self.args.keep_complete_checkpoints)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            self._load_antisd_state(checkpoint)

    def load_finished_checkpoint(self, checkpoint: str) -> None:
        """Load a checkpoint of the run's last step without training: its weights, trainer state and AntiSD state.
        A run killed after its last checkpoint and before its final records resumes here (``trainer.train`` would
        take one step more)."""
        from transformers.trainer_callback import TrainerState

        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            raise ValueError(f"the run was killed after its last checkpoint; under DeepSpeed/FSDP antisd cannot write its final records "
                             f"without training: the trained model is in {checkpoint}")  # fmt: skip
        self._load_from_checkpoint(checkpoint)
        self.state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
        self._load_antisd_state(checkpoint)

    def _load_antisd_state(self, checkpoint) -> None:
        self.antisd_step.load_state_dict(rundir.read_step_state(Path(checkpoint), "AntiSDTrainer"))
        self.antisd_teacher.load(Path(checkpoint))

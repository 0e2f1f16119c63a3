"""``AntiSDTrainer``: TRL's stable ``GRPOTrainer`` with per-token AntiSD advantages.

An adapter: it gathers what the shared AntiSD step needs and hands it over (:class:`antisd.step.AntiSDStep`,
:class:`antisd.context.TeacherContextBuilder`). It overrides as little of TRL as possible:
- ``_calculate_rewards``: keeps the globally gathered rewards (needed to pick correct siblings);
- ``_generate_and_score_completions``: after TRL has generated, scored and computed A_seq, builds each rollout's
  teacher input, runs one no-grad teacher forward with the *current* weights (the paper's teacher is the policy
  itself under stop-gradient), and replaces ``advantages`` [B] by the step's [B, T] ones. TRL's own
  ``_compute_loss`` accepts [B, T] advantages as-is, so every TRL loss type, clipping and IS correction applies.
- ``_save_checkpoint`` / ``_load_optimizer_and_scheduler``: the step's state (gate, σ_ref) lives in every checkpoint.

Teacher and student log-probs come from TRL's own ``_get_per_token_logps_and_entropies`` (a tiled, fused LM head
that never materialises [B, T, V] logits), so u is exactly 0 wherever the teacher input equals the student's.
All group-level statistics (siblings, gate statistic, σ_ref) are computed on globally gathered values before
TRL's per-process slice, so every process takes the same gate decision.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from accelerate.utils import gather_object
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing, unwrap_model_for_generation

from antisd import context as ctx
from antisd import rundir
from antisd.integrations.trl.config import AntiSDConfig
from antisd.runtime import check_training_precision
from antisd.step import AntiSDStep, StepInputs

STATE_FILE = "antisd_state.json"


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


@dataclass
class AntiSDBatch:
    """What one generation batch fed into the AntiSD advantage (local rows), kept for inspection and tests."""

    step: int
    seq_adv_B: torch.Tensor
    teacher_logp_BT: torch.Tensor
    student_logp_BT: torch.Tensor
    signal_mask_BT: torch.Tensor
    lam_B: torch.Tensor
    gate_on: bool
    sigma_ref: float | None
    advantages_BT: torch.Tensor
    prompt_ids: torch.Tensor
    completion_ids: torch.Tensor
    teacher_texts: list
    teacher_entropy_BT: torch.Tensor | None = None
    response_mask_BT: torch.Tensor | None = None
    rewards: list | None = None
    """The whole generation batch's rewards (all processes), from which siblings and feedback were chosen."""


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

    def __init__(self, *args, demonstration_cutter: Callable[[str], str] | None = None, run_id: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.antisd_run_id = run_id  # written into each checkpoint's completeness marker (antisd.rundir); set it before training
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
        self.teacher_context = ctx.builder_for_tokenizer(s, tok, demonstration_cutter)
        self.last_antisd_batch: AntiSDBatch | None = None
        self._antisd_references: list = []
        self._antisd_rewards: torch.Tensor | None = None
        self._antisd_pending: dict | None = None

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
        weighted[torch.isnan(rewards_per_func).all(dim=1)] = float("nan")  # unscorable: no feedback, no demo
        self._antisd_rewards = weighted
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        if not self.model.training or not self.args.antisd.scores_teacher:
            return out  # λ = 0 and no diagnostics: plain GRPO, no teacher forward
        self._antisd_references = [x.get("reference") for x in inputs]
        prompts = [x["prompt"] for x in inputs]
        out["advantages"] = self._antisd_advantages(prompts, out)
        return out

    # --- AntiSD -----------------------------------------------------------------------------------------------

    def _antisd_advantages(self, prompts: list, out: dict) -> torch.Tensor:
        completion_ids, completion_mask = out["completion_ids"], out["completion_mask"]
        mask_BT = completion_mask if "tool_mask" not in out else completion_mask * out["tool_mask"]

        teacher_texts, ctx_stats = self._teacher_texts(prompts, completion_ids, completion_mask)
        teacher_ids, teacher_mask, truncated = self._tokenize_teacher(teacher_texts, completion_ids, completion_mask)
        s = self.args.antisd
        entropy = s.gate_signal == "teacher_entropy_median" or s.diagnostics  # a full-vocabulary pass: only when used
        teacher_logp_BT, teacher_ent_BT = self._score(teacher_ids, teacher_mask, completion_ids.size(1), entropy)
        # The student's log-probs: TRL's own old log-probs when it computed them (vLLM, several iterations,
        # misaligned accumulation); otherwise the training forward computes them moments later with the same
        # weights, so the per-token term is composed at loss time from its detached log-probs (no extra forward).
        student_logp_BT = out.get("old_per_token_logps")
        step = self.antisd_step
        if student_logp_BT is None and (self.args.score_student_separately or step.needs_student_to_decide()):
            ids = torch.cat([out["prompt_ids"], completion_ids], dim=1)
            student_logp_BT, _ = self._score(ids, torch.cat([out["prompt_mask"], completion_mask], dim=1), completion_ids.size(1), False)

        control_logp_BT = self._control_logp(prompts, completion_ids, completion_mask, ctx_stats) if s.control else None

        B = completion_ids.size(0)
        microbatch_B = torch.arange(B) // self.args.per_device_train_batch_size  # TRL's micro-batches of this process
        has_context_B = torch.tensor(ctx_stats["has_context"], dtype=torch.bool)
        inputs = StepInputs(out["advantages"], teacher_logp_BT, student_logp_BT, mask_BT, teacher_ent_BT, microbatch_B, has_context_B, control_logp_BT)
        plan = step.decide(inputs, self.antisd_reducer)
        self._log_antisd(plan.metrics, ctx_stats, truncated)
        self.last_antisd_batch = AntiSDBatch(
            self.state.global_step, out["advantages"].detach().clone(), teacher_logp_BT, student_logp_BT, plan.term_mask_BT,
            plan.lam_B, plan.gate_on, self.sigma_ref.value, None, out["prompt_ids"], completion_ids, teacher_texts,
            teacher_ent_BT, mask_BT, self._antisd_rewards.tolist(),
        )  # fmt: skip
        if student_logp_BT is None:  # deferred: TRL shuffles and splits these with the rows; _compute_loss composes
            out["antisd_teacher_logp"], out["antisd_term_mask"], out["antisd_lam"] = teacher_logp_BT, plan.term_mask_BT, plan.lam_B
            if control_logp_BT is not None:
                out["antisd_control_logp"] = control_logp_BT
            return out["advantages"]
        result = step.compose_rows(out["advantages"], teacher_logp_BT, student_logp_BT, plan.term_mask_BT, plan.lam_B, self.antisd_reducer, control_logp_BT)
        self._log_tokens(result, completion_ids)
        self.last_antisd_batch.advantages_BT = result.advantages_BT
        return result.advantages_BT.to(self.accelerator.device)

    # --- loss-time composition (no extra student forward) -------------------------------------------------------

    def _compute_loss(self, model, inputs):
        self._antisd_pending = inputs if "antisd_teacher_logp" in inputs else None
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._antisd_pending = None

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        result = super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)
        pending = getattr(self, "_antisd_pending", None)
        if pending is not None:  # the training forward of _compute_loss: TRL reads inputs["advantages"] after it
            self._antisd_pending = None
            out = self.antisd_step.compose_rows(
                pending["advantages"], pending["antisd_teacher_logp"], result[0].detach().float(),
                pending["antisd_term_mask"], pending["antisd_lam"], self.antisd_reducer, pending.get("antisd_control_logp"),
            )  # fmt: skip
            self._log_tokens(out, pending["completion_ids"])
            pending["advantages"], pending["antisd_student_logp"] = out.advantages_BT, result[0].detach()
        return result

    def _log_tokens(self, out, completion_ids: torch.Tensor) -> None:
        for key, value in out.metrics.items():
            self._metrics["train"][key].append(value)
        every = self.args.antisd.log_categories_every
        if every and self.state.global_step % every == 0:
            self._log_categories(completion_ids, out.u_BT, out.signal_mask_BT)

    def _control_logp(self, prompts: list, completion_ids: torch.Tensor, completion_mask: torch.Tensor, ctx_stats: dict) -> torch.Tensor:
        """The control teacher's log-probs (settings.control, experimental): another group's correct solution in the
        same template. A third forward, timed in perf/antisd_control_forward_s; rows without a control get no term."""
        start = time.perf_counter()
        texts, stats = self._teacher_texts(prompts, completion_ids, completion_mask, control=True)
        ids, mask, _ = self._tokenize_teacher(texts, completion_ids, completion_mask)
        logp_BT, _ = self._score(ids, mask, completion_ids.size(1), False)
        ctx_stats["has_context"] = [a and b for a, b in zip(ctx_stats["has_context"], stats["has_context"])]
        ctx_stats["control_missing"] = stats["control_missing"]
        self.last_control_texts = texts
        self._metrics["train"]["perf/antisd_control_forward_s"].append(time.perf_counter() - start)
        return logp_BT

    def _teacher_texts(self, prompts: list, completion_ids: torch.Tensor, completion_mask: torch.Tensor, control: bool = False) -> tuple[list, dict]:
        """Each local rollout's teacher prompt (messages or text), from the globally gathered group (or the control's)."""
        tok = self.processing_class
        local_texts = [tok.decode(ids[m.bool()], skip_special_tokens=True) for ids, m in zip(completion_ids, completion_mask)]
        all_texts = gather_object(local_texts)
        rewards = self._antisd_rewards.tolist()
        group_ids = [i // self.num_generations for i in range(len(rewards))]
        offset = self.accelerator.process_index * len(prompts)
        rows = range(offset, offset + len(prompts))
        return self.teacher_context.build(rows, prompts, self._antisd_references, all_texts, rewards, group_ids, control=control)

    def _tokenize_teacher(self, teacher: list, completion_ids: torch.Tensor, completion_mask: torch.Tensor):
        """Left-padded teacher prompt ⊕ the student's completion tokens; prompts over budget are head/tail cut."""
        tok = self.processing_class
        encoded = [ctx.teacher_prompt_ids(tok, item, self.args.antisd, self.chat_template_kwargs) for item in teacher]
        rows, truncated = [ids for ids, _ in encoded], sum(int(cut) for _, cut in encoded)
        width = max(len(r) for r in rows)
        prompt_ids = torch.full((len(rows), width), tok.pad_token_id, dtype=completion_ids.dtype)
        prompt_mask = torch.zeros((len(rows), width), dtype=completion_mask.dtype)
        for i, r in enumerate(rows):
            prompt_ids[i, width - len(r) :] = torch.tensor(r, dtype=completion_ids.dtype)
            prompt_mask[i, width - len(r) :] = 1
        ids = torch.cat([prompt_ids.to(completion_ids.device), completion_ids], dim=1)
        mask = torch.cat([prompt_mask.to(completion_mask.device), completion_mask], dim=1)
        return ids, mask, truncated

    def _score(self, ids: torch.Tensor, mask: torch.Tensor, n_completion: int, entropy: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """No-grad per-token log-probs (and entropies, if asked) of the last ``n_completion`` tokens, current weights."""
        checkpointing = (
            disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs)
            if self.args.gradient_checkpointing
            else contextlib.nullcontext()
        )
        with torch.no_grad(), checkpointing:
            logp, ent, _ = self._get_per_token_logps_and_entropies(
                self.model, ids, mask, n_completion, batch_size=self.args.score_batch_size or self.args.per_device_train_batch_size, compute_entropy=entropy
            )
        return logp.float(), (ent.float() if ent is not None else None)

    def _log_antisd(self, step_metrics: dict, ctx_stats: dict, truncated: int) -> None:
        """The step's batch metrics plus the context counts, reduced over processes, into TRL's metric store."""
        ndemo, ndcut, ntrunc, nseq, nref, nmiss = self.antisd_reducer.sum(
            [float(ctx_stats["demo"]), float(ctx_stats["demo_truncated"]), float(truncated), float(ctx_stats["n"]), float(ctx_stats["reference"]), float(ctx_stats["control_missing"])]
        )
        metrics = dict(step_metrics)
        metrics |= {
            "antisd/demo_fraction": ndemo / max(nseq, 1),
            "antisd/reference_fraction": nref / max(nseq, 1),
            "antisd/demo_truncated": ndcut,
            "antisd/teacher_prompt_truncated": ntrunc,
        }
        if self.args.antisd.control:
            metrics["antisd/control_missing_fraction"] = nmiss / max(nseq, 1)
        for key, value in metrics.items():
            self._metrics["train"][key].append(value)

    def _log_categories(self, completion_ids: torch.Tensor, u_BT: torch.Tensor, mask_BT: torch.Tensor) -> None:
        """Mean u per token category (antisd.pmi lists), local to this process: the paper's Fig. 2 split, tracked."""
        from antisd.pmi import DELIBERATION, STRUCTURAL, normalise

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
            rundir.write_json_atomic(folder / STATE_FILE, self.antisd_step.state_dict())
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
        path = Path(checkpoint) / STATE_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: the checkpoint is incomplete or was not written by AntiSDTrainer")
        try:
            state = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is damaged ({e})") from None
        self.antisd_step.load_state_dict(state)

"""``AntiSDTrainer``: TRL's stable ``GRPOTrainer`` with per-token AntiSD advantages.

It overrides as little as possible:
- ``_calculate_rewards``: keeps the globally gathered rewards (needed to pick correct siblings);
- ``_generate_and_score_completions``: after TRL has generated, scored and computed A_seq, builds each rollout's
  teacher input, runs one no-grad teacher forward with the *current* weights (the paper's teacher is the policy
  itself under stop-gradient), and replaces ``advantages`` [B] by [B, T] ones from :mod:`antisd.core`. TRL's own
  ``_compute_loss`` accepts [B, T] advantages as-is, so every TRL loss type, clipping and IS correction applies.
- ``_save_checkpoint`` / ``_load_optimizer_and_scheduler``: the gate and σ_ref live in every checkpoint.

Teacher and student log-probs come from TRL's own ``_get_per_token_logps_and_entropies`` (a tiled, fused LM head
that never materialises [B, T, V] logits), so u is exactly 0 wherever the teacher input equals the student's.
All group-level statistics (siblings, gate statistic, σ_ref) are computed on globally gathered values before
TRL's per-process slice, so every process takes the same gate decision.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass
from typing import Callable

import torch
from accelerate.utils import gather_object
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing

from antisd import context as ctx
from antisd.core import (
    COMPOSERS,
    SchmittGate,
    SigmaRef,
    get_signal,
    masked_std,
    paper_signal,
    release_signal,
    sequence_ppl,
    teacher_ppl_lambda,
    token_pmi,
)
from antisd.integrations.trl.config import AntiSDConfig

STATE_FILE = "antisd_state.json"


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
    teacher_texts: list[str]


class AntiSDTrainer(GRPOTrainer):
    def __init__(self, *args, demonstration_cutter: Callable[[str], str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, AntiSDConfig):
            raise TypeError(f"AntiSDTrainer needs an AntiSDConfig, got {type(self.args).__name__}")
        tok = self.processing_class
        if getattr(tok, "chat_template", None) is None:
            raise ValueError("The tokenizer has no chat template: the teacher prompt is built with apply_chat_template")
        cfg = self.args
        self.antisd_signal_fn = get_signal(cfg.antisd_signal)
        self.antisd_compose = COMPOSERS[cfg.antisd_compose]
        warmup = cfg.antisd_gate_warmup_steps if cfg.antisd_needs_warmup else 0
        # A disabled gate still calibrates (σ_ref, τ) but never closes: down_ratio 0 is below any statistic.
        self.gate = SchmittGate(
            warmup_steps=warmup,
            down_ratio=cfg.antisd_gate_down_ratio if cfg.antisd_gate else 0.0,
            up_ratio=cfg.antisd_gate_up_ratio if cfg.antisd_gate else 0.0,
            min_threshold=cfg.antisd_gate_min_threshold if cfg.antisd_gate else None,
            lag=cfg.antisd_gate_lag,
        )
        self.sigma_ref = SigmaRef(warmup_steps=max(warmup, 1))
        self.clean_demonstration = ctx.DemonstrationCleaner(
            tokenize=lambda text: tok(text, add_special_tokens=False)["input_ids"],
            detokenize=lambda ids: tok.decode(ids, skip_special_tokens=True),
            max_tokens=cfg.antisd_max_solution_tokens,
            cut_after_answer=demonstration_cutter,
            remove_thinking=cfg.antisd_remove_thinking,
        )
        self.last_antisd_batch: AntiSDBatch | None = None
        self._antisd_references: list = []
        self._antisd_rewards: torch.Tensor | None = None

    # --- TRL hooks --------------------------------------------------------------------------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        weighted = (rewards_per_func * self.reward_weights.to(rewards_per_func.device)[None]).nansum(dim=1)
        weighted[torch.isnan(rewards_per_func).all(dim=1)] = float("nan")  # unscorable: no feedback, no demo
        self._antisd_rewards = weighted
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        if not self.model.training:
            return out
        self._antisd_references = [x.get("reference") for x in inputs]
        prompts = [x["prompt"] for x in inputs]
        out["advantages"] = self._antisd_advantages(prompts, out)
        return out

    # --- AntiSD -----------------------------------------------------------------------------------------------

    def _antisd_advantages(self, prompts: list, out: dict) -> torch.Tensor:
        cfg, device = self.args, self.accelerator.device
        completion_ids, completion_mask = out["completion_ids"], out["completion_mask"]
        mask_BT = completion_mask if "tool_mask" not in out else completion_mask * out["tool_mask"]

        teacher_texts, ctx_stats = self._teacher_texts(prompts, completion_ids, completion_mask)
        teacher_ids, teacher_mask, truncated = self._tokenize_teacher(teacher_texts, completion_ids, completion_mask)
        teacher_logp_BT, teacher_ent_BT = self._score(teacher_ids, teacher_mask, completion_ids.size(1))
        student_logp_BT = out.get("old_per_token_logps")
        if student_logp_BT is None:
            ids = torch.cat([out["prompt_ids"], completion_ids], dim=1)
            student_logp_BT, _ = self._score(ids, torch.cat([out["prompt_mask"], completion_mask], dim=1), completion_ids.size(1))

        # Non-finite log-probs (overflow, a broken kernel) are dropped from the signal and counted, never propagated.
        finite_BT = torch.isfinite(teacher_logp_BT) & torch.isfinite(student_logp_BT)
        signal_mask_BT = mask_BT.bool() & finite_BT
        u_BT = token_pmi(teacher_logp_BT, student_logp_BT, signal_mask_BT)
        teacher_ppl_B = sequence_ppl(teacher_logp_BT, signal_mask_BT)
        student_ppl_B = sequence_ppl(student_logp_BT, signal_mask_BT)

        # One gate decision per step, from a global statistic
        stat = self._gate_statistic(teacher_ent_BT, teacher_ppl_B, student_ppl_B, signal_mask_BT)
        if self.gate.warmup_steps == 0:
            gate_on = True
        else:
            was_calibrated = self.gate.calibrated
            gate_on = self.gate.step(stat)
            if not was_calibrated:
                self.sigma_ref.observe(self._global_token_std(-u_BT, signal_mask_BT))

        if cfg.antisd_shaping == "release":
            signal_BT = release_signal(
                u_BT, student_logp_BT, signal_mask_BT, self.antisd_signal_fn, sigma_ref=self.sigma_ref.value,
                k_sigma=cfg.antisd_outlier_k, log_clip=cfg.antisd_log_clip, z_clip=cfg.antisd_z_clip, len_mask=cfg.antisd_len_mask,
            )  # fmt: skip
        else:
            signal_BT = paper_signal(u_BT, student_logp_BT, signal_mask_BT, self.antisd_signal_fn)
        lam_B = self._lambda(gate_on, teacher_ppl_B)
        adv_BT = self.antisd_compose(out["advantages"], signal_BT, lam_B, signal_mask_BT)

        if cfg.antisd_log_categories_every and self.state.global_step % cfg.antisd_log_categories_every == 0:
            self._log_categories(completion_ids, u_BT, signal_mask_BT)
        self._log_antisd(u_BT, signal_BT, signal_mask_BT, lam_B, gate_on, stat, teacher_ent_BT, teacher_ppl_B, student_ppl_B, mask_BT, ctx_stats, truncated)
        self.last_antisd_batch = AntiSDBatch(
            self.state.global_step, out["advantages"].detach().clone(), teacher_logp_BT, student_logp_BT, signal_mask_BT,
            lam_B, gate_on, self.sigma_ref.value, adv_BT, out["prompt_ids"], completion_ids, teacher_texts,
        )  # fmt: skip
        return adv_BT.to(device)

    def _teacher_texts(self, prompts: list, completion_ids: torch.Tensor, completion_mask: torch.Tensor) -> tuple[list, dict]:
        """Each local rollout's teacher prompt (messages or text), from the globally gathered group."""
        cfg, tok = self.args, self.processing_class
        local_texts = [tok.decode(ids[m.bool()], skip_special_tokens=True) for ids, m in zip(completion_ids, completion_mask)]
        all_texts = gather_object(local_texts)
        rewards = self._antisd_rewards.tolist()
        if len(rewards) != len(all_texts):
            raise RuntimeError(f"{len(rewards)} gathered rewards for {len(all_texts)} gathered completions")
        picks = ctx.select_demonstrations([-math.inf if math.isnan(r) else r for r in rewards], self.num_generations, cfg.antisd_success_threshold)
        offset = self.accelerator.process_index * len(prompts)
        teacher, n_demo, n_ref, n_demo_cut = [], 0, 0, 0
        for i, prompt in enumerate(prompts):
            g = offset + i
            demo = None
            if picks[g] is not None:
                demo, cut = self.clean_demonstration(all_texts[picks[g]])
                n_demo, n_demo_cut = n_demo + 1, n_demo_cut + int(cut)
            elif cfg.antisd_solution_source == "group_then_reference" and self._antisd_references[i]:
                demo, cut = self.clean_demonstration(self._antisd_references[i])
                n_ref, n_demo_cut = n_ref + 1, n_demo_cut + int(cut)
            feedback = None
            if cfg.antisd_include_feedback and not math.isnan(rewards[g]):
                feedback = cfg.antisd_feedback_correct if rewards[g] >= cfg.antisd_success_threshold else cfg.antisd_feedback_incorrect
            if isinstance(prompt, str):
                teacher.append(ctx.teacher_user_text(prompt, demo, feedback, ctx.ContextTemplates()))
            else:
                user = ctx.teacher_user_text(ctx.last_user_text(prompt), demo, feedback, ctx.ContextTemplates())
                teacher.append(ctx.teacher_messages(prompt, user))
        return teacher, {"demo": n_demo, "reference": n_ref, "demo_truncated": n_demo_cut, "n": len(prompts)}

    def _tokenize_teacher(self, teacher: list, completion_ids: torch.Tensor, completion_mask: torch.Tensor):
        """Left-padded teacher prompt ⊕ the student's completion tokens; prompts over budget are head/tail cut."""
        tok, budget = self.processing_class, self.args.antisd_max_reprompt_len
        sep = tok("\n...\n", add_special_tokens=False)["input_ids"]
        kwargs = self.chat_template_kwargs or {}
        rows, truncated = [], 0
        for item in teacher:
            if isinstance(item, str):
                ids = tok(item, add_special_tokens=False)["input_ids"]
            else:
                ids = list(tok.apply_chat_template(item, add_generation_prompt=True, tokenize=True, return_dict=False, **kwargs))
            truncated += int(len(ids) > budget)
            rows.append(ctx.head_tail_truncate(ids, budget, sep))
        width = max(len(r) for r in rows)
        prompt_ids = torch.full((len(rows), width), tok.pad_token_id, dtype=completion_ids.dtype)
        prompt_mask = torch.zeros((len(rows), width), dtype=completion_mask.dtype)
        for i, r in enumerate(rows):
            prompt_ids[i, width - len(r) :] = torch.tensor(r, dtype=completion_ids.dtype)
            prompt_mask[i, width - len(r) :] = 1
        ids = torch.cat([prompt_ids.to(completion_ids.device), completion_ids], dim=1)
        mask = torch.cat([prompt_mask.to(completion_mask.device), completion_mask], dim=1)
        return ids, mask, truncated

    def _score(self, ids: torch.Tensor, mask: torch.Tensor, n_completion: int) -> tuple[torch.Tensor, torch.Tensor]:
        """No-grad per-token log-probs and entropies of the last ``n_completion`` tokens, current weights."""
        checkpointing = (
            disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs)
            if self.args.gradient_checkpointing
            else contextlib.nullcontext()
        )
        with torch.no_grad(), checkpointing:
            logp, ent, _ = self._get_per_token_logps_and_entropies(
                self.model, ids, mask, n_completion, batch_size=self.args.per_device_train_batch_size, compute_entropy=True
            )
        return logp.float(), ent.float()

    def _global_sum(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
        return self.accelerator.reduce(t, reduction="sum").tolist()

    def _global_token_std(self, x_BT: torch.Tensor, mask_BT: torch.Tensor) -> float:
        m = mask_BT.bool()
        s, ss, n = self._global_sum([x_BT[m].double().sum().item(), x_BT[m].double().square().sum().item(), m.sum().item()])
        return math.sqrt(max(ss / n - (s / n) ** 2, 0.0)) if n else float("nan")

    def _gate_statistic(self, teacher_ent_BT, teacher_ppl_B, student_ppl_B, mask_BT) -> float:
        name = self.args.antisd_gate_signal
        if name == "teacher_entropy_median":
            padded = self.accelerator.pad_across_processes(torch.where(mask_BT, teacher_ent_BT, torch.nan), dim=1, pad_index=float("nan"))
            values = self.accelerator.gather(padded).flatten()
            values = values[~torch.isnan(values)]
            return values.median().item() if values.numel() else float("nan")
        ppl_B = teacher_ppl_B if name == "teacher_ppl" else student_ppl_B
        keep_B = (ppl_B <= self.args.antisd_ppl_spike) & mask_BT.any(dim=1)
        total, count = self._global_sum([ppl_B[keep_B].double().sum().item(), keep_B.sum().item()])
        return total / count if count else float("nan")

    def _tau(self) -> float:
        cfg, warm = self.args, self.gate.warm
        if cfg.antisd_lambda_tau_offset is not None:
            tau = warm - cfg.antisd_lambda_tau_offset
        else:
            tau = cfg.antisd_gate_down_ratio * warm
        return max(tau, cfg.antisd_gate_min_threshold) if cfg.antisd_gate_min_threshold is not None else tau

    def _lambda(self, gate_on: bool, teacher_ppl_B: torch.Tensor) -> torch.Tensor:
        cfg = self.args
        if not gate_on:
            return torch.zeros_like(teacher_ppl_B)
        if cfg.antisd_lambda_mode == "constant":
            return torch.full_like(teacher_ppl_B, cfg.antisd_lambda_max)
        return teacher_ppl_lambda(
            teacher_ppl_B, self._tau(), coef=cfg.antisd_lambda_coef, alpha=cfg.antisd_lambda_alpha,
            lam_min=cfg.antisd_lambda_min, lam_max=cfg.antisd_lambda_max, ppl_spike=cfg.antisd_ppl_spike,
        )  # fmt: skip

    def _log_antisd(self, u_BT, signal_BT, mask_BT, lam_B, gate_on, stat, teacher_ent_BT, teacher_ppl_B, student_ppl_B, resp_mask_BT, ctx_stats, truncated):
        m = mask_BT.bool()
        u, sig = u_BT[m].double(), signal_BT[m].double()
        neg, pos = u < 0, u > 0
        sums = self._global_sum([
            m.sum().item(), u.sum().item(), u.square().sum().item(), neg.sum().item(), (u < -5).sum().item(),
            sig[neg].sum().item(), pos.sum().item(), sig[pos].sum().item(), lam_B.sum().item(), lam_B.numel(),
            teacher_ent_BT[m].double().sum().item(), teacher_ppl_B.double().sum().item(), student_ppl_B.double().sum().item(),
            float(ctx_stats["demo"]), float(ctx_stats["demo_truncated"]), float(truncated), float(ctx_stats["n"]), float(ctx_stats["reference"]),
            float((resp_mask_BT.bool() & ~m).sum().item()), float((lam_B > 0).sum().item()),
        ])  # fmt: skip
        (n, su, suu, nneg, ntail, sneg, npos, spos, slam, nlam, sent, stppl, ssppl, ndemo, ndcut, ntrunc, nseq, nref, nonfin, nlam_pos) = sums
        local_min = u.min() if u.numel() else torch.tensor(math.inf, dtype=torch.float64, device=u.device)
        u_min = self.accelerator.gather(local_min.reshape(1)).min().item()
        metrics = {
            "antisd/u_mean": su / max(n, 1),
            "antisd/u_std": math.sqrt(max(suu / max(n, 1) - (su / max(n, 1)) ** 2, 0.0)),
            "antisd/frac_u_neg": nneg / max(n, 1),
            "antisd/frac_u_below_-5": ntail / max(n, 1),
            "antisd/u_min": u_min if math.isfinite(u_min) else float("nan"),
            "antisd/signal_mean_u_neg": sneg / max(nneg, 1),
            "antisd/signal_mean_u_pos": spos / max(npos, 1),
            "antisd/lambda_mean": slam / max(nlam, 1),
            "antisd/frac_seq_lambda_pos": nlam_pos / max(nlam, 1),
            "antisd/gate_on": float(gate_on),
            "antisd/gate_calibrated": float(self.gate.calibrated or self.gate.warmup_steps == 0),
            "antisd/gate_statistic": stat,
            "antisd/teacher_entropy_mean": sent / max(n, 1),
            "antisd/teacher_ppl_mean": stppl / max(nseq, 1),
            "antisd/student_ppl_mean": ssppl / max(nseq, 1),
            "antisd/demo_fraction": ndemo / max(nseq, 1),
            "antisd/reference_fraction": nref / max(nseq, 1),
            "antisd/demo_truncated": ndcut,
            "antisd/teacher_prompt_truncated": ntrunc,
            "antisd/nonfinite_tokens": nonfin,
        }
        if self.sigma_ref.value is not None:
            metrics["antisd/sigma_ref"] = self.sigma_ref.value
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
            folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
            with open(os.path.join(folder, STATE_FILE), "w") as f:
                json.dump({"gate": self.gate.state_dict(), "sigma_ref": self.sigma_ref.state_dict()}, f, indent=2)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, STATE_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} is missing: this checkpoint was not written by AntiSDTrainer")
        with open(path) as f:
            state = json.load(f)
        self.gate.load_state_dict(state["gate"])
        self.sigma_ref.load_state_dict(state["sigma_ref"])
        if self.args.antisd_recalibrate_on_resume:
            self.gate.recalibrate()

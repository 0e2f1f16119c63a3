"""``AntiSDStep``: the method's step for one generation batch, the same for every framework.

A framework (the TRL trainer, the verl plug-in) gathers the inputs of one generation batch: the rows this process
holds, with their sequence advantages, teacher and student log-probs of the sampled tokens, teacher entropies
(only for the paper's entropy gate) and response masks; plus a :class:`Reducer` for the few cross-process sums.
The step returns the [B, T] advantages and the ``antisd/*`` metrics, and owns everything that persists across
steps: the gate, σ_ref and the warm perplexity that τ is computed from (``state_dict`` / ``load_state_dict``).

Every decision that must be the same on all processes (gate, σ_ref, τ) is taken from globally reduced values,
so processes holding different rows take the same decision. Pure tensor code plus :mod:`antisd.core`; no
framework imports.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Sequence

import torch

from antisd.core import COMPOSERS, SchmittGate, SigmaRef, get_signal, sequence_ppl, term_dose_sums, token_pmi
from antisd.method import modes
from antisd.method.reducer import LOCAL, LocalReducer, Reducer, global_token_std  # noqa: F401 (re-exported)
from antisd.method.settings import AntiSDSettings


@dataclass(kw_only=True)
class StepInputs:
    """One process's rows of a generation batch. B rows, T response positions (right-padded)."""

    seq_adv_B: torch.Tensor
    """[B] outcome advantages A_seq (group-normalised by the framework)."""
    teacher_logp_BT: torch.Tensor
    """[B, T] log π_T of the sampled tokens under the privileged context."""
    student_logp_BT: torch.Tensor
    """[B, T] log π_S of the same tokens under the plain prompt."""
    response_mask_BT: torch.Tensor
    """[B, T] 1 on response tokens that take part in the loss."""
    teacher_entropy_BT: torch.Tensor | None = None
    """[B, T] full-vocabulary teacher entropy; needed only by the entropy gate."""
    microbatch_B: torch.Tensor | None = None
    """[B] micro-batch index of each row; used only by warmup_statistic='release_microbatch' (None: one micro-batch)."""
    has_context_B: torch.Tensor | None = None
    """[B] False where the teacher saw no privileged context (no demonstration, no feedback): its input equals the
    student's, u is padding noise, and the row gets no per-token term (None: every row has context)."""
    control_logp_BT: torch.Tensor | None = None
    """[B, T] log π_C of the sampled tokens under the control context (settings.control): the signal's u becomes
    u − u_control = log π_T − log π_C. None otherwise."""


@dataclass(kw_only=True)
class StepPlan:
    """The batch-level decisions of one step (:meth:`AntiSDStep.decide`)."""

    gate_on: bool
    statistic: float
    lam_B: torch.Tensor
    """[B] λ_i of each row (0 everywhere with the gate shut)."""
    term_mask_BT: torch.Tensor
    """[B, T] tokens the per-token term may act on (response, finite teacher log-prob, privileged context)."""
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(kw_only=True)
class StepOutput:
    advantages_BT: torch.Tensor
    """[B, T] advantages for the policy loss (A_seq at masked positions)."""
    u_BT: torch.Tensor
    signal_BT: torch.Tensor
    signal_mask_BT: torch.Tensor
    """[B, T] response tokens with finite teacher and student log-probs (the tokens the term acts on)."""
    lam_B: torch.Tensor
    gate_on: bool
    statistic: float
    metrics: dict[str, float] = field(default_factory=dict)


class AntiSDStep:
    """The AntiSD advantage of one generation batch, with the state that persists across batches."""

    def __init__(self, settings: AntiSDSettings):
        self.settings = s = settings
        self.signal_fn = get_signal(s.signal)
        self.compose_fn = COMPOSERS[s.compose]
        self.shaping_fn = modes.SHAPINGS[s.shaping]
        self.gate_statistic_fn = modes.GATE_STATISTICS[s.gate_signal]
        self.lambda_fn = modes.LAMBDA_MODES[s.lambda_mode]
        warmup = s.gate_warmup_steps if s.needs_warmup else 0
        # A disabled gate still calibrates (σ_ref, τ) but never closes: down_ratio 0 is below any statistic.
        self.gate = SchmittGate(
            warmup_steps=warmup,
            down_ratio=s.gate_down_ratio if s.gate else 0.0,
            up_ratio=s.gate_up_ratio if s.gate else 0.0,
            min_threshold=s.gate_min_threshold if s.gate else None,
            lag=s.gate_lag,
            rearm_from_floor=s.gate_rearm_from_floor and s.gate,
            pool_steps=s.gate_pool_steps,
        )
        self.sigma_ref = SigmaRef(warmup_steps=max(warmup, 1))
        # τ is a teacher-perplexity threshold, so its warm value m is calibrated on teacher PPL whatever the gate
        # measures (issue #10 item 8); with a teacher-PPL gate both are the same number.
        self.ppl_warm_values: list[float] = []
        self.microbatch_warm_values: list[float] = []
        self.ppl_warm: float | None = None

    # --- the step -----------------------------------------------------------------------------------------------

    def __call__(self, x: StepInputs, reducer: Reducer = LOCAL) -> StepOutput:
        """The whole step when the student's log-probs are at hand: :meth:`decide`, then :meth:`compose_rows` on
        every row (what both adapters do in two calls when the student's log-probs come later)."""
        plan = self.decide(x, reducer)
        out = self.compose_rows(
            seq_adv_B=x.seq_adv_B, teacher_logp_BT=x.teacher_logp_BT, student_logp_BT=x.student_logp_BT,
            term_mask_BT=plan.term_mask_BT, lam_B=plan.lam_B, control_logp_BT=x.control_logp_BT, reducer=reducer,
        )  # fmt: skip
        out.gate_on, out.statistic, out.metrics = plan.gate_on, plan.statistic, plan.metrics | out.metrics
        return out

    def needs_student_to_decide(self) -> bool:
        """Whether :meth:`decide` needs the student's log-probs this step: for a student-PPL gate, and to calibrate
        σ_ref during warm-up when the release shaping will use it. Otherwise they may come later (at loss time)."""
        s = self.settings
        warming = self.gate.warmup_steps > 0 and not self.gate.calibrated
        return s.gate_signal == "student_ppl" or (warming and s.shaping == "release")

    def decide(self, x: StepInputs, reducer: Reducer = LOCAL) -> "StepPlan":
        """Batch-level decisions from teacher-side statistics: gate, warm-up calibration, τ, λ_i, the term mask.

        ``x.student_logp_BT`` may be None unless :meth:`needs_student_to_decide`."""
        s = self.settings
        teacher_logp_BT, student_logp_BT, mask_BT = x.teacher_logp_BT, x.student_logp_BT, x.response_mask_BT
        if student_logp_BT is None and self.needs_student_to_decide():
            raise ValueError("this step needs the student's log-probs to decide (student-PPL gate or σ_ref warm-up)")
        # Non-finite log-probs (overflow, a broken kernel) are dropped from the signal and counted, never propagated.
        finite_BT = torch.isfinite(teacher_logp_BT)
        if student_logp_BT is not None:
            finite_BT = finite_BT & torch.isfinite(student_logp_BT)
        if s.control:
            if x.control_logp_BT is None:
                raise ValueError("settings.control needs the control teacher's log-probs (control_logp_BT)")
            finite_BT = finite_BT & torch.isfinite(x.control_logp_BT)
        signal_mask_BT = mask_BT.bool() & finite_BT
        teacher_ppl_B = sequence_ppl(teacher_logp_BT, signal_mask_BT)
        student_ppl_B = sequence_ppl(student_logp_BT, signal_mask_BT) if student_logp_BT is not None else None

        # One gate decision per step, from a global statistic
        stat = self.gate_statistic(x.teacher_entropy_BT, teacher_ppl_B, student_ppl_B, signal_mask_BT, reducer)
        if self.gate.warmup_steps == 0:
            gate_on = True
        else:
            was_calibrated = self.gate.calibrated
            gate_on = self.gate.step(stat)
            if not was_calibrated:
                if student_logp_BT is not None:
                    u_BT = self.signal_u(teacher_logp_BT, student_logp_BT, signal_mask_BT, x.control_logp_BT)
                    self.sigma_ref.observe(global_token_std(-u_BT, signal_mask_BT, reducer))
                self._observe_warm_ppl(teacher_ppl_B, signal_mask_BT, x.microbatch_B, reducer)
                if self.gate.calibrated:
                    self._calibrate_ppl(reducer)

        # Rows whose teacher saw no privileged context carry no PMI, only padding noise (item 9): no term there.
        term_mask_BT = signal_mask_BT
        if x.has_context_B is not None and s.signal != "no_teacher":
            term_mask_BT = signal_mask_BT & x.has_context_B.bool().to(signal_mask_BT.device)[:, None]
        lam_B = self.lambdas(gate_on, teacher_ppl_B)
        metrics = self._batch_metrics(x, gate_on, stat, lam_B, teacher_ppl_B, signal_mask_BT, reducer)
        return StepPlan(gate_on=gate_on, statistic=stat, lam_B=lam_B, term_mask_BT=term_mask_BT, metrics=metrics)

    def signal_u(self, teacher_logp_BT, student_logp_BT, mask_BT, control_logp_BT=None) -> torch.Tensor:
        """[B, T] the u the signal acts on: log π_T − log π_S, or with a control u − u_control = log π_T − log π_C."""
        u_BT = token_pmi(teacher_logp_BT, student_logp_BT, mask_BT)
        if self.settings.control:
            u_BT = u_BT - token_pmi(control_logp_BT, student_logp_BT, mask_BT)
        return u_BT

    def compose_rows(
        self, *, seq_adv_B, teacher_logp_BT, student_logp_BT, term_mask_BT, lam_B, control_logp_BT=None, reducer: Reducer = LOCAL
    ) -> StepOutput:  # fmt: skip
        """Per-row part: u, the (shaped) signal and the composed [B, T] advantages of any subset of the batch's rows,
        with the plan's λ_i and term mask for those rows. Row-local except the token metrics (reduced)."""
        mask_BT = term_mask_BT.bool() & torch.isfinite(student_logp_BT)
        u_BT = self.signal_u(teacher_logp_BT, student_logp_BT, mask_BT, control_logp_BT)
        signal_BT = self.shaping_fn(
            u_BT=u_BT, student_logp_BT=student_logp_BT, mask_BT=mask_BT, signal_fn=self.signal_fn, settings=self.settings, sigma_ref=self.sigma_ref.value
        )  # fmt: skip
        adv_BT = self.compose_fn(seq_adv_B, signal_BT, lam_B, mask_BT)
        out = StepOutput(advantages_BT=adv_BT, u_BT=u_BT, signal_BT=signal_BT, signal_mask_BT=mask_BT, lam_B=lam_B, gate_on=False, statistic=math.nan)
        out.metrics = self._token_metrics(out, seq_adv_B, student_logp_BT, term_mask_BT, reducer)
        return out

    def gate_statistic(self, teacher_ent_BT, teacher_ppl_B, student_ppl_B, mask_BT, reducer: Reducer) -> float:
        """The gate's global statistic for this batch (module docstring of :mod:`antisd.core.gate`)."""
        return self.gate_statistic_fn(
            teacher_entropy_BT=teacher_ent_BT, teacher_ppl_B=teacher_ppl_B, student_ppl_B=student_ppl_B, mask_BT=mask_BT,
            settings=self.settings, reducer=reducer,
        )  # fmt: skip

    def _observe_warm_ppl(self, teacher_ppl_B, mask_BT, microbatch_B, reducer: Reducer) -> None:
        """Record this warm-up step's teacher-PPL statistic (and, for the release statistic, micro-batch means)."""
        self.ppl_warm_values.append(modes.ppl_statistic(teacher_ppl_B, mask_BT, self.settings.ppl_spike, reducer))
        if self.settings.warmup_statistic != "release_microbatch":
            return
        rows_B = mask_BT.any(dim=1)
        groups_B = microbatch_B if microbatch_B is not None else torch.zeros_like(teacher_ppl_B, dtype=torch.long)
        for mb in groups_B[rows_B].unique().tolist():
            mean = teacher_ppl_B[rows_B & (groups_B == mb)].double().mean().item()
            if mean < self.settings.ppl_spike:  # the release drops a micro-batch whose mean PPL is ≥ 3
                self.microbatch_warm_values.append(mean)

    def _calibrate_ppl(self, reducer: Reducer) -> None:
        """The warm teacher PPL m behind τ: median of the per-step statistics, or the release's statistic (the
        upper median of this process's micro-batch means, averaged over processes), which the PPL gate then uses."""
        if self.settings.warmup_statistic == "release_microbatch":
            local = upper_median(self.microbatch_warm_values) if self.microbatch_warm_values else math.nan
            total, count = reducer.sum([local if math.isfinite(local) else 0.0, float(math.isfinite(local))])
            if count:
                self.ppl_warm = total / count
                if self.settings.gate_signal == "teacher_ppl":
                    self.gate.set_warm(self.ppl_warm)
                return
            # Every micro-batch mean was a spike: the release statistic is undefined; fall back to the per-step one
            # below (the gate keeps its own warm value) rather than a NaN threshold that would poison λ_i.
        finite = [v for v in self.ppl_warm_values if math.isfinite(v)]
        self.ppl_warm = statistics.median(finite) if finite else math.nan

    def tau(self) -> float:
        """The release λ_i threshold τ (:func:`antisd.method.modes.tau`) from the warm teacher PPL."""
        return modes.tau(self.settings, self.ppl_warm)

    def lambdas(self, gate_on: bool, teacher_ppl_B: torch.Tensor) -> torch.Tensor:
        """[B] λ_i: 0 with the gate shut, else the λ mode's (constant λ_max, or the release's per-sequence λ_i)."""
        if not gate_on:
            return torch.zeros_like(teacher_ppl_B)
        return self.lambda_fn(teacher_ppl_B=teacher_ppl_B, settings=self.settings, warm_ppl=self.ppl_warm)

    # --- metrics ------------------------------------------------------------------------------------------------

    def _batch_metrics(self, x: StepInputs, gate_on, stat, lam_B, teacher_ppl_B, mask_BT, reducer: Reducer) -> dict[str, float]:
        m = mask_BT
        ent_BT = x.teacher_entropy_BT if x.teacher_entropy_BT is not None else torch.full(m.shape, math.nan)
        sums = reducer.sum([
            m.sum().item(), lam_B.sum().item(), lam_B.numel(), ent_BT[m].double().sum().item(), teacher_ppl_B.double().sum().item(),
            float((lam_B > 0).sum().item()), float((~x.has_context_B.bool()).sum().item()) if x.has_context_B is not None else 0.0,
            float((x.response_mask_BT.bool() & ~torch.isfinite(x.teacher_logp_BT)).sum().item()),
        ])  # fmt: skip
        n, slam, nseq, sent, stppl, nlam_pos, nnoctx, nonfin_t = sums
        metrics = {
            "antisd/lambda_mean": slam / max(nseq, 1),
            "antisd/frac_seq_lambda_pos": nlam_pos / max(nseq, 1),
            "antisd/gate_on": float(gate_on),
            "antisd/gate_calibrated": float(self.gate.calibrated or self.gate.warmup_steps == 0),
            "antisd/gate_statistic": stat,
            "antisd/teacher_entropy_mean": sent / max(n, 1),
            "antisd/teacher_ppl_mean": stppl / max(nseq, 1),
            "antisd/no_context_fraction": nnoctx / max(nseq, 1),
            "antisd/nonfinite_teacher_tokens": nonfin_t,
        }
        if self.sigma_ref.value is not None:
            metrics["antisd/sigma_ref"] = self.sigma_ref.value
        if self.ppl_warm is not None:
            metrics["antisd/warm_teacher_ppl"] = self.ppl_warm
        return metrics

    def _token_metrics(self, out: StepOutput, seq_adv_B, student_logp_BT, term_mask_BT, reducer: Reducer) -> dict[str, float]:
        m = out.signal_mask_BT
        u, sig = out.u_BT[m].double(), out.signal_BT[m].double()
        neg, pos = u < 0, u > 0
        student_ppl_B = sequence_ppl(student_logp_BT, m)
        sums = reducer.sum([
            m.sum().item(), u.sum().item(), u.square().sum().item(), neg.sum().item(), (u < -5).sum().item(),
            sig[neg].sum().item(), pos.sum().item(), sig[pos].sum().item(), student_ppl_B.double().sum().item(), float(m.shape[0]),
            float((term_mask_BT.bool() & ~torch.isfinite(student_logp_BT)).sum().item()), (u < -1).sum().item(),
            *term_dose_sums(seq_adv_B, out.advantages_BT, m),
        ])  # fmt: skip
        n, su, suu, nneg, ntail, sneg, npos, spos, ssppl, nseq, nonfin_s, nbelow1, sterm, sseq, nexceed, _ = sums
        local_min = u.min() if u.numel() else torch.tensor(math.inf, dtype=torch.float64, device=u.device)
        u_min = reducer.gather(local_min.reshape(1)).min().item()
        return {
            "antisd/u_mean": su / max(n, 1),
            "antisd/u_std": math.sqrt(max(suu / max(n, 1) - (su / max(n, 1)) ** 2, 0.0)),
            "antisd/frac_u_neg": nneg / max(n, 1),
            "antisd/frac_u_below_-1": nbelow1 / max(n, 1),
            "antisd/frac_u_below_-5": ntail / max(n, 1),
            "antisd/u_min": u_min if math.isfinite(u_min) else float("nan"),
            "antisd/signal_mean_u_neg": sneg / max(nneg, 1),
            "antisd/signal_mean_u_pos": spos / max(npos, 1),
            "antisd/student_ppl_mean": ssppl / max(nseq, 1),
            "antisd/nonfinite_student_tokens": nonfin_s,
            # The dose meter (issue #23): the term's size next to the GRPO signal on the same tokens (Eq. 2's λ_i·δ
            # against A_i); NaN when no token carries a sequence advantage (every group uniform).
            "antisd/term_ratio": sterm / sseq if sseq > 0 else float("nan"),
            "antisd/term_abs_mean": sterm / max(n, 1),
            "antisd/seq_adv_abs_mean": sseq / max(n, 1),
            "antisd/term_exceeds_frac": nexceed / max(n, 1),
        }

    # --- state --------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        ppl = {"warm_values": list(self.ppl_warm_values), "microbatch_values": list(self.microbatch_warm_values), "warm": self.ppl_warm}
        return {"gate": self.gate.state_dict(), "sigma_ref": self.sigma_ref.state_dict(), "ppl": ppl}

    def load_state_dict(self, state: dict) -> None:
        # Only the gate's state comes from the checkpoint; its hyper-parameters (ratios, floor, lag, warm-up length)
        # stay those of the settings, so a change the run asked for (with recalibration) is applied, not dropped.
        kept = ("steps", "warm_values", "warm", "active", "transitions", "skipped", "recent")
        self.gate.load_state_dict({k: v for k, v in state["gate"].items() if k in kept})
        self.sigma_ref.load_state_dict(state["sigma_ref"])
        ppl = state.get("ppl") or {"warm_values": [], "microbatch_values": [], "warm": None}
        self.ppl_warm_values, self.microbatch_warm_values = list(ppl["warm_values"]), list(ppl["microbatch_values"])
        self.ppl_warm = ppl["warm"]
        if self.settings.recalibrate_on_resume:
            self.gate.recalibrate()
            self.ppl_warm_values, self.microbatch_warm_values, self.ppl_warm = [], [], None



def upper_median(values: Sequence[float]) -> float:
    """The upper median (the released code's choice for an even count), unlike ``statistics.median``."""
    return statistics.median_high(values)

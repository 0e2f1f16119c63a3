"""``AntiSDConfig``: TRL's ``GRPOConfig`` plus the AntiSD fields, and nothing else.

Defaults are the paper's AntiSD (preset ``antisd``); :mod:`antisd.presets` holds the other variants.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

from antisd.core.signals import SIGNALS

SHAPINGS = ("paper", "release")
COMPOSES = ("additive", "multiplicative")
LAMBDA_MODES = ("constant", "teacher_ppl")
GATE_SIGNALS = ("teacher_entropy_median", "teacher_ppl", "student_ppl")


@dataclass
class AntiSDConfig(GRPOConfig):
    antisd_signal: str = field(default="antisd", metadata={"help": f"Per-token signal δ(u): one of {sorted(SIGNALS)}."})
    antisd_shaping: str = field(default="paper", metadata={"help": "'paper': raw δ with scalar λ; 'release': u-clip, clamp, per-sequence z-score, clip, length mask."})
    antisd_compose: str = field(default="additive", metadata={"help": "'additive' A_seq + λδ (paper) or 'multiplicative' A_seq(1 + λδ) (ablation)."})
    antisd_lambda_max: float = field(default=0.5, metadata={"help": "λ_max; 0 gives plain GRPO advantages exactly."})
    antisd_lambda_mode: str = field(default="constant", metadata={"help": "'constant': λ = g·λ_max (paper); 'teacher_ppl': per-sequence λ_i from teacher perplexity (release)."})
    antisd_lambda_coef: float = field(default=0.1, metadata={"help": "Release λ_i = clamp(coef·alpha·ln(clamp(PPL_i/τ, 0.5, 3)), λ_min, λ_max): coef."})
    antisd_lambda_alpha: float = field(default=2.0, metadata={"help": "Release λ_i: alpha."})
    antisd_lambda_min: float = field(default=0.0, metadata={"help": "Release λ_i: λ_min (KKT floor)."})
    antisd_lambda_tau_offset: float | None = field(default=None, metadata={"help": "Release λ_i threshold τ: None uses the gate's τ_down; a number uses (warm value − offset) (sd.sh)."})
    antisd_ppl_spike: float = field(default=3.0, metadata={"help": "Sequences with teacher PPL above this get λ_i = 0 and are left out of the PPL gate signal."})
    antisd_gate: bool = field(default=True, metadata={"help": "Use the Schmitt-trigger gate; off means the term is always on after any warm-up."})
    antisd_gate_signal: str = field(default="teacher_entropy_median", metadata={"help": f"Gate statistic: one of {GATE_SIGNALS}."})
    antisd_gate_warmup_steps: int = field(default=5, metadata={"help": "Warm-up steps at λ = 0 that calibrate the gate (and σ_ref, τ)."})
    antisd_gate_down_ratio: float = field(default=0.93, metadata={"help": "Close when the statistic falls below down_ratio × warm value."})
    antisd_gate_up_ratio: float = field(default=1.0, metadata={"help": "Reopen when it reaches up_ratio × warm value (paper 1.00, release 1.07)."})
    antisd_gate_min_threshold: float | None = field(default=None, metadata={"help": "Floor of the closing threshold (release: 1.01)."})
    antisd_gate_lag: int = field(default=0, metadata={"help": "0: decide on this step's statistic (paper); 1: on the previous step's (release)."})
    antisd_outlier_k: float = field(default=2.0, metadata={"help": "Release: zero tokens with |u| > k·σ_ref."})
    antisd_log_clip: float = field(default=5.0, metadata={"help": "Release: clamp u to ±this after outlier zeroing."})
    antisd_z_clip: float = field(default=5.0, metadata={"help": "Release: clip the per-sequence z-score to ±this."})
    antisd_len_mask: int | None = field(default=12000, metadata={"help": "Release: sequences with at least this many response tokens get no AntiSD term (32768 for thinking models)."})
    antisd_recalibrate_on_resume: bool = field(default=False, metadata={"help": "Warm up the gate again after resuming (the released code always does; we restore the saved gate unless asked)."})
    antisd_solution_source: str = field(default="group_only", metadata={"help": "'group_only' (released code: demonstrations only from correct siblings) or 'group_then_reference' (fall back to the dataset's 'reference' column, the paper's 'else from the dataset')."})
    antisd_success_threshold: float = field(default=1.0, metadata={"help": "A rollout with reward ≥ this is a correct sibling usable as demonstration."})
    antisd_max_solution_tokens: int = field(default=3072, metadata={"help": "Demonstrations longer than this are cut to 25% head + 75% tail."})
    antisd_max_reprompt_len: int = field(default=4096, metadata={"help": "Teacher prompts longer than this are head/tail truncated (counted in antisd/teacher_prompt_truncated)."})
    antisd_remove_thinking: bool = field(default=False, metadata={"help": "Strip <think>…</think> from demonstrations (thinking models)."})
    antisd_include_feedback: bool = field(default=True, metadata={"help": "Add the 'Previous assessment' line about the rollout's own correctness."})
    antisd_feedback_correct: str = field(default="Your answer is correct.", metadata={"help": "Feedback for a rollout with reward ≥ success threshold."})
    antisd_log_categories_every: int = field(default=0, metadata={"help": "Every N steps log the mean u of deliberation and structural tokens (antisd/cat/*); 0 disables."})
    antisd_feedback_incorrect: str = field(default="Your answer is incorrect.", metadata={"help": "Feedback for any other scored rollout."})

    def __post_init__(self):
        super().__post_init__()
        checks = {
            "antisd_signal": (self.antisd_signal, sorted(SIGNALS)),
            "antisd_shaping": (self.antisd_shaping, SHAPINGS),
            "antisd_compose": (self.antisd_compose, COMPOSES),
            "antisd_lambda_mode": (self.antisd_lambda_mode, LAMBDA_MODES),
            "antisd_gate_signal": (self.antisd_gate_signal, GATE_SIGNALS),
            "antisd_solution_source": (self.antisd_solution_source, ("group_only", "group_then_reference")),
        }
        for name, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {list(allowed)}")
        if self.antisd_lambda_max < 0:
            raise ValueError(f"antisd_lambda_max must be ≥ 0, got {self.antisd_lambda_max}")
        if self.antisd_lambda_mode == "teacher_ppl" and self.antisd_gate_warmup_steps < 1:
            raise ValueError("antisd_lambda_mode='teacher_ppl' calibrates τ over warm-up: antisd_gate_warmup_steps must be ≥ 1")
        if self.antisd_gate_lag not in (0, 1):
            raise ValueError(f"antisd_gate_lag must be 0 or 1, got {self.antisd_gate_lag}")

    @property
    def antisd_needs_warmup(self) -> bool:
        """Warm-up (λ = 0) is needed when something is calibrated on it: the gate, σ_ref or the PPL threshold τ."""
        calibrated = self.antisd_gate or self.antisd_shaping == "release" or self.antisd_lambda_mode == "teacher_ppl"
        return calibrated and self.antisd_gate_warmup_steps > 0

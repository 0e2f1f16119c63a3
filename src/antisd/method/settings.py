"""``AntiSDSettings``: the method's settings, one frozen object shared by every framework and command.

No framework imports (stdlib only). The TRL config (``AntiSDConfig.antisd``), ``antisd train``/``compare`` and
the verl plug-in all carry this one object; the command line and YAML expose each field with an ``antisd_``
prefix (``--antisd_lambda_max 0.3``). Presets (:data:`PRESETS`) are instances of it; ``preset(name).replace(...)``
derives a variant. Every instance is validated once, when it is made: impossible combinations raise here, with
the field names, instead of meaning something silently different inside the trainer.

Defaults are the paper's AntiSD (preset ``antisd``); docs/variants.md lists every paper/release difference.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass

SIGNAL_NAMES = ("antisd", "sd", "sd_jsd", "revkl_ascent", "no_teacher")
# Names of the step's registered modes (antisd.method.modes; register() there appends to these lists)
SHAPINGS = ["paper", "release"]
COMPOSES = ("additive", "multiplicative")
LAMBDA_MODES = ["constant", "teacher_ppl"]
GATE_SIGNALS = ["teacher_entropy_median", "teacher_ppl", "student_ppl"]
WARMUP_STATISTICS = ("step_mean", "release_microbatch")
DEMONSTRATION_SOURCES = ("group_only", "group_then_reference", "reference_only")
TEACHERS = ("live", "ema", "frozen", "none")
TEACHER_MESSAGES = ("system_and_last_user", "all_but_last")
PREFIX = "antisd_"


@dataclass(frozen=True)
class AntiSDSettings:
    """Settings of the AntiSD step (signal, shaping, λ, gate) and of the teacher's privileged context."""

    signal: str = "antisd"
    """Per-token signal δ(u): antisd (−φ(u)), sd (+u), sd_jsd (+φ(u)), revkl_ascent (−u), no_teacher (log π_S)."""
    shaping: str = "paper"
    """'paper': raw δ with scalar λ; 'release': u-clip, clamp, per-sequence z-score, clip, length mask."""
    compose: str = "additive"
    """'additive' A_seq + λδ (paper) or 'multiplicative' A_seq(1 + λδ) (ablation)."""
    lambda_max: float = 0.5
    """λ_max; 0 gives plain GRPO advantages exactly."""
    lambda_mode: str = "constant"
    """'constant': λ = g·λ_max (paper); 'teacher_ppl': per-sequence λ_i from teacher perplexity (release)."""
    lambda_coef: float = 0.1
    """Release λ_i = clamp(coef·alpha·ln(clamp(PPL_i/τ, 0.5, 3)), λ_min, λ_max): coef."""
    lambda_alpha: float = 2.0
    """Release λ_i: alpha."""
    lambda_min: float = 0.0
    """Release λ_i: λ_min (KKT floor)."""
    lambda_tau_ratio: float = 0.93
    """Release λ_i threshold τ = max(ratio·m, lambda_tau_floor), m the warm teacher PPL (the release reuses its gate's 0.93)."""
    lambda_tau_floor: float | None = None
    """Floor of τ (release: 1.01, its gate floor); None: no floor."""
    lambda_tau_offset: float | None = None
    """A number replaces the ratio: τ = m − offset (sd.sh, 0.10); None uses lambda_tau_ratio."""
    ppl_spike: float = 3.0
    """Sequences with teacher PPL above this get λ_i = 0 and are left out of the PPL gate statistic."""
    gate: bool = True
    """Use the Schmitt-trigger gate; off means the term is always on after any warm-up."""
    gate_signal: str = "teacher_entropy_median"
    """Gate statistic: teacher_entropy_median (paper), teacher_ppl (release), student_ppl (ablation 'add.*')."""
    gate_warmup_steps: int = 5
    """Warm-up steps at λ = 0 that calibrate the gate (and σ_ref, τ). 0 is allowed only when nothing is calibrated."""
    gate_down_ratio: float = 0.93
    """Close when the statistic falls below down_ratio × warm value."""
    gate_up_ratio: float = 1.0
    """Reopen when it reaches up_ratio × warm value (paper 1.00, release 1.07)."""
    gate_min_threshold: float | None = None
    """Floor of the closing threshold (release: 1.01)."""
    gate_rearm_from_floor: bool = False
    """Release: when the floor binds, the re-arm level is (floor/down_ratio)·up_ratio instead of up_ratio·m."""
    gate_lag: int = 0
    """0: decide on this step's statistic (paper); 1: on the previous step's (release)."""
    gate_pool_steps: int = 1
    """After warm-up, decide on the mean of the last this-many steps' statistics (1: this step's alone, as the paper and the release do; not in the paper, issue #23)."""
    warmup_statistic: str = "step_mean"
    """How the warm PPL value m is taken: 'step_mean' (one value a step over sequences with PPL ≤ spike, median) or 'release_microbatch' (per-micro-batch means over all sequences, means ≥ spike dropped, upper median)."""
    outlier_k: float = 2.0
    """Release: zero tokens with |u| > k·σ_ref."""
    log_clip: float = 5.0
    """Release: clamp u to ±this after outlier zeroing."""
    z_clip: float = 5.0
    """Release: clip the per-sequence z-score to ±this."""
    len_mask: int | None = 12000
    """Release: sequences with at least this many response tokens get no AntiSD term (32768 for thinking models)."""
    recalibrate_on_resume: bool = False
    """Warm up the gate again after resuming (the released code always does; we restore the saved gate unless asked)."""
    teacher: str = "live"
    """Whose weights score the privileged context: 'live' (the policy itself under stop-gradient, the paper), 'ema' (an exponential moving average of the policy), 'frozen' (the initial policy), 'none' (no teacher pass; needs lambda_max = 0)."""
    teacher_ema_decay: float = 0.99
    """teacher='ema': after every optimizer step θ_T ← decay·θ_T + (1 − decay)·θ."""
    teacher_offload: bool = False
    """teacher='ema'/'frozen': keep the teacher's weights in host memory between teacher passes (saves one model copy of accelerator memory, costs two copies per step)."""
    demonstration_source: str = "group_only"
    """'group_only' (released code: demonstrations only from correct siblings), 'group_then_reference' (fall back to the row's reference solution) or 'reference_only' (always the reference solution)."""
    success_threshold: float = 1.0
    """A rollout with reward ≥ this is a correct sibling usable as demonstration."""
    cut_demonstration: bool = True
    """Cut a demonstration right after its final answer (release truncate_solution_at_correct_answer), where the task can."""
    max_demonstration_tokens: int = 3072
    """Demonstrations longer than this are cut to 25% head + 75% tail."""
    demonstration_budget_from_prompt: bool = False
    """Release: demonstration budget min(max_demonstration_tokens, max_reprompt_len − prompt − feedback − 300), at least 128."""
    max_reprompt_len: int = 4096
    """Teacher prompts longer than this are head/tail truncated (counted in antisd/teacher_prompt_truncated)."""
    reprompt_head_fraction: float = 0.25
    """Share of max_reprompt_len kept from the head of an over-long teacher prompt (release: 1/3)."""
    reprompt_separator: str = "\n...\n"
    """Joins head and tail of an over-long teacher prompt (release: ' ... ')."""
    teacher_messages: str = "system_and_last_user"
    """Teacher message list: 'system_and_last_user' (system turns + the reprompt) or 'all_but_last' (release: every message but the last, then the reprompt)."""
    remove_thinking: bool = False
    """Strip <think>…</think> from demonstrations (thinking models)."""
    include_feedback: bool = True
    """Add the 'Previous assessment' line about the rollout's own correctness."""
    feedback_correct: str = "Your answer is correct."
    """Feedback for a rollout with reward ≥ success threshold."""
    feedback_incorrect: str = "Your answer is incorrect."
    """Feedback for any other scored rollout."""
    log_categories_every: int = 0
    """Every N steps log the mean u of deliberation and structural tokens (antisd/cat/*); 0 disables."""
    control: bool = False
    """Experimental: use u − u_control, u_control the PMI under a *mismatched* correct solution (another group's) in the same template, so the term acts only on what the right solution tells; costs a third forward (perf/antisd_control_forward_s)."""
    diagnostics: bool = False
    """Compute the teacher's full-vocabulary entropy (antisd/teacher_entropy_mean) even when the gate does not use it; with lambda_max = 0 and a teacher, the teacher pass is diagnostics only. antisd compare turns it on."""

    def __post_init__(self):
        choices = {
            "signal": SIGNAL_NAMES, "shaping": SHAPINGS, "compose": COMPOSES, "lambda_mode": LAMBDA_MODES,
            "gate_signal": GATE_SIGNALS, "warmup_statistic": WARMUP_STATISTICS, "demonstration_source": DEMONSTRATION_SOURCES,
            "teacher_messages": TEACHER_MESSAGES, "teacher": TEACHERS,
        }  # fmt: skip
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{PREFIX}{name}={getattr(self, name)!r} is not one of {list(allowed)}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{PREFIX}{f.name}={value} is not a finite number")
        self._check_ranges()
        self._check_combinations()

    def _check_ranges(self) -> None:
        nonneg = ("lambda_max", "lambda_min", "lambda_coef", "lambda_tau_ratio", "gate_down_ratio", "gate_up_ratio", "outlier_k", "log_clip", "z_clip", "log_categories_every", "gate_warmup_steps")
        for name in nonneg:
            if getattr(self, name) < 0:
                raise ValueError(f"{PREFIX}{name} must be ≥ 0, got {getattr(self, name)}")
        if self.gate_pool_steps < 1:
            raise ValueError(f"{PREFIX}gate_pool_steps must be ≥ 1, got {self.gate_pool_steps}")
        if self.gate_lag not in (0, 1):
            raise ValueError(f"{PREFIX}gate_lag must be 0 or 1, got {self.gate_lag}")
        if self.gate and self.gate_up_ratio < self.gate_down_ratio:
            raise ValueError(f"{PREFIX}gate_up_ratio ({self.gate_up_ratio}) is below {PREFIX}gate_down_ratio ({self.gate_down_ratio}): no hysteresis band")
        if not 0 < self.reprompt_head_fraction < 1:
            raise ValueError(f"{PREFIX}reprompt_head_fraction must be in (0, 1), got {self.reprompt_head_fraction}")
        for name in ("max_demonstration_tokens", "max_reprompt_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{PREFIX}{name} must be ≥ 1, got {getattr(self, name)}")
        if self.len_mask is not None and self.len_mask < 1:
            raise ValueError(f"{PREFIX}len_mask must be ≥ 1 (or None: no length mask), got {self.len_mask}")
        if self.ppl_spike <= 1:
            raise ValueError(f"{PREFIX}ppl_spike must be > 1 (a perplexity is never below 1), got {self.ppl_spike}")
        if not 0 <= self.teacher_ema_decay < 1:
            raise ValueError(f"{PREFIX}teacher_ema_decay must be in [0, 1), got {self.teacher_ema_decay}")
        if self.lambda_tau_floor is not None and self.lambda_tau_floor < 0:
            raise ValueError(f"{PREFIX}lambda_tau_floor must be ≥ 0, got {self.lambda_tau_floor}")
        if self.gate_min_threshold is not None and self.gate_min_threshold < 0:
            raise ValueError(f"{PREFIX}gate_min_threshold must be ≥ 0, got {self.gate_min_threshold}")
        if self.lambda_min > self.lambda_max:
            raise ValueError(f"{PREFIX}lambda_min ({self.lambda_min}) is above {PREFIX}lambda_max ({self.lambda_max})")

    def _check_combinations(self) -> None:
        if self.teacher == "none" and (self.lambda_max > 0 or self.diagnostics):
            what = f"{PREFIX}lambda_max={self.lambda_max}" if self.lambda_max > 0 else f"{PREFIX}diagnostics=True"
            raise ValueError(f"{what} needs a teacher pass: set {PREFIX}teacher=live (or ema, frozen), or {PREFIX}lambda_max=0 and {PREFIX}diagnostics=False for plain GRPO")
        if self.gate and self.gate_warmup_steps == 0:
            raise ValueError(f"{PREFIX}gate=True needs {PREFIX}gate_warmup_steps ≥ 1 to calibrate its thresholds; for a term that is always on use {PREFIX}gate=False")
        if self.lambda_mode == "teacher_ppl" and self.gate_warmup_steps < 1:
            raise ValueError(f"{PREFIX}lambda_mode='teacher_ppl' calibrates τ over warm-up: {PREFIX}gate_warmup_steps must be ≥ 1")
        if self.shaping == "release" and self.gate_warmup_steps < 1:
            raise ValueError(f"{PREFIX}shaping='release' calibrates σ_ref over warm-up: {PREFIX}gate_warmup_steps must be ≥ 1")
        if self.control and self.signal == "no_teacher":
            raise ValueError(f"{PREFIX}control=True subtracts a control teacher's PMI; {PREFIX}signal='no_teacher' uses no teacher")
        if self.warmup_statistic == "release_microbatch" and self.gate_signal == "teacher_entropy_median" and self.lambda_mode == "constant":
            raise ValueError(f"{PREFIX}warmup_statistic='release_microbatch' applies to perplexity statistics; the entropy gate with constant λ has none")

    @property
    def needs_warmup(self) -> bool:
        """Warm-up (λ = 0) is needed when something is calibrated on it: the gate, σ_ref or the PPL threshold τ."""
        calibrated = self.gate or self.shaping == "release" or self.lambda_mode == "teacher_ppl"
        return calibrated and self.gate_warmup_steps > 0

    @property
    def scores_teacher(self) -> bool:
        """Whether a step runs the teacher pass: the explicit ``teacher`` switch."""
        return self.teacher != "none"

    @property
    def needs_teacher_entropy(self) -> bool:
        """Whether the teacher pass computes full-vocabulary entropies: for the paper's entropy gate or diagnostics."""
        return self.gate_signal == "teacher_entropy_median" or self.diagnostics

    def replace(self, **changes) -> "AntiSDSettings":
        """A validated copy with ``changes`` (field names without the prefix); unknown names are named."""
        known = {f.name for f in dataclasses.fields(self)}
        for key in changes:
            if key not in known:
                raise _unknown(key, known)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def prefixed(self) -> dict:
        """``{antisd_<field>: value}``, as the CLI and YAML spell the fields."""
        return {PREFIX + k: v for k, v in self.to_dict().items()}


# Old names, refused with the new one (one name per idea: a correct sibling shown to the teacher is a "demonstration")
RENAMED = {
    "solution_source": "demonstration_source",
    "max_solution_tokens": "max_demonstration_tokens",
    "solution_budget_from_prompt": "demonstration_budget_from_prompt",
}


def _unknown(key: str, known) -> KeyError:
    if key in RENAMED:
        return KeyError(f"AntiSD setting {PREFIX}{key} was renamed {PREFIX}{RENAMED[key]}")
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return KeyError(f"unknown AntiSD setting {key!r}.{hint}")


def from_prefixed(base: AntiSDSettings, overrides: dict) -> AntiSDSettings:
    """``base`` with ``{antisd_<field>: value}`` overrides applied (the CLI/YAML spelling)."""
    plain = {}
    for key, value in overrides.items():
        if not key.startswith(PREFIX):
            raise KeyError(f"{key!r} is not an AntiSD setting (they start with {PREFIX!r})")
        plain[key[len(PREFIX) :]] = value
    return base.replace(**plain)


_PAPER = AntiSDSettings()  # the paper's AntiSD: raw −φ(u), λ = g·0.5, median-entropy gate, re-arm at H_warm
_RELEASE = AntiSDSettings(
    shaping="release",
    lambda_mode="teacher_ppl",
    gate_signal="teacher_ppl",
    gate_up_ratio=1.07,
    gate_min_threshold=1.01,
    lambda_tau_floor=1.01,
    gate_rearm_from_floor=True,
    gate_lag=1,
    warmup_statistic="release_microbatch",
    demonstration_budget_from_prompt=True,
    reprompt_head_fraction=1 / 3,
    reprompt_separator=" ... ",
    teacher_messages="all_but_last",
)

PRESETS: dict[str, AntiSDSettings] = {
    # λ = 0 and no teacher pass: plain GRPO at TRL's cost (compare scores a live teacher for the antisd/* diagnostics).
    "grpo": _PAPER.replace(lambda_max=0.0, gate=False, teacher="none"),
    # The paper's default self-distillation: reverse-KL descent, δ = +u, no gate (Table 1 "+SD").
    "sd": _PAPER.replace(signal="sd", gate=False),
    # The released code's SD baseline (sd.sh): JSD descent +φ(u), release shaping, gate disabled, τ = m − 0.10.
    "sd_jsd": _RELEASE.replace(signal="sd_jsd", gate=False, lambda_tau_offset=0.10),
    # AntiSD as written in the paper (Alg. 1): raw −φ(u), λ = g·0.5, entropy gate, reactivation at H_warm.
    "antisd": _PAPER,
    # AntiSD as released: u-clip, z-score, length mask, per-sequence λ_i from teacher PPL, PPL gate 0.93/1.07.
    "antisd_release": _RELEASE,
    # Ablations (paper §7.5), each one knob away from the paper's AntiSD:
    "no_gate": _PAPER.replace(gate=False),
    "revkl_ascent": _PAPER.replace(signal="revkl_ascent"),
    "no_teacher": _PAPER.replace(signal="no_teacher"),
    "multiplicative": _PAPER.replace(compose="multiplicative"),
    "student_ppl_gate": _PAPER.replace(gate_signal="student_ppl"),
    # Teacher ablations (not in the paper): is the signal the context, or the drift between teacher and student?
    "antisd_frozen_teacher": _PAPER.replace(teacher="frozen"),
    "antisd_ema_teacher": _PAPER.replace(teacher="ema"),
    # Experimental (issue #12, not in the paper): the paper's AntiSD on u − u_control, the control teacher seeing
    # another group's correct solution; removes the format shift any solution causes. A third forward.
    "antisd_control_experimental": _PAPER.replace(control=True),
}


def preset(name: str) -> AntiSDSettings:
    """A preset by name; an unknown name raises with the known names and the closest one."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"Unknown preset {name!r}; known presets: {sorted(PRESETS)}.{hint}")
    return PRESETS[name]


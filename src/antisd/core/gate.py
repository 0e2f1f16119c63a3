"""The entropy-triggered gate: a Schmitt trigger calibrated over warm-up steps (paper §4, Eq. 7).

The caller supplies one *global* statistic per training step (already reduced over processes):
- ``teacher_entropy_median`` (paper): the median full-vocabulary teacher entropy over all valid tokens;
- ``teacher_ppl`` (release): the mean teacher perplexity over sequences with PPL ≤ 3;
- ``student_ppl`` (ablation "add.*"): the same on the student.

Warm-up: the first ``warmup_steps`` steps run with the gate shut (λ = 0, pure GRPO) and record the statistic;
their median m is the warm value. Then τ_down = max(down_ratio·m, min_threshold), τ_up = up_ratio·m, and the gate
opens. The release re-derives the warm value from the floored τ (m' = τ_down/down_ratio), so with
``rearm_from_floor`` τ_up = up_ratio·m' whenever the floor binds. After warm-up:
  g: 1 → 0 when stat < τ_down;   g: 0 → 1 when stat ≥ τ_up;   otherwise g is unchanged (hysteresis).
``lag=0`` (paper) applies the decision to the step whose statistic triggered it; ``lag=1`` (release) applies it
from the next step on, since the released code decides at step boundaries from the previous step's average.
A non-finite statistic is ignored (no transition) and counted in ``skipped``.

``pool_steps`` > 1 (not in the paper; issue #23) decides on the mean of the last ``pool_steps`` finite statistics
after warm-up instead of this step's alone: a gate that sees a single noisy batch can flicker shut on one low
value; a pooled statistic trades that for a delay of about pool_steps/2 steps. Warm-up is unchanged.
"""

from __future__ import annotations

import math
import statistics


class SchmittGate:
    def __init__(
        self,
        warmup_steps: int = 5,
        down_ratio: float = 0.93,
        up_ratio: float = 1.0,
        min_threshold: float | None = None,
        lag: int = 0,
        rearm_from_floor: bool = False,
        pool_steps: int = 1,
    ):
        if lag not in (0, 1):
            raise ValueError(f"lag must be 0 or 1, got {lag}")
        if pool_steps < 1:
            raise ValueError(f"pool_steps must be ≥ 1, got {pool_steps}")
        if up_ratio < down_ratio:
            raise ValueError(f"up_ratio ({up_ratio}) below down_ratio ({down_ratio}) gives no hysteresis band")
        self.warmup_steps = warmup_steps
        self.down_ratio = down_ratio
        self.up_ratio = up_ratio
        self.min_threshold = min_threshold
        self.lag = lag
        self.rearm_from_floor = rearm_from_floor
        self.pool_steps = pool_steps
        self.recent: list[float] = []  # the last pool_steps finite statistics after warm-up
        self.steps = 0
        self.warm_values: list[float] = []
        self.warm: float | None = None
        self.active = False
        self.transitions = 0
        self.skipped = 0

    @property
    def calibrated(self) -> bool:
        return self.warm is not None

    @property
    def tau_down(self) -> float | None:
        if self.warm is None:
            return None
        tau = self.down_ratio * self.warm
        return tau if self.min_threshold is None else max(tau, self.min_threshold)

    @property
    def tau_up(self) -> float | None:
        """up_ratio·m; with ``rearm_from_floor`` (release) up_ratio·τ_down/down_ratio, i.e. up_ratio·max(m, floor/down_ratio)."""
        if self.warm is None:
            return None
        if self.rearm_from_floor and self.down_ratio > 0:
            return self.up_ratio * (self.tau_down / self.down_ratio)
        return self.up_ratio * self.warm

    def set_warm(self, warm: float) -> None:
        """Replace the warm value computed from the per-step statistics (a caller with a finer warm-up statistic)."""
        if self.warm is None:
            raise RuntimeError("set_warm before the warm-up has finished")
        self.warm = float(warm)

    def step(self, stat: float) -> bool:
        """Feed this step's global statistic; returns whether the AntiSD term is on for this step."""
        self.steps += 1
        if not self.calibrated:
            if math.isfinite(stat):
                self.warm_values.append(float(stat))
            else:
                self.skipped += 1
            if len(self.warm_values) >= self.warmup_steps:
                self.warm = statistics.median(self.warm_values)
                self.active = True  # opens after warm-up; this warm-up step itself stays at λ = 0
            return False
        if self.lag == 0:
            self._transition(stat)
            return self.active
        on_now = self.active
        self._transition(stat)
        return on_now

    def _transition(self, stat: float) -> None:
        if not math.isfinite(stat):
            self.skipped += 1
            return
        self.recent = (self.recent + [float(stat)])[-self.pool_steps :]
        stat = statistics.fmean(self.recent)
        if self.active and stat < self.tau_down:
            self.active = False
            self.transitions += 1
        elif not self.active and stat >= self.tau_up:
            self.active = True
            self.transitions += 1

    def recalibrate(self) -> None:
        """Forget the warm value and warm up again (the paper's continual-training protocol, §7.6)."""
        self.warm_values, self.warm, self.active, self.recent = [], None, False, []

    def state_dict(self) -> dict:
        keys = ("warmup_steps", "down_ratio", "up_ratio", "min_threshold", "lag", "rearm_from_floor", "pool_steps", "steps", "warm", "active", "transitions", "skipped")
        return {k: getattr(self, k) for k in keys} | {"warm_values": list(self.warm_values), "recent": list(self.recent)}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            if not hasattr(self, key):
                raise KeyError(f"Unknown gate state field {key!r}")
            setattr(self, key, list(value) if key in ("warm_values", "recent") else value)

"""The step's three mode registries: shaping of the per-token signal, the gate's statistic, the λ mode.

Each setting names an entry here (``settings.shaping``, ``settings.gate_signal``, ``settings.lambda_mode``), as
``settings.signal`` names one of :data:`antisd.core.signals.SIGNALS`. Every entry is a small function called with
keyword arguments; ``register_*`` adds one under a new name (and makes the name a valid setting). The formulas
themselves live in :mod:`antisd.core`; this module only maps names to them with the settings' hyper-parameters.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from antisd.core import paper_signal, release_signal, teacher_ppl_lambda
from antisd.method import settings as settings_module
from antisd.method.reducer import Reducer
from antisd.method.settings import AntiSDSettings


# --- shaping: u → the per-token signal δ that λ multiplies -------------------------------------------------------


def _paper_shaping(*, u_BT, student_logp_BT, mask_BT, signal_fn, settings: AntiSDSettings, sigma_ref) -> torch.Tensor:
    """The paper: raw δ(u) on the masked tokens."""
    return paper_signal(u_BT, student_logp_BT, mask_BT, signal_fn)


def _release_shaping(*, u_BT, student_logp_BT, mask_BT, signal_fn, settings: AntiSDSettings, sigma_ref) -> torch.Tensor:
    """The release: outlier zeroing at k·σ_ref, u-clip, per-sequence z-score, clip, length mask."""
    s = settings
    return release_signal(
        u_BT, student_logp_BT, mask_BT, signal_fn, sigma_ref=sigma_ref,
        k_sigma=s.outlier_k, log_clip=s.log_clip, z_clip=s.z_clip, len_mask=s.len_mask,
    )  # fmt: skip


# --- gate statistic: one global number a step -------------------------------------------------------------------


def ppl_statistic(ppl_B: torch.Tensor, mask_BT: torch.Tensor, ppl_spike: float, reducer: Reducer) -> float:
    """Mean sequence perplexity over every process's rows with a response and PPL ≤ spike (NaN: none)."""
    keep_B = (ppl_B <= ppl_spike) & mask_BT.any(dim=1)
    total, count = reducer.sum([ppl_B[keep_B].double().sum().item(), keep_B.sum().item()])
    return total / count if count else float("nan")


def _teacher_entropy_median(*, teacher_entropy_BT, teacher_ppl_B, student_ppl_B, mask_BT, settings, reducer) -> float:
    """The paper: the median teacher entropy over every process's response tokens."""
    if teacher_entropy_BT is None:
        raise ValueError("the entropy gate needs teacher_entropy_BT")
    values = reducer.gather(teacher_entropy_BT[mask_BT.bool()].float())
    values = values[~torch.isnan(values)]
    return values.median().item() if values.numel() else float("nan")


def _teacher_ppl(*, teacher_entropy_BT, teacher_ppl_B, student_ppl_B, mask_BT, settings, reducer) -> float:
    """The release: mean teacher sequence perplexity (spikes left out)."""
    return ppl_statistic(teacher_ppl_B, mask_BT, settings.ppl_spike, reducer)


def _student_ppl(*, teacher_entropy_BT, teacher_ppl_B, student_ppl_B, mask_BT, settings, reducer) -> float:
    """Ablation 'add.*': mean student sequence perplexity (spikes left out)."""
    if student_ppl_B is None:
        raise ValueError("the student-PPL gate needs the student's log-probs")
    return ppl_statistic(student_ppl_B, mask_BT, settings.ppl_spike, reducer)


# --- λ mode: [B] λ_i of an open gate ------------------------------------------------------------------------------


def tau(settings: AntiSDSettings, warm_ppl: float | None) -> float:
    """The release λ_i threshold τ = max(ratio·m, floor), or m − offset (sd.sh); m the warm teacher PPL."""
    s, m = settings, (warm_ppl if warm_ppl is not None else math.nan)
    value = m - s.lambda_tau_offset if s.lambda_tau_offset is not None else s.lambda_tau_ratio * m
    return max(value, s.lambda_tau_floor) if s.lambda_tau_floor is not None else value


def _constant_lambda(*, teacher_ppl_B, settings: AntiSDSettings, warm_ppl) -> torch.Tensor:
    """The paper: λ = λ_max on every row."""
    return torch.full_like(teacher_ppl_B, settings.lambda_max)


def _teacher_ppl_lambda(*, teacher_ppl_B, settings: AntiSDSettings, warm_ppl) -> torch.Tensor:
    """The release: per-sequence λ_i from teacher perplexity against τ (0 without a usable warm value, never NaN)."""
    s, threshold = settings, tau(settings, warm_ppl)
    if not math.isfinite(threshold):  # every warm-up PPL above the spike: no term
        return torch.zeros_like(teacher_ppl_B)
    return teacher_ppl_lambda(
        teacher_ppl_B, threshold, coef=s.lambda_coef, alpha=s.lambda_alpha,
        lam_min=s.lambda_min, lam_max=s.lambda_max, ppl_spike=s.ppl_spike,
    )  # fmt: skip


ShapingFn = Callable[..., torch.Tensor]
GateStatisticFn = Callable[..., float]
LambdaFn = Callable[..., torch.Tensor]

SHAPINGS: dict[str, ShapingFn] = {"paper": _paper_shaping, "release": _release_shaping}
GATE_STATISTICS: dict[str, GateStatisticFn] = {
    "teacher_entropy_median": _teacher_entropy_median,
    "teacher_ppl": _teacher_ppl,
    "student_ppl": _student_ppl,
}
LAMBDA_MODES: dict[str, LambdaFn] = {"constant": _constant_lambda, "teacher_ppl": _teacher_ppl_lambda}

# The settings validate names against these lists; a registered name becomes valid there too.
_SETTING_OF = {"shaping": (SHAPINGS, settings_module.SHAPINGS), "gate_signal": (GATE_STATISTICS, settings_module.GATE_SIGNALS),
               "lambda_mode": (LAMBDA_MODES, settings_module.LAMBDA_MODES)}  # fmt: skip
for _field, (_registry, _names) in _SETTING_OF.items():
    assert list(_registry) == list(_names), f"settings' {_field} names and the registry disagree"


def register(field: str, name: str, fn: Callable) -> None:
    """Add a mode under a new name for ``field`` ('shaping', 'gate_signal' or 'lambda_mode'); the name becomes a
    valid setting. Re-registering a name with another function raises."""
    registry, names = _SETTING_OF[field]
    if name in registry and registry[name] is not fn:
        raise ValueError(f"{field} {name!r} is already registered")
    registry[name] = fn
    if name not in names:
        names.append(name)

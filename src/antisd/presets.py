"""Named variants: each preset is a set of AntiSD fields (see ``AntiSDConfig`` for their meaning).

Paper (arXiv 2605.11609) vs release (the authors' verl fork) are both here, named; docs/variants.md lists
every difference. A preset is resolved once, before the trainer is built; explicit user fields win over it.
"""

from __future__ import annotations

import difflib

_PAPER_GATE = dict(
    antisd_gate=True,
    antisd_gate_signal="teacher_entropy_median",
    antisd_gate_warmup_steps=5,
    antisd_gate_down_ratio=0.93,
    antisd_gate_up_ratio=1.0,
    antisd_gate_min_threshold=None,
    antisd_gate_lag=0,
)
_PAPER = dict(antisd_shaping="paper", antisd_compose="additive", antisd_lambda_mode="constant", antisd_lambda_max=0.5) | _PAPER_GATE

_RELEASE = dict(
    antisd_shaping="release",
    antisd_compose="additive",
    antisd_lambda_mode="teacher_ppl",
    antisd_lambda_max=0.5,
    antisd_lambda_tau_offset=None,
    antisd_gate=True,
    antisd_gate_signal="teacher_ppl",
    antisd_gate_warmup_steps=5,
    antisd_gate_down_ratio=0.93,
    antisd_gate_up_ratio=1.07,
    antisd_gate_min_threshold=1.01,
    antisd_gate_lag=1,
)

PRESETS: dict[str, dict] = {
    # λ = 0: plain GRPO. The teacher is still scored so that u diagnostics are comparable across variants.
    "grpo": _PAPER | dict(antisd_signal="antisd", antisd_lambda_max=0.0, antisd_gate=False),
    # The paper's default self-distillation: reverse-KL descent, δ = +u, no gate (Table 1 "+SD").
    "sd": _PAPER | dict(antisd_signal="sd", antisd_gate=False),
    # The released code's SD baseline (sd.sh): JSD descent +φ(u), release shaping, gate disabled, τ = m − 0.10.
    "sd_jsd": _RELEASE | dict(antisd_signal="sd_jsd", antisd_gate=False, antisd_lambda_tau_offset=0.10),
    # AntiSD as written in the paper (Alg. 1): raw −φ(u), λ = g·0.5, entropy gate, reactivation at H_warm.
    "antisd": _PAPER | dict(antisd_signal="antisd"),
    # AntiSD as released: u-clip, z-score, length mask, per-sequence λ_i from teacher PPL, PPL gate 0.93/1.07.
    "antisd_release": _RELEASE | dict(antisd_signal="antisd"),
    # Ablations (paper §7.5), each one knob away from the paper's AntiSD:
    "no_gate": _PAPER | dict(antisd_signal="antisd", antisd_gate=False),
    "revkl_ascent": _PAPER | dict(antisd_signal="revkl_ascent"),
    "no_teacher": _PAPER | dict(antisd_signal="no_teacher"),
    "multiplicative": _PAPER | dict(antisd_signal="antisd", antisd_compose="multiplicative"),
    "student_ppl_gate": _PAPER | dict(antisd_signal="antisd", antisd_gate_signal="student_ppl"),
}


def preset(name: str) -> dict:
    """The AntiSD fields of a preset; an unknown name raises with the known names and the closest one."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"Unknown preset {name!r}; known presets: {sorted(PRESETS)}.{hint}")
    return dict(PRESETS[name])

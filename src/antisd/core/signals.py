"""Per-token signals built from the pointwise mutual information u_t (paper §2-§3).

u_t = log π_T(y_t | x, c, y_<t) − log π_S(y_t | x, y_<t) is the PMI between the sampled token and the
privileged context c (Lemma 2). Every self-distillation variant turns u_t into a per-token advantage δ_t; the
registry below holds one function per variant, all with the signature ``fn(u_BT, student_logp_BT) -> signal_BT``.

Names (the paper's ablation vocabulary):
- ``antisd``: −φ(u), ascent on the Jensen–Shannon divergence (Eq. 6), bounded above by ½ln2.
- ``sd``: +u, descent on the reverse KL (Eq. 1 via Lemma 1), the paper's default self-distillation.
- ``sd_jsd``: +φ(u), descent on the JSD, the released code's "SD" baseline (``PRM_RENYI_SIGN=+1``).
- ``revkl_ascent``: −u, ascent on the reverse KL (Table 3 "rev. KL").
- ``no_teacher``: log π_S(y_t), a signal from the student alone (the released code's ``self_reward``);
  the paper's ablation that collapses by self-reinforcement.

Pure tensor code: no I/O, no framework imports.
"""

from __future__ import annotations

import difflib
import math
from typing import Callable

import torch
import torch.nn.functional as F

LN2 = math.log(2.0)

SignalFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def token_pmi(teacher_logp_BT: torch.Tensor, student_logp_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    """u = log π_T − log π_S on the sampled tokens, 0 where ``mask_BT`` is 0.

    Args:
        teacher_logp_BT: [B, T] teacher log-probs of the sampled tokens (any float dtype).
        student_logp_BT: [B, T] student log-probs of the same tokens.
        mask_BT: [B, T] 1/True on valid response tokens.
    Returns:
        [B, T] float32 u; masked positions are exactly 0 whatever the inputs hold there (NaN included).
    """
    u_BT = teacher_logp_BT.float() - student_logp_BT.float()
    return torch.where(mask_BT.bool(), u_BT, torch.zeros_like(u_BT))


def jsd_phi(u: torch.Tensor) -> torch.Tensor:
    """φ(u) = ½(softplus(u) − ln 2), elementwise (Lemma 5): φ(0)=0, increasing, φ ≥ −½ln2."""
    return 0.5 * (F.softplus(u) - LN2)


def _antisd(u_BT: torch.Tensor, student_logp_BT: torch.Tensor) -> torch.Tensor:
    return -jsd_phi(u_BT)


def _sd(u_BT: torch.Tensor, student_logp_BT: torch.Tensor) -> torch.Tensor:
    return u_BT


def _sd_jsd(u_BT: torch.Tensor, student_logp_BT: torch.Tensor) -> torch.Tensor:
    return jsd_phi(u_BT)


def _revkl_ascent(u_BT: torch.Tensor, student_logp_BT: torch.Tensor) -> torch.Tensor:
    return -u_BT


def _no_teacher(u_BT: torch.Tensor, student_logp_BT: torch.Tensor) -> torch.Tensor:
    return student_logp_BT.float()


SIGNALS: dict[str, SignalFn] = {
    "antisd": _antisd,
    "sd": _sd,
    "sd_jsd": _sd_jsd,
    "revkl_ascent": _revkl_ascent,
    "no_teacher": _no_teacher,
}


def get_signal(name: str) -> SignalFn:
    """Look a signal up by name; an unknown name raises with the known names and the closest match."""
    if name in SIGNALS:
        return SIGNALS[name]
    close = difflib.get_close_matches(name, SIGNALS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise KeyError(f"Unknown signal {name!r}; known signals: {sorted(SIGNALS)}.{hint}")


def register_signal(name: str, fn: SignalFn) -> None:
    """Add a signal under a new name; re-registering an existing name with another function raises."""
    if name in SIGNALS and SIGNALS[name] is not fn:
        raise ValueError(f"Signal {name!r} is already registered")
    SIGNALS[name] = fn

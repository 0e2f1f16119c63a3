"""Shaping of the per-token signal and its weight λ: the paper's form and the released code's form.

Paper (§3.1, Alg. 1): the raw signal δ_t reaches the advantage, scaled by one scalar λ = g·λ_max.

Release (the authors' verl fork, digest §3.3 steps 3-9), in this order:
 1. outlier zeroing: u_t := 0 where |u_t| > k·σ_ref, σ_ref frozen from the warm-up token std of (s − t);
 2. clamp u to [−c_u, c_u] (c_u = 5);
 3. signal δ_t = f(u_t) (e.g. −φ(u) for AntiSD);
 4. per-sequence z-score of δ over the response tokens (population std, floor 1e-6);
 5. clip the z-score to [−c_z, c_z] (c_z = 5);
 6. whole-sequence length mask: sequences with ≥ L_mask response tokens get 0;
 7. a per-sequence λ_i from the teacher perplexity (:func:`teacher_ppl_lambda`).

All functions are pure; masked positions of every output are exactly 0.
"""

from __future__ import annotations

import math

import torch

from antisd.core.masked import masked_mean, masked_std
from antisd.core.signals import SignalFn


def paper_signal(u_BT: torch.Tensor, student_logp_BT: torch.Tensor, mask_BT: torch.Tensor, signal_fn: SignalFn) -> torch.Tensor:
    """The paper's unshaped per-token signal δ_t = f(u_t).

    Args:
        u_BT: [B, T] PMI (see :func:`antisd.core.signals.token_pmi`).
        student_logp_BT: [B, T] student log-probs (used only by student-only signals).
        mask_BT: [B, T] valid response tokens.
        signal_fn: a registered signal, ``fn(u_BT, student_logp_BT) -> [B, T]``.
    Returns:
        [B, T] float32 signal, 0 at masked positions.
    """
    mask = mask_BT.bool()
    signal_BT = signal_fn(torch.where(mask, u_BT.float(), 0.0), torch.where(mask, student_logp_BT.float(), 0.0))
    return torch.where(mask, signal_BT, 0.0)


def zero_outliers(u_BT: torch.Tensor, sigma_ref: float | None, k_sigma: float) -> torch.Tensor:
    """Set u to 0 where |u| > k·σ_ref (release step 1). ``sigma_ref=None`` (still in warm-up) is a no-op."""
    if sigma_ref is None:
        return u_BT
    return torch.where(u_BT.abs() > k_sigma * sigma_ref, torch.zeros_like(u_BT), u_BT)


def sequence_zscore(x_BT: torch.Tensor, mask_BT: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-sequence standardisation over valid tokens: (x − mean_i) / max(std_i, eps), population std.

    Returns [B, T] with exactly 0 at masked positions; an all-masked row stays 0.
    """
    mean_B = masked_mean(x_BT, mask_BT, dim=1)
    std_B = masked_std(x_BT, mask_BT, dim=1).clamp(min=eps)
    z_BT = (x_BT.float() - mean_B[:, None]) / std_B[:, None]
    return torch.where(mask_BT.bool(), z_BT, 0.0)


def release_signal(
    u_BT: torch.Tensor,
    student_logp_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    signal_fn: SignalFn,
    *,
    sigma_ref: float | None,
    k_sigma: float = 2.0,
    log_clip: float = 5.0,
    z_clip: float = 5.0,
    len_mask: int | None = 12000,
) -> torch.Tensor:
    """The released code's shaped signal Z (steps 1-6 of the module docstring).

    Args:
        u_BT, student_logp_BT, mask_BT: [B, T] as in :func:`paper_signal`.
        signal_fn: registered signal applied to the cleaned u.
        sigma_ref: frozen warm-up token std of (s − t); None disables outlier zeroing (warm-up).
        k_sigma: outlier threshold in units of σ_ref (2).
        log_clip: clamp of u after zeroing (5).
        z_clip: clip of the per-sequence z-score (5).
        len_mask: sequences with at least this many valid tokens get an all-zero signal; None disables.
    Returns:
        [B, T] float32 Z, 0 at masked positions.
    """
    mask = mask_BT.bool()
    u_clean_BT = zero_outliers(torch.where(mask, u_BT.float(), 0.0), sigma_ref, k_sigma).clamp(-log_clip, log_clip)
    signal_BT = paper_signal(u_clean_BT, student_logp_BT, mask, signal_fn)
    z_BT = sequence_zscore(signal_BT, mask).clamp(-z_clip, z_clip)
    if len_mask is not None:
        too_long_B = mask.sum(dim=1) >= len_mask
        z_BT = torch.where(too_long_B[:, None], 0.0, z_BT)
    return torch.where(mask, z_BT, 0.0)


def sequence_ppl(logp_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    """Per-sequence perplexity exp(−mean_t log p) over valid tokens. Returns [B]; an empty row gives 1."""
    return torch.exp(-masked_mean(logp_BT, mask_BT, dim=1))


def teacher_ppl_lambda(
    ppl_B: torch.Tensor,
    tau: float,
    *,
    coef: float = 0.1,
    alpha: float = 2.0,
    ratio_min: float = 0.5,
    ratio_max: float = 3.0,
    lam_min: float = 0.0,
    lam_max: float = 0.5,
    ppl_spike: float = 3.0,
) -> torch.Tensor:
    """Released code's per-sequence λ_i (``ca_lambda_mode=teacher_perp``, digest §3.3 step 9).

    λ_i = clamp(coef·alpha·ln(clamp(PPL_i/τ, ratio_min, ratio_max)), lam_min, lam_max), and λ_i = 0 where
    PPL_i > ppl_spike. With the defaults λ_i ≤ 0.2·ln 3 ≈ 0.22, so ``lam_max`` never binds.

    Args:
        ppl_B: [B] teacher perplexity per sequence.
        tau: the calibrated threshold (max(0.93·m, 1.01) in the release).
    Returns:
        [B] float32 λ.
    """
    ratio_B = (ppl_B.float() / tau).clamp(ratio_min, ratio_max)
    lam_B = (coef * alpha * torch.log(ratio_B)).clamp(lam_min, lam_max)
    return torch.where(ppl_B.float() > ppl_spike, 0.0, lam_B)


class SigmaRef:
    """σ_ref for outlier zeroing: the mean of the warm-up token stds of (s − t), then frozen (release step 1).

    Call :meth:`observe` once per warm-up step with the global token std; after ``warmup_steps`` observations
    ``value`` is fixed. Before that ``value`` is None, which disables outlier zeroing.
    """

    def __init__(self, warmup_steps: int = 5):
        self.warmup_steps = warmup_steps
        self.observed: list[float] = []
        self.value: float | None = None

    def observe(self, token_std: float) -> None:
        if self.value is not None:
            return
        if math.isfinite(token_std):
            self.observed.append(float(token_std))
        if len(self.observed) >= self.warmup_steps:
            self.value = sum(self.observed) / len(self.observed)

    def state_dict(self) -> dict:
        return {"warmup_steps": self.warmup_steps, "observed": list(self.observed), "value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.warmup_steps = int(state["warmup_steps"])
        self.observed = [float(v) for v in state["observed"]]
        self.value = None if state["value"] is None else float(state["value"])

"""Slow, obviously correct references written straight from the equations (paper and digest §3.3, §4).

Plain Python loops over floats; no vectorisation, no torch ops beyond reading values.
"""

from __future__ import annotations

import math
import statistics


def phi(u: float) -> float:
    # φ(u) = ½(log(1 + e^u) − ln 2), with a stable softplus
    softplus = u + math.log1p(math.exp(-u)) if u > 0 else math.log1p(math.exp(u))
    return 0.5 * (softplus - math.log(2.0))


SIGNAL_REF = {
    "antisd": lambda u, s: -phi(u),
    "sd": lambda u, s: u,
    "sd_jsd": lambda u, s: phi(u),
    "revkl_ascent": lambda u, s: -u,
    "no_teacher": lambda u, s: s,
}


def paper_advantages(adv, teacher, student, mask, signal, lam, compose="additive"):
    """A_{i,t} = A_i + λ_i·f(t − s) (or A_i·(1 + λ_i·f)); A_i at masked positions."""
    out = []
    for i in range(len(adv)):
        row = []
        for t in range(len(mask[i])):
            if not mask[i][t]:
                row.append(adv[i])
                continue
            d = SIGNAL_REF[signal](teacher[i][t] - student[i][t], student[i][t])
            row.append(adv[i] + lam[i] * d if compose == "additive" else adv[i] * (1 + lam[i] * d))
        out.append(row)
    return out


def release_z(teacher, student, mask, signal, sigma_ref, k=2.0, log_clip=5.0, z_clip=5.0, len_mask=None):
    """Digest §3.3 steps 2-8 for each sequence, one token at a time."""
    out = []
    for i in range(len(mask)):
        idx = [t for t in range(len(mask[i])) if mask[i][t]]
        vals = {}
        for t in idx:
            u = teacher[i][t] - student[i][t]
            if sigma_ref is not None and abs(u) > k * sigma_ref:
                u = 0.0
            u = min(max(u, -log_clip), log_clip)
            vals[t] = SIGNAL_REF[signal](u, student[i][t])
        row = [0.0] * len(mask[i])
        if idx and not (len_mask is not None and len(idx) >= len_mask):
            mean = sum(vals.values()) / len(idx)
            std = math.sqrt(sum((v - mean) ** 2 for v in vals.values()) / len(idx))
            for t in idx:
                z = (vals[t] - mean) / max(std, 1e-6)
                row[t] = min(max(z, -z_clip), z_clip)
        out.append(row)
    return out


def grpo(rewards, group_size, scale=True, eps=1e-4):
    out = []
    for g in range(0, len(rewards), group_size):
        grp = rewards[g : g + group_size]
        mean = sum(grp) / len(grp)
        std = statistics.stdev(grp) if len(grp) > 1 else 0.0
        for r in grp:
            if max(grp) == min(grp):
                out.append(0.0)
            else:
                out.append((r - mean) / (std + eps) if scale else r - mean)
    return out


def ppl_lambda(ppl, tau, coef=0.1, alpha=2.0, rmin=0.5, rmax=3.0, lmin=0.0, lmax=0.5, spike=3.0):
    if ppl > spike:
        return 0.0
    ratio = min(max(ppl / tau, rmin), rmax)
    return min(max(coef * alpha * math.log(ratio), lmin), lmax)


def logp_entropy(logits_row, token):
    """log softmax and entropy of one position, by explicit sums."""
    m = max(logits_row)
    z = sum(math.exp(x - m) for x in logits_row)
    logz = m + math.log(z)
    probs = [math.exp(x - logz) for x in logits_row]
    return logits_row[token] - logz, -sum(p * (x - logz) for p, x in zip(probs, logits_row))

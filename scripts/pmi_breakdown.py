"""Where a model's PMI sits: share of tokens and of Σ|φ(u)| by token class, from `antisd pmi`'s tokens.jsonl.

    python scripts/pmi_breakdown.py runs/pmi-v3a/tokens.jsonl [more.jsonl ...]

Classes (issue #23's diagnosis of the testbed regime): the first token of a line (a try's opener, a deliberation
line's first word), numbers and operators, the answer line, everything else. Also: the share of teacher positions
that are deterministic (entropy < 0.05) and that sit within 0.05 of a uniform-choice plateau ln 2, ln 3, ln 4.
φ(u) = ½(softplus(u) − ln 2), the paper's Eq. 6 term."""

import json
import sys
from collections import defaultdict

import torch

from antisd.core import jsd_phi
from antisd.testbed.check import PLATEAUS


def token_class(token: str, line_start: bool, in_answer: bool) -> str:
    if in_answer:
        return "answer line"
    if line_start:
        return "line opener"
    if token.strip() and all(c.isdigit() or c in "+-*/()= " for c in token):
        return "numbers/operators"
    return "other"


def breakdown(rows: list[dict]) -> dict:
    """Token count and Σ|φ(u)| per class, and the deterministic / plateau position counts."""
    rows = sorted(rows, key=lambda r: (r["rollout"], r["position"]))
    abs_phi = jsd_phi(torch.tensor([r["u"] for r in rows], dtype=torch.float64)).abs().tolist()
    count, mass = defaultdict(int), defaultdict(float)
    deterministic = plateau = 0
    prev_rollout, line_start, in_answer = None, True, False
    for r, size in zip(rows, abs_phi):
        if r["rollout"] != prev_rollout:
            prev_rollout, line_start, in_answer = r["rollout"], True, False
        text = r["token"]
        stripped = text.lstrip("\n")
        if stripped != text:
            line_start, in_answer = True, False
        if line_start and stripped.strip():
            in_answer = stripped.strip().startswith("answer")
        cls = token_class(stripped, line_start and bool(stripped.strip()), in_answer)
        count[cls] += 1
        mass[cls] += size
        h = r["h_teacher"]
        deterministic += h < 0.05
        plateau += min(abs(h - p) for p in PLATEAUS.values()) < 0.05
        line_start = (line_start and not stripped.strip()) or text.endswith("\n")
    return {"count": dict(count), "mass": dict(mass), "deterministic": deterministic, "plateau": plateau}


def report(path: str) -> None:
    b = breakdown([json.loads(line) for line in open(path)])
    count, mass, deterministic, plateau = b["count"], b["mass"], b["deterministic"], b["plateau"]
    n, total = sum(count.values()), sum(mass.values())
    print(f"{path}: {n} tokens, mean |φ(u)| {total / n:.4f}; teacher entropy < 0.05 on {100 * deterministic / n:.0f}%, "
          f"within 0.05 of ln 2/3/4 on {100 * plateau / n:.0f}%")
    for cls in sorted(count, key=lambda c: -mass[c]):
        print(f"  {cls:<18} {100 * count[cls] / n:5.1f}% of tokens  {100 * mass[cls] / total:5.1f}% of Σ|φ(u)|  mean |φ| {mass[cls] / count[cls]:.4f}")


if __name__ == "__main__":
    for p in sys.argv[1:]:
        report(p)

"""`antisd testbed check`: is a testbed model in the regime the method assumes (issue #12 §1)?

Four conditions on the same held-out problems, k samples each (T = 0.7, top-p 0.95):
- ``none``: the plain prompt (this is the model's pass@1);
- ``correct_attempt``: a correct previous attempt of *this* problem in the teacher-prompt format;
- ``incorrect_attempt``: a failed attempt of this problem, assessed incorrect;
- ``mismatched``: another problem's correct solution, labelled correct (the control: a format shift without
  information). A model that uses the context solves far more under ``correct_attempt`` than under the other two.

Then the PMI diagnostic (``antisd pmi``, training temperature 1.0) on the model's own rollouts gives the token-level
properties, on distributions rather than extremes (issue #23): the teacher entropy's quantiles and the median's
distance from a plateau (ln 2: a binary coin flip), the dose the term gets per token (mean |φ(u)|), the negative
tail as shares (P(u < −1), P(u < −5)), the skew of u, and deliberation against structural tokens on u and on
u − u_control. Each property is printed with the range the issue sets and whether
the model is inside it (:func:`regime_properties`).
"""

from __future__ import annotations

import json
import math
import random
import statistics
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from antisd.core import jsd_phi
from antisd.method.context import ContextTemplates, teacher_user_text
from antisd.tasks import EvalItem, Task
from antisd.tasks import countdown as cd


@dataclass(frozen=True)
class CheckConfig:
    """Context-use check of a testbed model."""

    model: str = "testbed"
    """'testbed' (shipped) or a model directory."""
    problems: int = 100
    """Held-out problems."""
    k: int = 4
    """Samples per problem and condition."""
    seed: int = 0
    """Seed of problems, attempts and sampling."""
    out: str = ""
    """Optional JSON file for the results."""
    pmi_problems: int = 64
    """Held-out problems for the token-level properties (G rollouts each, at temperature 1.0)."""
    G: int = 8
    """Rollouts per problem for the token-level properties."""
    max_new_tokens: int = 128
    """Rollout length cap for the token-level properties."""

    def __post_init__(self):
        from antisd.infra import configio
        configio.check_at_least(self, {"problems": 1, "k": 1, "pmi_problems": 1, "G": 2, "max_new_tokens": 1})
        configio.check_seed(self)
        if self.out:
            configio.check_output_file(self.out, "--out")
        if not self.model.strip():
            raise ValueError("--model is empty")


@dataclass(frozen=True)
class Property:
    """One measured property of the regime and the range issue #12 requires (None: no bound)."""

    name: str
    value: float
    low: float | None
    high: float | None

    @property
    def ok(self) -> bool:
        return math.isfinite(self.value) and (self.low is None or self.value >= self.low) and (self.high is None or self.value <= self.high)

    def line(self) -> str:
        rng = f"[{'-∞' if self.low is None else f'{self.low:g}'}, {'+∞' if self.high is None else f'{self.high:g}'}]"
        verdict = "–" if self.low is None and self.high is None else "ok" if self.ok else "OUT"  # no range: reported only
        return f"{self.name:46s} {self.value:9.4f}  {rng:16s} {verdict}"


def skewness(values: list[float]) -> float:
    """Sample skewness m3 / m2^1.5 (negative: a longer left tail)."""
    mean = statistics.fmean(values)
    m2 = statistics.fmean((v - mean) ** 2 for v in values)
    m3 = statistics.fmean((v - mean) ** 3 for v in values)
    return m3 / m2**1.5 if m2 > 0 else float("nan")


PLATEAUS = {f"ln {k}": math.log(k) for k in (2, 3, 4)}
"""Entropies of a uniform choice among 2-4 options: a median teacher entropy sitting on one of them (v2: 0.697 ≈ ln 2)
means most positions are a coin flip between equals, not a graded distribution (issue #23)."""


def regime_properties(pass1: dict[str, float], tokens: list[dict], stats: dict) -> list[Property]:
    """The regime properties (issue #12 §1, revised by issue #23 to distributions rather than extremes) from the
    pass@1 conditions, the PMI token records and their category stats. Ranges: docs/testbed.md."""
    alone = pass1["none"]
    u = [t["u"] for t in tokens]
    h_teacher = [t["h_teacher"] for t in tokens]
    median_h = statistics.median(h_teacher)
    cuts = statistics.quantiles(h_teacher, n=20, method="inclusive")  # 5%, 10%, …, 95% (linear interpolation)
    cats = stats["categories"]
    gap = lambda key: cats["deliberation"][key]["mean"] - cats["structural"][key]["mean"]  # noqa: E731
    return [
        Property("pass@1 alone", alone, 0.20, 0.40),
        Property("pass@1 with a correct attempt / alone", pass1["correct_attempt"] / alone if alone else math.inf, 2.0, None),
        Property("pass@1 with a mismatched solution − alone", pass1["mismatched"] - alone, None, 0.0),
        Property("median teacher entropy (nats, T = 1)", median_h, 0.20, 1.00),
        Property("its distance from the nearest plateau ln 2..4", min(abs(median_h - v) for v in PLATEAUS.values()), 0.05, None),
        *(Property(f"teacher entropy, {5 * i}th percentile", cuts[i - 1], None, None) for i in (2, 5, 15, 18)),
        Property("median student entropy (nats, T = 1)", statistics.median(t["h_student"] for t in tokens), None, None),
        Property("mean |φ(u)| per token", jsd_phi(torch.tensor(u, dtype=torch.float64)).abs().mean().item(), 0.03, None),
        Property("P(u < −1)", sum(v < -1 for v in u) / len(u), 0.015, None),
        Property("P(u < −5)", sum(v < -5 for v in u) / len(u), None, None),
        Property("skewness of u", skewness(u), None, 0.0),
        Property("min u", min(u), None, None),
        Property("mean u: deliberation − structural", gap("u"), None, 0.0),
        Property("mean u − u_control: deliberation − structural", gap("u_minus_control"), None, 0.0),
    ]


def conditions(problems: list[cd.Problem], seed: int) -> dict[str, list[EvalItem]]:
    rng = random.Random(seed)
    t = ContextTemplates()
    out: dict[str, list[EvalItem]] = {"none": [], "correct_attempt": [], "incorrect_attempt": [], "mismatched": []}
    for i, p in enumerate(problems):
        row = {"numbers": list(p.numbers), "target": p.target}
        other = problems[(i + 1) % len(problems)]
        sol = rng.choice(cd.solutions(p))
        correct = f"{cd.try_line(sol, p)}\nanswer: {cd.format_expr(sol)}"
        wrongs = [e for e in cd.candidates(p.numbers) if cd.evaluate(e) != p.target]
        wrong = rng.choice(wrongs) if wrongs else sol
        incorrect = f"{cd.try_line(wrong, p)}\nanswer: {cd.format_expr(wrong)}"
        osol = cd.solutions(other)[0]
        mismatched = f"{cd.try_line(osol, other)}\nanswer: {cd.format_expr(osol)}"
        texts = {
            "none": p.prompt,
            "correct_attempt": teacher_user_text(p.prompt, correct, cd.CORRECT_FEEDBACK, t),
            "incorrect_attempt": teacher_user_text(p.prompt, incorrect, cd.INCORRECT_FEEDBACK, t),
            "mismatched": teacher_user_text(p.prompt, mismatched, cd.CORRECT_FEEDBACK, t),
        }
        for name, text in texts.items():
            out[name].append(EvalItem([{"role": "user", "content": text}], row))
    return out


def main(cfg: CheckConfig, run_pmi: Callable[..., dict] | None = None) -> dict:
    """pass@1 under the four contexts; with ``run_pmi`` (``antisd pmi``'s main over PMIConfig fields, given by the
    CLI) also the token-level regime properties."""
    from antisd.infra.models import load_model
    from antisd.evaluation.heldout import evaluate
    from antisd.tasks import countdown_task

    model, tok = load_model(cfg.model)
    base = countdown_task(n_train=1, n_heldout=cfg.problems, seed=cfg.seed)
    problems = [cd.Problem(tuple(item.row["numbers"]), item.row["target"]) for item in base.heldout]
    results = {}
    for name, items in conditions(problems, cfg.seed).items():
        task = Task(f"countdown-{name}", [], items, base.grade, None)
        r = evaluate(model, tok, task, k=cfg.k, seed=cfg.seed)
        results[name] = r.avg_at_k
        print(f"{name:18s} pass@1 = {r.avg_at_k:.3f}  ({cfg.problems} problems × {cfg.k})")
    props = regime_properties(results, *_pmi_tokens(cfg, run_pmi)) if run_pmi is not None else []
    if props:
        print(f"\n{'property':46s} {'value':>9s}  {'range':16s} in range")
        print("\n".join(prop.line() for prop in props))
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(json.dumps({"config": asdict(cfg), "pass@1": results, "properties": [asdict(p) | {"ok": p.ok} for p in props]}, indent=2))
        print(f"results: {cfg.out}")
    return results | {"properties": props}


def _pmi_tokens(cfg: CheckConfig, run_pmi: Callable[..., dict]) -> tuple[list[dict], dict]:
    """The PMI diagnostic's token records and statistics for this model (training temperature 1.0)."""
    with tempfile.TemporaryDirectory() as tmp:
        stats = run_pmi(
            model=cfg.model, problems=cfg.pmi_problems, G=cfg.G, temperature=1.0, max_new_tokens=cfg.max_new_tokens, output_dir=tmp, seed=cfg.seed,
        )  # fmt: skip
        tokens = [json.loads(line) for line in (Path(tmp) / "tokens.jsonl").read_text().splitlines()]
    return tokens, stats

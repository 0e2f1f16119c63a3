"""`antisd testbed check`: does the model solve held-out problems, and does it *use* privileged context?

Four conditions on the same held-out problems, k samples each (T = 0.7, top-p 0.95):
- ``none``: the plain prompt (this is the model's pass@1);
- ``correct_attempt``: a correct previous attempt of *this* problem in the teacher-prompt format;
- ``incorrect_attempt``: a failed attempt of this problem, assessed incorrect;
- ``mismatched``: another problem's correct solution, labelled correct (the control: a format shift without
  information). A model that uses the context solves far more under ``correct_attempt`` than under the other two.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from antisd.context import ContextTemplates, teacher_user_text
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


def main(cfg: CheckConfig) -> dict:
    from antisd.runtime import load_model
    from antisd.evaluation import evaluate
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
    if cfg.out:
        Path(cfg.out).write_text(json.dumps({"config": asdict(cfg), "pass@1": results}, indent=2))
    return results

"""Held-out evaluation with transformers ``generate``: avg@k, unbiased pass@k, per-problem results."""

from __future__ import annotations

from dataclasses import dataclass

from antisd.core.passk import pass_at_k
from antisd.scoring import sample
from antisd.tasks import Task


@dataclass(frozen=True)
class EvalResult:
    avg_at_k: float
    pass_at: dict[int, float]
    k: int
    n_problems: int
    per_problem: list[int]  # correct samples per problem

    def metrics(self, prefix: str = "eval/") -> dict[str, float]:
        out = {f"{prefix}avg@{self.k}": self.avg_at_k}
        out |= {f"{prefix}pass@{j}": v for j, v in self.pass_at.items()}
        return out


def evaluate(model, tokenizer, task: Task, k: int = 4, temperature: float = 0.7, top_p: float = 0.95, max_new_tokens: int = 96, batch_size: int = 64, seed: int = 0) -> EvalResult:
    """Sample ``k`` responses per held-out problem and grade them with the task's grader.

    Sampling uses a private RNG stream (:func:`antisd.scoring.sample`): evaluation never shifts the training
    run's random state, and every model is evaluated with the same sampling noise for the same seed.
    """
    prompts = [tokenizer.apply_chat_template(item.messages, add_generation_prompt=True, tokenize=False) for item in task.heldout]
    correct = [0] * len(prompts)
    for i, ids in sample(model, tokenizer, prompts, k, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed):
        reward = task.grade(tokenizer.decode(ids, skip_special_tokens=True), task.heldout[i].row)[0]
        if reward is None:  # unparseable gold: reported, never scored 0
            raise ValueError(f"held-out problem {i} of {task.name}: its gold answer cannot be parsed; fix or drop it")
        correct[i] += int(reward >= 1.0)
    n = len(prompts)
    return EvalResult(
        avg_at_k=sum(correct) / (n * k),
        pass_at={j: sum(pass_at_k(k, c, j) for c in correct) / n for j in sorted({1, k})},
        k=k,
        n_problems=n,
        per_problem=correct,
    )

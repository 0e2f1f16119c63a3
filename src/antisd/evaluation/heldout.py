"""Held-out evaluation with transformers ``generate``: avg@k, unbiased pass@k, per-problem results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from antisd.core.passk import pass_at_k
from antisd.evaluation.scoring import sample
from antisd.tasks import Task


@dataclass(frozen=True)
class EvalResult:
    avg_at_k: float
    pass_at: dict[int, float]
    k: int
    n_problems: int
    per_problem: list[int]  # correct samples per problem
    mean_length: float = float("nan")  # response tokens, eos included, mean over every sample
    trace: dict[str, float] = field(default_factory=dict)  # the task's trace statistics, mean over every sample

    def metrics(self, prefix: str = "eval/") -> dict[str, float]:
        out = {f"{prefix}avg@{self.k}": self.avg_at_k}
        out |= {f"{prefix}pass@{j}": v for j, v in self.pass_at.items()}
        out |= {f"{prefix}mean_length": self.mean_length} | {f"{prefix}{name}": v for name, v in self.trace.items()}
        return out


def evaluate(
    model, tokenizer, task: Task, k: int = 4, temperature: float = 0.7, top_p: float = 0.95, max_new_tokens: int = 96,
    batch_size: int = 64, seed: int = 0, shard: tuple[int, int] = (0, 1), gather: Callable[[list], list] | None = None,
) -> EvalResult:
    """Sample ``k`` responses per held-out problem and grade them with the task's grader.

    Sampling uses a private RNG stream (:func:`antisd.evaluation.scoring.sample`): evaluation never shifts the training
    run's random state, and every model is evaluated with the same sampling noise for the same seed.
    Several processes each take the problems ``rank::world`` of ``shard = (rank, world)`` and ``gather``
    (an all-gather of Python lists, concatenated) combines them, so every process returns the same result.
    """
    rank, world = shard
    items = list(enumerate(task.heldout))[rank::world]
    n_real = len(items)
    if world > 1:  # equal shares, so that processes generating in lock step make the same number of calls
        items += [items[-1] if items else (0, task.heldout[0])] * (-(-len(task.heldout) // world) - n_real)
    prompts = [tokenizer.apply_chat_template(item.messages, add_generation_prompt=True, tokenize=False) for _, item in items]
    correct_local = [0] * len(prompts)
    length_local = [0] * len(prompts)
    trace_local: list[dict[str, float]] = [{} for _ in prompts]
    for j, ids in sample(model, tokenizer, prompts, k, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed + rank, synced=world > 1):
        i, item = items[j]
        text = tokenizer.decode(ids, skip_special_tokens=True)
        reward = task.grade(text, item.row)[0]
        if reward is None:  # unparseable gold: reported, never scored 0
            raise ValueError(f"held-out problem {i} of {task.name}: its gold answer cannot be parsed; fix or drop it")
        correct_local[j] += int(reward >= 1.0)
        length_local[j] += len(ids)
        for name, value in (task.trace_stats(text) if task.trace_stats else {}).items():
            trace_local[j][name] = trace_local[j].get(name, 0.0) + value
    rows = list(zip([i for i, _ in items[:n_real]], correct_local, length_local, trace_local))
    rows = sorted(gather(rows) if gather is not None and world > 1 else rows, key=lambda r: r[0])
    correct = [c for _, c, _, _ in rows]
    n = len(correct)
    names = sorted({name for *_, t in rows for name in t})
    return EvalResult(
        avg_at_k=sum(correct) / (n * k),
        pass_at={j: sum(pass_at_k(k, c, j) for c in correct) / n for j in sorted({1, k})},
        k=k,
        n_problems=n,
        per_problem=correct,
        mean_length=sum(r[2] for r in rows) / (n * k),
        trace={name: sum(t.get(name, 0.0) for *_, t in rows) / (n * k) for name in names},
    )

"""Held-out evaluation with transformers ``generate``: avg@k, unbiased pass@k, per-problem results."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from antisd.core.passk import pass_at_k
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


@torch.no_grad()
def evaluate(model, tokenizer, task: Task, k: int = 4, temperature: float = 0.7, top_p: float = 0.95, max_new_tokens: int = 96, batch_size: int = 64, seed: int = 0) -> EvalResult:
    """Sample ``k`` responses per held-out problem and grade them with the task's grader."""
    # A private RNG stream: evaluation never shifts the training run's random state, and every model is
    # evaluated with the same sampling noise for the same seed (common random numbers across variants).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        correct = _sample_and_grade(model, tokenizer, task, k, temperature, top_p, max_new_tokens, batch_size)
    n = len(correct)
    return EvalResult(
        avg_at_k=sum(correct) / (n * k),
        pass_at={j: sum(pass_at_k(k, c, j) for c in correct) / n for j in sorted({1, k})},
        k=k,
        n_problems=n,
        per_problem=correct,
    )


def _sample_and_grade(model, tokenizer, task: Task, k, temperature, top_p, max_new_tokens, batch_size) -> list[int]:
    was_training = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    prompts = [tokenizer.apply_chat_template(item.messages, add_generation_prompt=True, tokenize=False) for item in task.heldout]
    flat = [(i, p) for i, p in enumerate(prompts) for _ in range(k)]
    correct = [0] * len(prompts)
    for start in range(0, len(flat), batch_size):
        chunk = flat[start : start + batch_size]
        enc = tokenizer([p for _, p in chunk], return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        gen = model.generate(
            **enc, do_sample=True, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
        texts = tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        for (i, _), text in zip(chunk, texts):
            reward = task.grade(text, task.heldout[i].row)[0]
            if reward is None:  # unparseable gold: the problem is reported and left out, never scored 0
                raise ValueError(f"held-out problem {i} of {task.name}: its gold answer cannot be parsed; fix or drop it")
            correct[i] += int(reward >= 1.0)
    tokenizer.padding_side = side
    model.train(was_training)
    return correct

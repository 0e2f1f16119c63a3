"""Tasks: training prompts, a held-out set, a grader that returns (reward, feedback), and a demonstration cutter.

Built in: ``countdown`` (the embedded testbed task), ``gsm``, ``code-basic``. Any ``*.jsonl``/``*.parquet`` path is
read as math problems with ``prompt`` and ``answer`` fields, graded on the final ``\\boxed{}`` answer with
math-verify; ``code:PATH`` (or ``code:hf:ORG/NAME[:split]``) as code problems with tests (:func:`code_rows_task`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from antisd.tasks import countdown as cd


@dataclass(frozen=True)
class EvalItem:
    messages: list[dict]
    row: dict


@dataclass(frozen=True)
class Task:
    name: str
    train_rows: list[dict]
    heldout: list[EvalItem]
    grade: Callable[[str, dict], tuple[float, str]]
    cut_demonstration: Callable[[str], str] | None
    extract: Callable[[str], str | None] | None = None  # the final answer, normalised, for maj@k
    trace_stats: Callable[[str], dict[str, float]] | None = None  # per-response counts logged by evaluation (eval/<name>)
    feedback: Callable[[float, dict], str | None] | None = None
    """(reward, row) → the teacher's feedback line in the task's own words (code: "Your code passes N of M test
    cases.", paper §7.3); None: the settings' correct/incorrect strings."""

    def reward_fn(self, workers: int = 2, deadline_s: float | None = 120.0):
        """A TRL reward function over this task's columns. A step's completions are graded on ``workers``
        threads (each math grade in its own worker process) within one ``deadline_s`` for the whole step."""
        from antisd.tasks.math_grading import grade_parallel

        grade = self.grade

        def correctness(completions, **kwargs) -> list[float]:
            # dataset columns arrive as lists, one value per completion; TRL's own kwargs are skipped
            columns = {k: v for k, v in kwargs.items() if k not in ("prompts", "completion_ids") and isinstance(v, list) and len(v) == len(completions)}
            rows = [dict(zip(columns, values)) for values in zip(*columns.values())] if columns else [{}] * len(completions)
            graded = grade_parallel(grade, [(_text(c), row) for c, row in zip(completions, rows)], workers, deadline_s)
            rewards = [g[0] for g in graded]
            if kwargs.get("log_metric") is not None:  # None = unparseable gold: excluded by TRL, counted here
                kwargs["log_metric"]("reward/gold_unparseable", float(sum(r is None for r in rewards)))
            return rewards

        return correctness


def duplicates_and_overlap(task: Task) -> tuple[int, int]:
    """(training rows whose prompt repeats an earlier training prompt, held-out problems whose prompt is also a
    training prompt): counted so that a run can say so before it trains."""
    key = lambda prompt: json.dumps(prompt, sort_keys=True, ensure_ascii=False)  # noqa: E731
    seen: set[str] = set()
    repeats = 0
    for row in task.train_rows:
        k = key(row["prompt"])
        repeats += k in seen
        seen.add(k)
    return repeats, sum(key(item.messages) in seen for item in task.heldout)


def _text(completion) -> str:
    return completion[-1]["content"] if isinstance(completion, list) else completion


def countdown_task(n_train: int = 2000, n_heldout: int = 64, seed: int = 0) -> Task:
    def row(p: cd.Problem) -> dict:
        sol = cd.solutions(p)[0]  # a worked reference solution: usable as privileged context when no sibling is correct
        reference = f"{cd.try_line(sol, p)}\nanswer: {cd.format_expr(sol)}"
        return {"prompt": [{"role": "user", "content": p.prompt}], "numbers": list(p.numbers), "target": p.target, "reference": reference}

    def grade(text: str, r: dict) -> tuple[float, str]:
        g = cd.grade(text, cd.Problem(tuple(r["numbers"]), int(r["target"])))
        return g.reward, g.feedback

    train = [row(p) for p in cd.generate(n_train, seed, "train")]
    held = [EvalItem(row(p)["prompt"], row(p)) for p in cd.generate(n_heldout, seed, "heldout")]
    def extract(text: str) -> str | None:
        expr = cd.parse_answer(text)
        return None if expr is None else cd.format_expr(expr)

    return Task("countdown", train, held, grade, cd.truncate_demonstration, extract, cd.trace_stats)


def _boxed(text: str) -> str | None:
    from antisd.tasks.math_grading import last_boxed

    boxed = last_boxed(text)
    return None if boxed is None else " ".join(boxed.split())


def cut_after_last_boxed(text: str) -> str:
    """Cut a math demonstration right after the closing brace of its last ``\\boxed{...}`` (release
    ``truncate_solution_at_correct_answer``: a correct sibling's graded answer is its last boxed one). No box: as is."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return text
    depth = 0
    for j in range(start + len("\\boxed"), len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[: j + 1]
    return text


def read_jsonl_rows(path: str | Path, required: tuple[str, ...] = ("prompt", "answer")) -> list[dict]:
    """Rows of a JSONL file (``.jsonl.gz`` too); a malformed line or a missing/empty field raises naming the line and
    the field."""
    import gzip

    rows = []
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such file")
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="strict") as f:
        try:
            lines = f.readlines()
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not UTF-8 text (byte {e.start})") from None
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected an object, got {type(row).__name__}")
            for key in required:
                if key not in row or row[key] in (None, ""):
                    raise ValueError(f"{path}:{lineno}: field {key!r} is missing or empty")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def math_rows_task(name: str, rows: list[dict], prompt_field: str = "prompt", answer_field: str = "answer", heldout_fraction: float = 0.1, source: str | None = None) -> Task:
    """A boxed-answer math task from rows; a row without a prompt or answer raises naming the file (or data set),
    the 1-based row and the field."""
    from antisd.tasks.math_grading import math_grade

    def row(i: int, r: dict) -> dict:
        for key in (prompt_field, answer_field):
            if r.get(key) in (None, "", []):
                where = f"{source}:{i + 1}" if source else f"{name}: row {i + 1}"
                raise ValueError(f"{where}: field {key!r} is missing or empty (fields: {sorted(r)})")
        p = r[prompt_field]
        prompt = p if isinstance(p, list) else [{"role": "user", "content": str(p)}]
        return {"prompt": prompt, "answer": str(r[answer_field])} | ({"reference": r["reference"]} if r.get("reference") else {})

    rows = [row(i, r) for i, r in enumerate(rows)]
    n_held = max(1, int(len(rows) * heldout_fraction)) if len(rows) > 1 else 0
    held = [EvalItem(r["prompt"], r) for r in rows[:n_held]]
    return Task(name, rows[n_held:] or rows, held, lambda text, r: math_grade(text, r["answer"]), cut_after_last_boxed, _boxed)


def local_rows(path: str) -> list[dict]:
    if path.endswith(".jsonl"):
        return read_jsonl_rows(path, required=())
    if path.endswith(".parquet"):
        from datasets import Dataset

        return list(Dataset.from_parquet(path))
    raise ValueError(f"{path}: expected a .jsonl or .parquet file")


def hub_rows(dataset_id: str, split: str = "train") -> list[dict]:
    """Rows of a Hugging Face dataset from the local cache (or the hub when it is reachable and allowed)."""
    try:
        from datasets import load_dataset

        return list(load_dataset(dataset_id, split=split))
    except Exception as e:  # noqa: BLE001 — any failure means "not available here"; say so plainly
        raise FileNotFoundError(f"dataset {dataset_id!r} (split {split}) is not available on this machine ({type(e).__name__}); use a local .jsonl/.parquet copy") from None


BOXED_INSTRUCTION = " Put the final answer in \\boxed{}."


def gsm_task(n_train: int = 2000, n_heldout: int = 64, seed: int = 0) -> Task:
    """GSM-style word problems generated offline by reasoning-gym's ``gsm_symbolic`` (optional dependency).

    The worked solution (``answer_cot``) is kept as the row's ``reference`` (usable as privileged context); its
    closing ``#### N`` line is rewritten as ``\\boxed{N}``. Held-out problems never share a question with train.
    """
    try:
        import reasoning_gym
    except ImportError:
        raise ImportError("the 'gsm' task needs reasoning-gym: pip install reasoning-gym") from None
    from antisd.tasks.math_grading import math_grade

    def rows(size: int, s: int) -> list[dict]:
        out = []
        for x in reasoning_gym.create_dataset("gsm_symbolic", size=size, seed=s):
            cot = str(x["metadata"].get("answer_cot", "")).strip()
            lines = cot.splitlines()
            if lines and lines[-1].startswith("####"):
                lines[-1] = f"The final answer is \\boxed{{{x['answer']}}}."
            out.append({"prompt": [{"role": "user", "content": x["question"] + BOXED_INSTRUCTION}], "answer": str(x["answer"]), "reference": "\n".join(lines)})
        return out

    train = rows(n_train, seed)
    seen = {r["prompt"][0]["content"] for r in train}
    held = [r for r in rows(n_heldout * 2, seed + 1_000_003) if r["prompt"][0]["content"] not in seen][:n_heldout]
    return Task("gsm", train, [EvalItem(r["prompt"], r) for r in held], lambda text, r: math_grade(text, r["answer"]), cut_after_last_boxed, _boxed)


@dataclass(frozen=True)
class HubDataset:
    """A training set on the Hugging Face hub: where it is and how its gold answer is read."""

    hf_id: str
    config: str | None
    split: str
    prompt_field: str
    answer_field: str
    gold: str  # "field": the answer field as is; "hash": after "####" (GSM8K); "boxed": the last \boxed{} (MATH)


HUB_DATASETS = {
    "dapo": HubDataset("open-r1/DAPO-Math-17k-Processed", "all", "train", "prompt", "solution", "field"),
    "gsm8k": HubDataset("openai/gsm8k", "main", "train", "question", "answer", "hash"),
    "math": HubDataset("DigitalLearningGmbH/MATH-lighteval", "default", "train", "problem", "solution", "boxed"),
}


def hub_task(name: str) -> Task:
    """A named hub training set (``dapo``, ``gsm8k``, ``math``), gold answers normalised for the boxed grader."""
    from antisd.tasks.math_grading import last_boxed

    spec = HUB_DATASETS[name]
    try:
        from datasets import load_dataset

        raw = list(load_dataset(spec.hf_id, spec.config, split=spec.split))
    except Exception as e:  # noqa: BLE001 — any failure means "not available here"; say so plainly
        raise FileNotFoundError(f"data set {name!r} ({spec.hf_id}) is not available on this machine ({type(e).__name__}); use a local .jsonl/.parquet copy with --prompt_field/--answer_field") from None
    rows = []
    for r in raw:
        text = str(r[spec.answer_field])
        gold = {"field": text, "hash": text.split("####")[-1].strip(), "boxed": last_boxed(text) or ""}[spec.gold]
        reference = text if spec.gold != "field" else None
        prompt = r[spec.prompt_field]
        if isinstance(prompt, str) and "\\boxed" not in prompt:  # our grader reads the final \boxed{} answer
            prompt = prompt + BOXED_INSTRUCTION
        rows.append({"prompt": prompt, "answer": gold} | ({"reference": reference} if reference else {}))
    return math_rows_task(name, rows)


BUILT_IN = ("countdown", "gsm")  # generated in-process (sampled with replacement: repeats are by design)


def code_basic_task(n_train: int = 2000, n_heldout: int = 64, seed: int = 0) -> Task:
    """The shipped function-writing task (:mod:`antisd.tasks.code_basic`), graded in the sandbox: reward = the
    fraction of tests passed, feedback "Your code passes N of M test cases."; demonstrations cut after the code."""
    from antisd.tasks import code_basic

    heldout, train = code_basic.split(n_heldout, seed)
    return _code_task("code-basic", train[:n_train], heldout)


TESTS_FIELDS = ("tests", "ground_truth", "reward_model")
"""Where a code row's tests are looked for, in order, when no field is named: the plain layout, Dolci-RLZero's
``ground_truth`` (a list of assertions), verl's ``reward_model.ground_truth``."""


def code_rows_task(name: str, rows: list[dict], prompt_field: str = "prompt", tests_field: str | None = None, heldout_fraction: float = 0.1, source: str | None = None) -> Task:
    """A code task from rows (plain ``{prompt, tests, entry_point?}``, Dolci-RLZero ``{prompt, ground_truth}``, verl
    ``{prompt, reward_model: {ground_truth}}``; tests in any layout of :func:`antisd.tasks.code.tests_from`), graded
    in the sandbox like ``code-basic``. A bad row raises naming the file (or data set), the 1-based row and the field."""
    from antisd.tasks import code

    def row(i: int, r: dict) -> dict:
        where = f"{source}:{i + 1}" if source else f"{name}: row {i + 1}"
        field = tests_field or next((f for f in TESTS_FIELDS if r.get(f) not in (None, "", [])), TESTS_FIELDS[0])
        for key in (prompt_field, field):
            if r.get(key) in (None, "", []):
                raise ValueError(f"{where}: field {key!r} is missing or empty (fields: {sorted(r)})")
        value = r[field]["ground_truth"] if field == "reward_model" and isinstance(r[field], dict) else r[field]
        try:
            tests, entry_point = code.tests_from(value, r.get("entry_point"))
        except ValueError as e:
            raise ValueError(f"{where}: field {field!r}: {e}") from None
        p = r[prompt_field]
        prompt = list(p) if isinstance(p, (list, tuple)) else [{"role": "user", "content": str(p)}]
        extra = {k: r[k] for k in ("reference", "prefix") if r.get(k)}
        return {"prompt": prompt, "tests": tests} | ({"entry_point": entry_point} if entry_point else {}) | extra

    rows = [row(i, r) for i, r in enumerate(rows)]
    if len({isinstance(t, str) for r in rows for t in r["tests"]}) > 1:  # assertions and stdin/stdout pairs mixed:
        rows = [r | {"tests": json.dumps(r["tests"])} for r in rows]  # one column type for the training data set
    n_held = max(1, int(len(rows) * heldout_fraction)) if len(rows) > 1 else 0
    return _code_task(name, rows[n_held:] or rows, rows[:n_held])


def _code_task(name: str, train: list[dict], heldout: list[dict]) -> Task:
    from antisd.tasks import code

    return Task(name, train, [EvalItem(r["prompt"], r) for r in heldout], grade_code_row, code.cut_after_code, code.extract_code, feedback=code.feedback_of_reward)


def grade_code_row(text: str, row: dict) -> tuple[float, str]:
    """A code task's grader, (reward, feedback) for one completion and its row (the code benchmarks use it too)."""
    from antisd.tasks.code import grade_code

    g = grade_code(text, row)
    return g.reward, g.feedback


def _code_source(spec: str, prompt_field: str, tests_field: str | None) -> Task:
    """``code:PATH.jsonl``, ``code:PATH.parquet`` or ``code:hf:ORG/NAME[:split]``."""
    if spec.startswith("hf:"):
        dataset_id, _, split = spec[3:].partition(":")
        return code_rows_task(dataset_id, hub_rows(dataset_id, split or "train"), prompt_field, tests_field)
    if not spec.endswith((".jsonl", ".parquet")):
        raise ValueError(f"--task code:{spec}: expected code:PATH.jsonl, code:PATH.parquet or code:hf:ORG/NAME[:split]")
    return code_rows_task(Path(spec).stem, local_rows(spec), prompt_field, tests_field, source=spec)


def load_task(name: str, seed: int = 0, n_heldout: int = 64, prompt_field: str = "prompt", answer_field: str = "answer") -> Task:
    """'countdown', 'gsm', 'code-basic' (offline), 'dapo' / 'gsm8k' / 'math' (hub, when reachable or cached), a local
    .jsonl/.parquet file, or 'hf:ORG/NAME[:split]' (boxed-answer math with the given field names); 'code:' before a
    file or hf: id reads code rows (``answer_field`` names the tests field; 'answer' looks for TESTS_FIELDS)."""
    if name.startswith("code:"):
        return _code_source(name[len("code:"):], prompt_field, None if answer_field == "answer" else answer_field)
    if name in HUB_DATASETS:
        return hub_task(name)
    if name == "countdown":
        return countdown_task(seed=seed, n_heldout=n_heldout)
    if name == "gsm":
        return gsm_task(seed=seed, n_heldout=n_heldout)
    if name == "code-basic":
        return code_basic_task(seed=seed, n_heldout=n_heldout)
    if name.endswith((".jsonl", ".parquet")):
        return math_rows_task(Path(name).stem, local_rows(name), prompt_field, answer_field, source=name)
    if name.startswith("hf:"):
        dataset_id, _, split = name[3:].partition(":")
        return math_rows_task(dataset_id, hub_rows(dataset_id, split or "train"), prompt_field, answer_field)
    raise ValueError(f"Unknown task {name!r}: use 'countdown', 'gsm', 'code-basic', {', '.join(HUB_DATASETS)}, a .jsonl/.parquet file, hf:ORG/NAME, or code:PATH / code:hf:ORG/NAME (code with tests)")

"""Code reasoning (paper §7.3): take the program from a completion, run its tests in the sandbox, reward the
fraction passed, and say so in the paper's words ("Your code passes N of M test cases.").

A row is ``{"prompt", "tests": [...], "entry_point"?, "prefix"?}``. A test is either a function-call test, a string
of Python run after the program (``"assert add(2, 3) == 5"``), or a stdin/stdout test, ``{"input": "...", "output":
"..."}`` (the program's stdout, stripped of trailing white space per line, must equal ``output``). Every test runs as
its own sandboxed program (:mod:`antisd.tasks.sandbox`), so a test that loops forever costs that test only.
``prefix`` (HumanEval: the prompt's imports, helpers and signature) runs before the program; a function the program
defines again replaces the prefix's. :func:`tests_from` reads the other layouts (Dolci-RLZero, APPS/verl ``prime_code``).

The program is the **last fenced code block** of the completion (```` ```python ```` or a bare ```` ``` ````, closed);
a completion without a closed block has no program and passes nothing. With an ``entry_point``, a program that does
not define that function passes nothing (its tests would only fail with a NameError).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from dataclasses import dataclass

from antisd.tasks.sandbox import Limits, run_python

_BLOCK = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", flags=re.DOTALL | re.IGNORECASE)
FEEDBACK = "Your code passes {passed} of {total} test cases."


@dataclass(frozen=True)
class CodeGrade:
    passed: int
    total: int
    reward: float
    feedback: str
    why: str
    """'graded', 'no code block', 'syntax error', 'missing entry point <name>', 'step deadline' (some tests were not
    run: the step's grading deadline had passed; they count as failed)."""


def extract_code(completion: str) -> str | None:
    """The last closed fenced code block of ``completion`` (its body), or None."""
    blocks = _BLOCK.findall(completion)
    return blocks[-1] if blocks else None


def cut_after_code(completion: str) -> str:
    """A demonstration cut right after its last closed code block (the rest is commentary on a finished program)."""
    matches = list(_BLOCK.finditer(completion))
    return completion[: matches[-1].end()] if matches else completion


def grade_code(completion: str, row: dict, limits: Limits = Limits(), binary: bool = False) -> CodeGrade:
    """Run ``row['tests']`` against the completion's program. Reward: the fraction passed (``binary``: 1 only when
    every test passes). Inside :func:`antisd.tasks.math_grading.grade_parallel` each test's wall limit is cut to what
    remains of the step's deadline, and tests past it are not run (they fail; ``why`` says 'step deadline')."""
    tests = row_tests(row)
    program = extract_code(completion)
    why = _unrunnable(program, row.get("entry_point"))
    passed = 0
    for test in [] if why else tests:
        left = _step_time_left(limits.wall_seconds)
        if left <= 0:
            why = "step deadline"
            break
        passed += _passes((row.get("prefix") or "") + program, test, dataclasses.replace(limits, wall_seconds=left))
    reward = float(passed == len(tests)) if binary else passed / len(tests)
    return CodeGrade(passed, len(tests), reward, FEEDBACK.format(passed=passed, total=len(tests)), why or "graded")


def row_tests(row: dict) -> list:
    """A row's tests: a list, or its JSON text (rows whose tests mix kinds are stored as JSON: one Arrow type)."""
    tests = row["tests"]
    return json.loads(tests) if isinstance(tests, str) else list(tests)


def _step_time_left(seconds: float) -> float:
    from antisd.tasks.math_grading import time_left  # the grading thread's step deadline (grade_parallel)

    return time_left(seconds)


def tests_from(value, entry_point: str | None = None) -> tuple[list, str | None]:
    """(tests, entry_point) from the layouts code data sets use; raises ValueError saying what it got.

    - a list of tests (``"assert ..."`` strings, ``{"input", "output"}`` dicts): the plain layout, and Dolci-RLZero's
      ``ground_truth`` (a list of assertion strings);
    - ``{"tests": [...], "entry_point"?}``;
    - ``{"inputs": [...], "outputs": [...], "fn_name"?}`` (APPS / TACO, verl's ``prime_code``): stdin/stdout pairs, or,
      with ``fn_name``, calls ``fn_name(*inputs[i]) == outputs[i]``;
    - any of these as a JSON string (verl's ``reward_model.ground_truth`` is often one)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"tests: a string that is not JSON ({value[:60]!r}...)") from None
    if isinstance(value, dict) and "tests" in value:
        return tests_from(value["tests"], value.get("entry_point") or entry_point)
    if isinstance(value, dict) and "inputs" in value and "outputs" in value:
        inputs, outputs, fn = list(value["inputs"]), list(value["outputs"]), value.get("fn_name")
        if len(inputs) != len(outputs):
            raise ValueError(f"tests: {len(inputs)} inputs but {len(outputs)} outputs")
        if fn:
            return [f"assert {fn}(*{i!r}) == {o!r}" for i, o in zip(inputs, outputs)], fn
        return [{"input": _joined(i), "output": _joined(o)} for i, o in zip(inputs, outputs)], entry_point
    if isinstance(value, (list, tuple)) and value and all(_is_test(t) for t in value):
        return list(value), entry_point
    raise ValueError(f"tests: expected a non-empty list of assertion strings or {{'input', 'output'}} objects, {{'tests': [...]}} or "
                     f"{{'inputs': [...], 'outputs': [...]}}, got {type(value).__name__} {str(value)[:60]!r}")  # fmt: skip


def _is_test(test) -> bool:
    return (isinstance(test, str) and test.strip() != "") or (isinstance(test, dict) and "input" in test and "output" in test)


def _joined(value) -> str:
    return "\n".join(map(str, value)) if isinstance(value, list) else str(value)


def feedback_of_reward(reward: float, row: dict) -> str:
    """The paper's feedback line from a fraction-passed reward and the row's test count (a TRL reward is a float)."""
    total = len(row_tests(row))
    return FEEDBACK.format(passed=round(reward * total), total=total)


def _unrunnable(program: str | None, entry_point: str | None) -> str | None:
    if program is None:
        return "no code block"
    try:
        tree = ast.parse(program)
    except SyntaxError:
        return "syntax error"
    defined = {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    if entry_point and entry_point not in defined:
        return f"missing entry point {entry_point}"
    return None


def _passes(program: str, test, limits: Limits) -> bool:
    if isinstance(test, str):  # function-call test: the program, then the assertion
        return run_python(program + "\n\n" + test + "\n", limits=limits).status == "ok"
    result = run_python(program, stdin=str(test["input"]), limits=limits)
    return result.status == "ok" and _lines(result.stdout) == _lines(str(test["output"]))


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.strip().splitlines()]

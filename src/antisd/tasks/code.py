"""Code reasoning (paper §7.3): take the program from a completion, run its tests in the sandbox, reward the
fraction passed, and say so in the paper's words ("Your code passes N of M test cases.").

A row is ``{"prompt", "tests": [...], "entry_point"?}``. A test is either a function-call test, a string of Python
run after the program (``"assert add(2, 3) == 5"``), or a stdin/stdout test, ``{"input": "...", "output": "..."}``
(the program's stdout, stripped of trailing white space per line, must equal ``output``). Every test runs as its
own sandboxed program (:mod:`antisd.tasks.sandbox`), so a test that loops forever costs that test only.

The program is the **last fenced code block** of the completion (```` ```python ```` or a bare ```` ``` ````, closed);
a completion without a closed block has no program and passes nothing. With an ``entry_point``, a program that does
not define that function passes nothing (its tests would only fail with a NameError).
"""

from __future__ import annotations

import ast
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
    """'graded', 'no code block', 'syntax error', 'missing entry point <name>'."""


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
    every test passes)."""
    tests = list(row["tests"])
    program = extract_code(completion)
    why = _unrunnable(program, row.get("entry_point"))
    passed = 0 if why else sum(_passes(program, test, limits) for test in tests)
    reward = float(passed == len(tests)) if binary else passed / len(tests)
    return CodeGrade(passed, len(tests), reward, FEEDBACK.format(passed=passed, total=len(tests)), why or "graded")


def feedback_of_reward(reward: float, row: dict) -> str:
    """The paper's feedback line from a fraction-passed reward and the row's test count (a TRL reward is a float)."""
    total = len(row["tests"])
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

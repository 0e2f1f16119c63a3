"""verl reward functions for the tasks antisd grades: ``reward.custom_reward_function.path`` points here.

``compute_score(data_source, solution_str, ground_truth, extra_info)`` is verl's custom-reward signature (its reward
loop calls it once per response, in a thread). A dict result's extra keys land in each row's
``extra_fields["reward_extra_info"]``; the AntiSD trainer passes the ``feedback`` key to the teacher pass, so the
teacher reads the task's own words (code: "Your code passes N of M test cases.", paper §7.3). No verl imports.

- **code** (``data_source`` containing ``code``, or one of :data:`CODE_SOURCES`): ``ground_truth`` holds the tests in
  any layout of :func:`antisd.tasks.code.tests_from` (Dolci-RLZero's list of assertions, APPS/``prime_code``
  ``{"inputs", "outputs", "fn_name"?}``, ``{"tests": [...], "entry_point"?}``, or their JSON text); each test runs in
  antisd's sandbox. Score: the fraction passed (``extra_info["binary"]`` true: 1 only when all pass).
- **math** (anything else): the last ``\\boxed{}`` answer against ``ground_truth`` with math-verify, 1 or 0 (a gold
  answer math-verify cannot parse scores 0 and says so in ``gold_unparseable``).
"""

from __future__ import annotations

CODE_SOURCES = ("apps", "taco", "codecontests", "codeforces", "humaneval", "mbpp")


def is_code(data_source: str) -> bool:
    source = str(data_source).lower()
    return "code" in source or source.split("/")[-1] in CODE_SOURCES


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict:
    """{"score", "feedback", ...}: verl's custom reward function (module docstring)."""
    extra_info = extra_info or {}
    if is_code(data_source):
        return code_score(solution_str, ground_truth, extra_info)
    return math_score(solution_str, ground_truth)


def code_score(solution_str: str, ground_truth, extra_info: dict) -> dict:
    from antisd.tasks.code import grade_code, tests_from
    from antisd.tasks.sandbox import isolation

    tests, entry_point = tests_from(ground_truth, extra_info.get("entry_point"))
    row = {"tests": tests} | ({"entry_point": entry_point} if entry_point else {})
    g = grade_code(solution_str, row, binary=bool(extra_info.get("binary", False)))
    return {"score": g.reward, "feedback": g.feedback, "passed": g.passed, "total": g.total, "why": g.why, "isolation": isolation()}


def math_score(solution_str: str, ground_truth) -> dict:
    from antisd.tasks.math_grading import math_grade

    reward, _ = math_grade(solution_str, str(ground_truth))  # its feedback line is the settings' (correct/incorrect)
    return {"score": float(reward or 0.0), "gold_unparseable": reward is None}

"""Math reward with feedback: the final marked answer checked against the gold answer with math-verify.

Rules:
- A response is correct only if its final answer is *marked*: the last ``\\boxed{...}`` (default), or the last
  ``#### N`` line for data sets that declare that format (GSM8K). A number that merely appears in free text is
  not an answer and is never matched.
- The gold answer is parsed first. An unparseable gold answer is reported (reason ``gold_unparseable``) and its
  reward is None, so TRL leaves the row out of the group baseline; it is never scored 0 silently.
- Every parse/verify runs in a worker process with a wall-clock timeout that really bounds the time (a hung
  sympy call is killed with its worker), so grading is safe from threads, data-loader workers and Ray actors
  (math-verify's own signal-based timeouts only work on a main thread).
"""

from __future__ import annotations

import multiprocessing as mp
import re
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Callable

CORRECT = "Your answer is correct."
INCORRECT = "Your answer is incorrect."
_HASH_RE = re.compile(r"^\s*####\s*(.+?)\s*$", flags=re.MULTILINE)


@dataclass(frozen=True)
class MathGrade:
    reward: float | None
    feedback: str | None
    reason: str  # correct, wrong, no_answer, gold_unparseable, timeout


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` with balanced braces (nested braces included), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed{") - 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j]
    return None


def marked_answer(text: str, answer_format: str = "boxed") -> str | None:
    """The final marked answer of a response, or None when it has none."""
    if answer_format == "boxed":
        return last_boxed(text)
    if answer_format == "hash":
        found = _HASH_RE.findall(text)
        return found[-1] if found else None
    raise ValueError(f"answer_format must be 'boxed' or 'hash', got {answer_format!r}")


def _verify(marked: str, gold: str) -> str:
    """Runs in the worker process (its main thread, so math-verify's own timeouts also work)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    gold_parsed = parse(f"${gold}$", extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()])
    if all(isinstance(x, str) for x in gold_parsed):  # only the raw-string fallback: nothing was understood
        return "gold_unparseable"
    pred = parse(f"$\\boxed{{{marked}}}$", extraction_config=[LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False)])
    return "correct" if pred and verify(gold_parsed, pred) else "wrong"


class BoundedRunner:
    """Runs a picklable function in a single worker process with a hard wall-clock limit per call.

    On a timeout the worker is killed and replaced, so a hung call costs at most ``timeout_s``.
    """

    def __init__(self):
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"))
        return self._pool

    def call(self, fn: Callable, *args, timeout_s: float):
        with self._lock:  # one call at a time per runner: the worker is single-threaded
            future = self._executor().submit(fn, *args)
            try:
                return future.result(timeout=timeout_s)
            except FutureTimeout:
                self._kill()
                raise TimeoutError(f"{getattr(fn, '__name__', fn)} exceeded {timeout_s} s") from None

    def _kill(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.kill()
            pool.shutdown(wait=False, cancel_futures=True)


_RUNNER = BoundedRunner()


def math_grade_detail(text: str, gold: str, answer_format: str = "boxed", timeout_s: float = 10.0) -> MathGrade:
    marked = marked_answer(text, answer_format)
    if marked is None or not marked.strip():
        return MathGrade(0.0, INCORRECT, "no_answer")
    try:
        verdict = _RUNNER.call(_verify, marked, str(gold), timeout_s=timeout_s)
    except TimeoutError:
        return MathGrade(0.0, INCORRECT, "timeout")
    if verdict == "gold_unparseable":
        return MathGrade(None, None, "gold_unparseable")
    return MathGrade(1.0, CORRECT, "correct") if verdict == "correct" else MathGrade(0.0, INCORRECT, "wrong")


def math_grade(text: str, gold: str, answer_format: str = "boxed") -> tuple[float | None, str | None]:
    g = math_grade_detail(text, gold, answer_format)
    return g.reward, g.feedback

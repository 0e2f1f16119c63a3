"""Math reward with feedback: the final marked answer checked against the gold answer with math-verify.

Rules:
- A response is correct only if its final answer is *marked*: the last ``\\boxed{...}`` (default), or the last
  ``#### N`` line for data sets that declare that format (GSM8K). A number that merely appears in free text is
  not an answer and is never matched.
- The gold answer is parsed first, whatever the completion holds (cached per gold string). An unparseable gold
  answer is reported (reason ``gold_unparseable``) and its reward is None, so TRL leaves the row out of the group
  baseline; it is never scored 0 silently.
- math-verify's own internal timeouts come back as ``timeout`` (not "wrong"), and its log lines (which echo the
  whole answer) are silenced in the worker; a worker that dies is replaced.
- Every parse/verify runs in a worker process with a wall-clock timeout that really bounds the time (a hung
  sympy call is killed with its worker), so grading is safe from threads, data-loader workers and Ray actors
  (math-verify's own signal-based timeouts only work on a main thread).
"""

from __future__ import annotations

import multiprocessing as mp
import re
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Callable

CORRECT = "Your answer is correct."
INCORRECT = "Your answer is incorrect."
# [ \t] rather than \s: \s would run across blank lines from every line start (quadratic on 32k newlines).
_HASH_RE = re.compile(r"^[ \t]*####[ \t]*(.+?)[ \t]*$", flags=re.MULTILINE)


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


def _worker_setup() -> None:
    """In the worker: no echo of megabyte answers from math-verify's log lines, and integers of any length."""
    import logging
    import sys

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)


def _parse_gold(gold: str):
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    parsed = parse(f"${gold}$", extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()], raise_on_error=True)
    return None if all(isinstance(x, str) for x in parsed) else parsed  # only the raw-string fallback: not understood


def _gold_status(gold: str) -> str:
    """Runs in the worker: 'ok', 'gold_unparseable' or 'timeout' (math-verify's own)."""
    from math_verify.errors import TimeoutException

    _worker_setup()
    try:
        return "ok" if _parse_gold(gold) is not None else "gold_unparseable"
    except TimeoutException:
        return "timeout"
    except Exception:  # noqa: BLE001 — any failure to parse the gold makes it unparseable
        return "gold_unparseable"


def _verify(marked: str, gold: str) -> str:
    """Runs in the worker process (its main thread, so math-verify's own timeouts also work).
    Returns correct, wrong, gold_unparseable or timeout (math-verify's internal timeouts are reported as such)."""
    from math_verify import LatexExtractionConfig, parse, verify
    from math_verify.errors import TimeoutException

    _worker_setup()
    try:
        gold_parsed = _parse_gold(gold)
        if gold_parsed is None:
            return "gold_unparseable"
        pred = parse(f"$\\boxed{{{marked}}}$", extraction_config=[LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False)], raise_on_error=True)
        return "correct" if pred and verify(gold_parsed, pred, raise_on_error=True) else "wrong"
    except TimeoutException:
        return "timeout"
    except Exception:  # noqa: BLE001 — an answer math-verify cannot compare is not correct
        return "wrong"


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
            for attempt in (1, 2):  # a worker that died (OOM, a crash in a C extension) is replaced once
                future = self._executor().submit(fn, *args)
                try:
                    return future.result(timeout=timeout_s)
                except FutureTimeout:
                    self._kill()
                    raise TimeoutError(f"{getattr(fn, '__name__', fn)} exceeded {timeout_s} s") from None
                except BrokenProcessPool:
                    self._kill()
                    if attempt == 2:
                        raise

    def _kill(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.kill()
            pool.shutdown(wait=False, cancel_futures=True)


_RUNNER = BoundedRunner()
_LOCAL = threading.local()
_POOLS: dict = {}


def _runner() -> BoundedRunner:
    """The calling thread's runner: the main thread shares one worker; each grading thread gets its own."""
    if threading.current_thread() is threading.main_thread():
        return _RUNNER
    if not hasattr(_LOCAL, "runner"):
        _LOCAL.runner = BoundedRunner()
    return _LOCAL.runner


def time_left(timeout_s: float) -> float:
    """This call's timeout: ``timeout_s``, cut to what remains of the thread's grading deadline (if any)."""
    deadline = getattr(_LOCAL, "deadline", None)
    return timeout_s if deadline is None else min(timeout_s, deadline - time.monotonic())


def grade_parallel(grade: Callable, items: list, workers: int = 2, deadline_s: float | None = 120.0) -> list:
    """``[grade(*item) for item in items]`` on ``workers`` threads, each with its own worker process, all within
    one wall-clock deadline: a call that would start or run past it comes back as a timeout (``grade`` must
    honour it through :func:`math_grade_detail`). Returns results in order."""
    from concurrent.futures import ThreadPoolExecutor

    deadline = None if deadline_s is None else time.monotonic() + deadline_s

    def one(item):
        _LOCAL.deadline = deadline
        try:
            return grade(*item)
        finally:
            _LOCAL.deadline = None

    if workers <= 1 or len(items) <= 1:
        return [one(item) for item in items]
    if workers not in _POOLS:  # kept for the life of the process: its threads keep their worker processes warm
        _POOLS[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="antisd-grade")
    return list(_POOLS[workers].map(one, items))


_GOLD: dict[str, str] = {}  # gold answer → ok / gold_unparseable, parsed once per process


def gold_status(gold: str, timeout_s: float = 10.0) -> str:
    """Whether a gold answer can be parsed ('ok', 'gold_unparseable', 'timeout'), cached per gold string."""
    if gold not in _GOLD:
        left = time_left(timeout_s)
        try:
            status = _runner().call(_gold_status, gold, timeout_s=left) if left > 0 else "timeout"
        except TimeoutError:
            status = "timeout"
        if status == "timeout":
            return status  # not cached: a timeout says nothing about the gold
        _GOLD[gold] = status
    return _GOLD[gold]


def math_grade_detail(text: str, gold: str, answer_format: str = "boxed", timeout_s: float = 10.0) -> MathGrade:
    """The gold answer is parsed first, always: an unparseable gold is reported whatever the completion holds."""
    gold = str(gold)
    status = gold_status(gold, timeout_s)
    if status == "gold_unparseable":
        return MathGrade(None, None, "gold_unparseable")
    if status == "timeout":
        return MathGrade(0.0, INCORRECT, "timeout")
    marked = marked_answer(text, answer_format)
    if marked is None or not marked.strip():
        return MathGrade(0.0, INCORRECT, "no_answer")
    left = time_left(timeout_s)
    if left <= 0:  # the step's grading deadline has passed
        return MathGrade(0.0, INCORRECT, "timeout")
    try:
        verdict = _runner().call(_verify, marked, gold, timeout_s=left)
    except TimeoutError:
        return MathGrade(0.0, INCORRECT, "timeout")
    if verdict == "gold_unparseable":
        return MathGrade(None, None, "gold_unparseable")
    if verdict == "timeout":
        return MathGrade(0.0, INCORRECT, "timeout")
    return MathGrade(1.0, CORRECT, "correct") if verdict == "correct" else MathGrade(0.0, INCORRECT, "wrong")


def math_grade(text: str, gold: str, answer_format: str = "boxed") -> tuple[float | None, str | None]:
    g = math_grade_detail(text, gold, answer_format)
    return g.reward, g.feedback

"""Countdown-3: reach a target from three numbers with two operations, ``(a o b) o c``, o ∈ {+, −, ×}.

Why this task for the embedded testbed: there are up to 54 candidate expressions per problem and nothing but
search finds the right one, so a solver's trace naturally mixes *deliberation* (``try … no``, ``wait``) with
*structural* tokens that follow once the answer is known (``yes``, the ``answer:`` line). The grader is exact
arithmetic, so rewards are verifiable and cheap.

Trace format (one try per line; the grader reads only the last ``answer:`` line):

    try 3 * 5 = 15 + 7 = 22 yes
    answer: ( 3 * 5 ) + 7

Splits: a problem belongs to held-out iff a hash of its sorted number triple is 0 mod 10, so train and held-out
share no number triple at all, whatever the seed.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
from dataclasses import dataclass

OPS = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y}
CORRECT_FEEDBACK = "Your answer is correct."
INCORRECT_FEEDBACK = "Your answer is incorrect."
MAX_TARGET = 200
# Numbers of at most 9 digits: the given numbers are 1..9, and a longer one (Python refuses int() of over 4,300
# digits) is simply a wrong answer, never an exception in the grader.
_ANSWER_RE = re.compile(r"^answer:\s*\(\s*(\d{1,9})\s*([-+*])\s*(\d{1,9})\s*\)\s*([-+*])\s*(\d{1,9})\s*$")


@dataclass(frozen=True)
class Problem:
    numbers: tuple[int, int, int]
    target: int

    @property
    def prompt(self) -> str:
        a, b, c = self.numbers
        return f"Use {a} {b} {c} to make {self.target}."

    @property
    def answer(self) -> str:
        """One reference solution, in the answer-line format."""
        return f"answer: {format_expr(solutions(self)[0])}"


@dataclass(frozen=True)
class Grade:
    reward: float
    feedback: str
    reason: str  # "correct", "no_answer", "bad_numbers", "wrong_value"


Expr = tuple[int, str, int, str, int]


def evaluate(expr: Expr) -> int | None:
    """Value of (a o1 b) o2 c, or None if an intermediate is negative (not a legal Countdown step)."""
    a, o1, b, o2, c = expr
    first = OPS[o1](a, b)
    if first < 0:
        return None
    value = OPS[o2](first, c)
    return value if value >= 0 else None


def format_expr(expr: Expr) -> str:
    a, o1, b, o2, c = expr
    return f"( {a} {o1} {b} ) {o2} {c}"


def candidates(numbers: tuple[int, int, int]) -> list[Expr]:
    """All legal expressions over a permutation of the numbers, in a fixed order."""
    out = []
    for a, b, c in dict.fromkeys(itertools.permutations(numbers)):
        for o1, o2 in itertools.product(OPS, repeat=2):
            if evaluate((a, o1, b, o2, c)) is not None:
                out.append((a, o1, b, o2, c))
    return out


def solutions(problem: Problem) -> list[Expr]:
    return [e for e in candidates(problem.numbers) if evaluate(e) == problem.target]


def is_held_out(numbers: tuple[int, int, int]) -> bool:
    key = ",".join(map(str, sorted(numbers))).encode()
    return int(hashlib.sha256(key).hexdigest(), 16) % 10 == 0


def generate(n: int, seed: int, split: str = "train", low: int = 1, high: int = 9) -> list[Problem]:
    """``n`` problems of one split ("train" or "heldout"), reproducible from ``seed``."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    rng = random.Random(f"countdown-{split}-{seed}")
    out: list[Problem] = []
    while len(out) < n:
        numbers = tuple(rng.randint(low, high) for _ in range(3))
        if is_held_out(numbers) != (split == "heldout"):
            continue
        value = evaluate(rng.choice(candidates(numbers)))
        if value is not None and 1 <= value <= MAX_TARGET:
            out.append(Problem(numbers, value))
    return out


def parse_answer(text: str) -> Expr | None:
    """The last ``answer:`` line of a response, parsed; None when there is none or it is malformed."""
    for line in reversed(text.strip().splitlines()):
        match = _ANSWER_RE.match(line.strip())
        if match:
            a, o1, b, o2, c = match.groups()
            return int(a), o1, int(b), o2, int(c)
        if line.strip().startswith("answer:"):
            return None
    return None


def grade(text: str, problem: Problem) -> Grade:
    """Pure, total grader: reward 1 iff the final answer line uses exactly the given numbers and hits the target."""
    expr = parse_answer(text)
    if expr is None:
        return Grade(0.0, INCORRECT_FEEDBACK, "no_answer")
    if sorted((expr[0], expr[2], expr[4])) != sorted(problem.numbers):
        return Grade(0.0, INCORRECT_FEEDBACK, "bad_numbers")
    if evaluate(expr) != problem.target:
        return Grade(0.0, INCORRECT_FEEDBACK, "wrong_value")
    return Grade(1.0, CORRECT_FEEDBACK, "correct")


def truncate_demonstration(text: str) -> str:
    """Cut a demonstration right after its last answer line (the analogue of 'after the last correct \\boxed{}')."""
    lines = text.strip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].strip().startswith("answer:"):
            return "\n".join(lines[: i + 1])
    return text.strip()


# Varied wording (testbed v2, issue #12): the same search, said in several ways, so that a solver's tokens carry
# the entropy real reasoning traces have. The grader reads only the answer line, which never varies.
OPENERS = ("try", "let me try", "maybe", "check", "how about")
NO_WORDS = ("no", "nope", "not it", "no good")
YES_WORDS = ("yes", "that works", "got it")
DELIBERATION_LINES = ("wait", "hmm", "let me think", "another way", "actually")
EQUALS = ("=", "is", "gives", "makes")
CONFIDENT_OPENERS = ("clearly", "it must be", "surely")  # a solver that knows the answer does not hedge


def word(rng: random.Random, options: tuple[str, ...], skew: float = 0.0) -> str:
    """One of ``options``: uniformly (skew 0: v1, v2), or with Zipf weights ∝ rank^−skew (testbed-v3, issue #23: a
    uniform choice among k wordings makes the entropy at that position exactly ln k, a plateau no real text has)."""
    if skew == 0.0:
        return rng.choice(options)
    return rng.choices(options, weights=[(rank + 1) ** -skew for rank in range(len(options))])[0]


def try_line(expr: Expr, problem: Problem, rng: random.Random | None = None, openers: tuple[str, ...] = OPENERS, skew: float = 0.0) -> str:
    """One try; with ``rng`` the opener (from ``openers``), the verbs and the verdict are drawn from the varied
    wordings (:func:`word` with ``skew``)."""
    a, o1, b, o2, c = expr
    first = OPS[o1](a, b)
    value = OPS[o2](first, c)
    hit = value == problem.target
    if rng is None:
        return f"try {a} {o1} {b} = {first} {o2} {c} = {value} {'yes' if hit else 'no'}"
    verdict = word(rng, YES_WORDS if hit else NO_WORDS, skew)
    return f"{word(rng, openers, skew)} {a} {o1} {b} {word(rng, EQUALS, skew)} {first} {o2} {c} {word(rng, EQUALS, skew)} {value} {verdict}"


_TRY_RE = re.compile(r"\d+\s*[-+*]\s*\d+")


def trace_stats(text: str) -> dict[str, float]:
    """How much a response deliberates: ``tries`` (lines computing an expression, the answer line excluded) and
    ``deliberation_lines`` (lines that are a deliberation phrase alone: ``wait``, ``hmm``, ...)."""
    lines = [line.strip() for line in text.strip().splitlines()]
    tries = sum(1 for line in lines if _TRY_RE.search(line) and not line.startswith("answer:"))
    return {"tries": float(tries), "deliberation_lines": float(sum(line in DELIBERATION_LINES for line in lines))}


def deliberation_line(rng: random.Random, varied: bool, skew: float = 0.0) -> str:
    return word(rng, DELIBERATION_LINES, skew) if varied else "wait"


def search_trace(
    problem: Problem, rng: random.Random, max_tries: int = 4, p_wait: float = 0.3, avoid: Expr | None = None, varied: bool = False, skew: float = 0.0,
) -> tuple[str, bool]:
    """A synthetic search: random tries without replacement, a deliberation line before later tries with ``p_wait``
    (``wait``, or with ``varied`` one of several phrases, and varied try wording).

    Returns (trace, solved). When no try hits, the last try is given as the answer (and is wrong).
    """
    pool = [e for e in candidates(problem.numbers) if e != avoid]
    rng.shuffle(pool)
    lines: list[str] = []
    chosen = pool[0]
    for k, expr in enumerate(pool[:max_tries]):
        if k and rng.random() < p_wait:
            lines.append(deliberation_line(rng, varied, skew))
        lines.append(try_line(expr, problem, rng if varied else None, skew=skew))
        chosen = expr
        if evaluate(expr) == problem.target:
            break
    lines.append(f"answer: {format_expr(chosen)}")
    return "\n".join(lines), evaluate(chosen) == problem.target

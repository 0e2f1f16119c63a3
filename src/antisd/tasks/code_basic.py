"""``code-basic``: a shipped, procedurally generated function-writing task (offline), graded in the sandbox.

Eight families of small problems (arithmetic, strings, lists), each drawn with random constants, so that a few
hundred distinct problems exist (at most :data:`PER_FAMILY` of each, so that no family dominates); every test is
computed by a reference implementation in this file, and the reference solution is kept as the row's ``reference``
(a demonstration with ``demonstration_source`` falling back to it). A fixed pool of :data:`HELDOUT` problems is held
out; no held-out prompt is a training prompt.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

INSTRUCTION = "\nAnswer with the complete function in one ```python code block."


@dataclass(frozen=True)
class Family:
    name: str
    make: Callable[[random.Random], tuple[str, str, str, Callable, list]]
    """rng → (function name, statement, reference source, reference function, test arguments)."""


def _add_k(rng):
    k = rng.randint(2, 99)
    return "add_k", f"returns x plus {k}", f"def add_k(x):\n    return x + {k}\n", lambda x: x + k, [(rng.randint(-50, 50),) for _ in range(3)]


def _repeat(rng):
    n, sep = rng.randint(2, 9), rng.choice(["", "-", " ", ",", "|", "+", "."])
    words = ["ab", "xyz", "q", "hello"]
    statement = f"returns the string s repeated {n} times" if not sep else f"returns {n} copies of the string s joined by {sep!r}"
    src = f"def repeat(s):\n    return {sep!r}.join([s] * {n})\n"
    return "repeat", statement, src, lambda s: sep.join([s] * n), [(w,) for w in rng.sample(words, 3)]


def _sum_multiples(rng):
    m = rng.randint(2, 50)
    src = f"def sum_multiples(xs):\n    return sum(x for x in xs if x % {m} == 0)\n"
    lists = [tuple(rng.choice([rng.randint(-20, 20), m * rng.randint(-3, 3)]) for _ in range(rng.randint(0, 6))) for _ in range(3)]
    return "sum_multiples", f"returns the sum of the numbers in the list xs that are divisible by {m}", src, lambda xs: sum(x for x in xs if x % m == 0), [(list(x),) for x in lists]


def _count_char(rng):
    c, fold = rng.choice("abcdefghijklmnopqrstuvwxyz"), rng.random() < 0.5
    texts = ["banana split", "Test Case", "A sea of Stars", "mississippi", "", "The Quick Brown Fox Jumps", "zebra quiz, vexing joy"]
    ref = (lambda s: s.lower().count(c)) if fold else (lambda s: s.count(c))  # noqa: E731
    statement = f"returns how many times the letter '{c}' occurs in the string s" + (", ignoring case" if fold else " (lower case only)")
    src = f"def count_char(s):\n    return s{'.lower()' if fold else ''}.count('{c}')\n"
    return "count_char", statement, src, ref, [(t,) for t in rng.sample(texts, 3)]


def _spread(rng):
    k = rng.randint(1, 50)
    lists = [[rng.randint(-30, 30) for _ in range(rng.randint(1, 6))] for _ in range(3)]
    src = f"def spread(xs):\n    return (max(xs) - min(xs)) * {k}\n"
    return "spread", f"returns the largest number in the non-empty list xs minus the smallest, times {k}", src, lambda xs: (max(xs) - min(xs)) * k, [(x,) for x in lists]


CASES = {"": "", "upper": ".upper()", "lower": ".lower()", "title": ".title()"}


def _reverse_words(rng):
    sep, case = rng.choice([" ", "-", ",", "_", "+", "/", ";", ":", "|", "."]), rng.choice(list(CASES))
    texts = ["one two three", "a b", "solo", "The quick brown Fox"]
    src = f"def reverse_words(s):\n    return {sep!r}.join(reversed(s.split())){CASES[case]}\n"
    statement = f"returns the words of the string s in reverse order, joined by {sep!r}" + (f", in {case} case" if case else "")
    ref = lambda s: getattr(sep.join(reversed(s.split())), case or "strip")()  # noqa: E731  (strip: no-op on joined words)
    return "reverse_words", statement, src, ref, [(t,) for t in rng.sample(texts, 3)]


def _clip(rng):
    lo = rng.randint(-10, 5)
    hi = lo + rng.randint(1, 20)
    src = f"def clip(x):\n    return max({lo}, min({hi}, x))\n"
    return "clip", f"returns x limited to the range from {lo} to {hi} (inclusive)", src, lambda x: max(lo, min(hi, x)), [(lo - 5,), (hi + 3,), ((lo + hi) // 2,)]


def _label(rng):
    a, b = rng.sample([2, 3, 5, 7, 11, 13], 2)  # coprime: divisible by both = divisible by a·b
    one, two = rng.choice([("Fizz", "Buzz"), ("Foo", "Bar")])
    src = (f"def label(n):\n    if n % {a * b} == 0:\n        return '{one}{two}'\n    if n % {a} == 0:\n        return '{one}'\n"
           f"    if n % {b} == 0:\n        return '{two}'\n    return str(n)\n")  # fmt: skip
    ref = lambda n: one + two if n % (a * b) == 0 else one if n % a == 0 else two if n % b == 0 else str(n)  # noqa: E731
    statement = f"returns '{one}{two}' if n is divisible by both {a} and {b}, '{one}' if only by {a}, '{two}' if only by {b}, else str(n)"
    return "label", statement, src, ref, [(a * b,), (a,), (b,), (1,)]


FAMILIES = [Family(f.__name__.lstrip("_"), f) for f in (_add_k, _repeat, _sum_multiples, _count_char, _spread, _reverse_words, _clip, _label)]


def problem(rng: random.Random) -> dict:
    """One problem row: prompt (chat messages), tests (assertions), entry_point, reference (a fenced solution)."""
    family = rng.choice(FAMILIES)
    name, statement, source, reference, args = family.make(rng)
    tests = [f"assert {name}({', '.join(map(repr, a))}) == {reference(*a)!r}" for a in args]
    prompt = f"Write a Python function `{name}` that {statement}.{INSTRUCTION}"
    return {"prompt": [{"role": "user", "content": prompt}], "tests": tests, "entry_point": name,
            "reference": f"```python\n{source}```", "family": family.name}  # fmt: skip


def generate(n: int, seed: int, split: str) -> list[dict]:
    """``n`` problems with distinct prompts ('train' or 'heldout': disjoint seeds); fewer if the families run out."""
    rng = random.Random(f"code-basic:{split}:{seed}")
    rows, seen = [], set()
    for _ in range(50 * n):
        row = problem(rng)
        key = row["prompt"][0]["content"]  # the model sees the prompt only: one prompt, one problem
        if key not in seen:
            seen.add(key)
            rows.append(row)
        if len(rows) == n:
            break
    return rows


PER_FAMILY = 64
"""Distinct problems kept per family (the first drawn)."""
HELDOUT = 128
"""Size of the held-out pool: fixed, so that which problems are held out never depends on how many are evaluated."""


def split(n_heldout: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(held-out, train): every distinct prompt the families make, each family split in proportion into a fixed
    held-out pool of :data:`HELDOUT` problems (at least one per family) and the training rest. The pool is ordered
    round-robin over families, so its first ``n_heldout`` problems cover the families evenly; training never sees
    any of the pool, whatever ``n_heldout`` (at most HELDOUT) is."""
    if not 0 <= n_heldout <= HELDOUT:
        raise ValueError(f"code-basic holds out {HELDOUT} problems; {n_heldout} requested")
    rows = generate(5000, seed, "all")
    by_family: dict[str, list[dict]] = {}
    for row in rows:
        members = by_family.setdefault(row["family"], [])
        if len(members) < PER_FAMILY:
            members.append(row)
    total = sum(map(len, by_family.values()))
    pools, train = [], []
    for members in by_family.values():
        k = min(max(1, round(len(members) * HELDOUT / total)), len(members) - 1)
        pools.append(members[:k])
        train += members[k:]
    heldout = [pool[i] for i in range(max(map(len, pools))) for pool in pools if i < len(pool)]  # round-robin
    return heldout[:n_heldout], train

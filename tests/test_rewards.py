"""Math grader: table of hard cases, marked answers only, unparseable gold, bounded time."""

from __future__ import annotations

import time

import pytest

from antisd.tasks.math_grading import BoundedRunner, last_boxed, marked_answer, math_grade, math_grade_detail

TABLE = [
    # (response, gold, reward)
    ("so \\boxed{\\frac{1}{2}}", "0.5", 1.0),
    ("\\boxed{1/2}", "\\frac{1}{2}", 1.0),  # \frac vs /
    ("\\boxed{\\frac{2}{4}}", "\\frac{1}{2}", 1.0),
    ("\\boxed{1,000}", "1000", 1.0),  # thousands separator
    ("\\boxed{1000}", "1,000", 1.0),
    ("\\boxed{\\sqrt{2}/2}", "\\frac{\\sqrt{2}}{2}", 1.0),
    ("\\boxed{\\boxed{7}}", "7", 1.0),  # nested boxes
    ("\\boxed{(0, 1]}", "(0,1]", 1.0),  # interval
    ("\\boxed{[0, 1]}", "(0,1]", 0.0),  # a different interval
    ("\\boxed{10\\%}", "10", 1.0),  # percent
    ("\\boxed{5 \\text{ cm}}", "5", 1.0),  # units
    ("first \\boxed{3} then corrected \\boxed{4}", "4", 1.0),  # the last box counts
    ("first \\boxed{4} then corrected \\boxed{3}", "4", 0.0),
    ("\\boxed{3}", "4", 0.0),
    ("\\boxed{\\pi}", "3.14159", 0.0),
    ("the answer is 4", "4", 0.0),  # an unmarked number is not an answer
    ("4", "4", 0.0),
    ("\\boxed{}", "4", 0.0),
    ("\\boxed{x^2+2x+1}", "(x+1)^2", 1.0),
]


@pytest.mark.parametrize("response, gold, reward", TABLE)
def test_grader_table(response, gold, reward):
    got, feedback = math_grade(response, gold)
    assert got == reward
    assert feedback == ("Your answer is correct." if reward == 1.0 else "Your answer is incorrect.")


def test_hash_format_for_gsm8k_style_data():
    assert marked_answer("work...\n#### 72", "hash") == "72"
    assert math_grade("48/2 = 24\n#### 72", "72", answer_format="hash")[0] == 1.0
    assert math_grade("The answer is 72.", "72", answer_format="hash")[0] == 0.0
    with pytest.raises(ValueError, match="answer_format"):
        marked_answer("x", "json")


def test_unparseable_gold_is_reported_not_scored_zero():
    g = math_grade_detail("\\boxed{3}", "\\frac{")
    assert (g.reward, g.feedback, g.reason) == (None, None, "gold_unparseable")


def test_last_boxed_handles_braces():
    assert last_boxed("\\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{a} and \\boxed{{b}}") == "{b}"
    assert last_boxed("\\boxed{unclosed") is None


def _hang(seconds: float) -> str:
    time.sleep(seconds)
    return "done"


def test_a_hanging_verification_is_bounded_in_time():
    runner = BoundedRunner()
    assert runner.call(_hang, 0.0, timeout_s=30) == "done"  # warm worker
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="exceeded 1.0 s"):
        runner.call(_hang, 60.0, timeout_s=1.0)
    assert time.monotonic() - start < 5.0
    assert runner.call(_hang, 0.0, timeout_s=30) == "done"  # a fresh worker replaced the killed one


def test_grading_works_from_a_thread():
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda r: math_grade(r, "2")[0], ["\\boxed{2}", "\\boxed{3}", "\\boxed{4/2}"]))
    assert results == [1.0, 0.0, 1.0]


# --- issue #11: grading keeps its promises -------------------------------------------------------------------


def test_unparseable_gold_is_reported_even_without_a_boxed_answer():
    from antisd.tasks.math_grading import math_grade_detail

    for text in ("no answer here", "\\boxed{3}"):
        g = math_grade_detail(text, "\\frac{")
        assert (g.reward, g.reason) == (None, "gold_unparseable"), text


def test_a_dead_grading_worker_is_replaced():
    import os
    import signal

    from antisd.tasks.math_grading import _RUNNER, math_grade_detail

    assert math_grade_detail("\\boxed{2}", "2").reason == "correct"
    for proc in list(getattr(_RUNNER._executor(), "_processes", {}).values()):
        os.kill(proc.pid, signal.SIGKILL)
    assert math_grade_detail("\\boxed{5}", "5").reason == "correct"


def test_math_verify_internal_timeout_is_reported_as_timeout(monkeypatch):
    import math_verify
    from math_verify.errors import TimeoutException

    from antisd.tasks.math_grading import _verify

    def slow(*args, **kwargs):
        raise TimeoutException("Timeout during comparison")

    monkeypatch.setattr(math_verify, "verify", slow)
    assert _verify("2", "2") == "timeout"


def test_hash_answer_regex_is_linear():
    import time

    from antisd.tasks.math_grading import marked_answer

    text = "\n" * 32000 + "#### 72\n" + " \n" * 32000
    start = time.perf_counter()
    assert marked_answer(text, "hash") == "72"
    assert time.perf_counter() - start < 0.5  # the old \s* pattern took 4.9 s here


def test_a_100k_digit_gold_is_parsed():
    from antisd.tasks.math_grading import math_grade_detail

    big = "9" * 100_000
    assert math_grade_detail(f"\\boxed{{{big}}}", big).reason == "correct"


def test_a_step_of_64_adversarial_completions_finishes_within_its_deadline():
    """Issue #11: grading is parallel (one worker per thread) and bounded per step: past the deadline every
    remaining call is a timeout at once. Stated bound: the deadline + 15 s (worker start-up and one kill)."""
    import time

    from antisd.tasks.math_grading import grade_parallel, math_grade_detail

    tower = "\\boxed{" + "9^{" * 40 + "9" + "}" * 40 + "}"  # a power tower: sympy's evaluation does not finish
    items = [(tower, "1")] * 64
    start = time.perf_counter()
    results = grade_parallel(math_grade_detail, items, workers=2, deadline_s=6.0)
    elapsed = time.perf_counter() - start
    assert len(results) == 64 and all(r.reward in (0.0, None) for r in results)
    assert elapsed < 6.0 + 15.0, elapsed
    assert sum(r.reason == "timeout" for r in results) >= 60  # bounded by the deadline, not graded one by one


def _gold_rows(tmp_path):
    import json as _json

    f = tmp_path / "g.jsonl"
    rows = [{"prompt": "What is 1+1?", "answer": "2"}, {"prompt": "Broken gold", "answer": "\\frac{"}] * 5
    f.write_text("".join(_json.dumps(r) + "\n" for r in rows))
    return f


def test_unparseable_gold_is_counted_on_the_training_path(tmp_path):
    from antisd.tasks import load_task

    task = load_task(str(_gold_rows(tmp_path)))
    logged = {}
    rewards = task.reward_fn()(["no boxed answer", "\\boxed{2}"], answer=["\\frac{", "2"], log_metric=lambda k, v: logged.update({k: v}))
    assert rewards == [None, 1.0] and logged == {"reward/gold_unparseable": 1.0}


def test_unparseable_gold_stops_held_out_evaluation_naming_the_problem(tmp_path, monkeypatch):
    from antisd.evaluation import heldout as evaluation
    from antisd.tasks import EvalItem, Task, load_task

    task = load_task(str(_gold_rows(tmp_path)))
    broken = Task(task.name, task.train_rows, [EvalItem([{"role": "user", "content": "Broken gold"}], {"answer": "\\frac{"})], task.grade, None, None)

    class Tok:
        def apply_chat_template(self, messages, **kwargs):
            return messages[-1]["content"]

        def decode(self, ids, **kwargs):
            return "no boxed answer"

    monkeypatch.setattr(evaluation, "sample", lambda *a, **k: [(0, [1])])
    with pytest.raises(ValueError, match="held-out problem 0 of g: its gold answer cannot be parsed"):
        evaluation.evaluate(None, Tok(), broken, k=1)


def test_unparseable_gold_is_excluded_and_reported_by_antisd_eval(tmp_path, monkeypatch):
    from antisd.commands import eval as eval_command

    class Tok:
        def apply_chat_template(self, messages, **kwargs):
            return messages[-1]["content"]

    import json as _json

    f = tmp_path / "m.jsonl"
    f.write_text("".join(_json.dumps(r) + "\n" for r in [{"problem": "What is 1+1?", "answer": "2"}, {"problem": "Broken gold", "answer": "\\frac{"}] * 5))
    monkeypatch.setattr(eval_command, "generate", lambda cfg, model, tok, prompts, k, partial=None: [["no boxed answer"] * k for _ in prompts])
    cfg = eval_command.EvalConfig(benchmarks=["math500"], data=[f"math500={f}"], k=1, problems=0)
    from antisd.evaluation.sets import load_benchmark

    result = eval_command.evaluate_benchmark(cfg, None, Tok(), "math500", load_benchmark("math500", str(f)))
    assert result["excluded"] and all(x["reason"] == "gold_unparseable" for x in result["excluded"])
    assert len(result["excluded"]) == 5

"""Countdown task: grader table, generator determinism, split disjointness."""

from __future__ import annotations

import random

import pytest

from antisd.tasks import countdown as cd
from antisd.tasks import load_task, read_jsonl_rows

P = cd.Problem((3, 5, 7), 22)

GRADER_TABLE = [
    ("try 3 * 5 = 15 + 7 = 22 yes\nanswer: ( 3 * 5 ) + 7", 1.0, "correct"),
    ("answer: ( 5 * 3 ) + 7", 1.0, "correct"),  # commuted
    ("answer: (5*3)+7", 1.0, "correct"),  # spacing
    ("answer: ( 7 + 5 ) * 3\nanswer: ( 3 * 5 ) + 7", 1.0, "correct"),  # the last answer line counts
    ("answer: ( 3 * 5 ) + 7\nanswer: ( 7 + 5 ) * 3", 0.0, "wrong_value"),
    ("answer: ( 3 * 5 ) + 8", 0.0, "bad_numbers"),
    ("answer: ( 3 * 5 ) + 7 + 0", 0.0, "no_answer"),  # malformed final line is not an answer
    ("try 3 * 5 = 15 + 7 = 22 yes", 0.0, "no_answer"),  # a correct try without an answer line
    ("the answer is 22", 0.0, "no_answer"),
    ("", 0.0, "no_answer"),
    ("answer: ( 3 - 5 ) + 7", 0.0, "wrong_value"),  # negative intermediate is illegal
    ("answer: ( " + "9" * 5000 + " + 1 ) - 2", 0.0, "no_answer"),  # past int()'s 4,300-digit limit: not an exception
    ("answer: ( 123456789 * 5 ) + 7", 0.0, "bad_numbers"),  # 9 digits still parse
]


@pytest.mark.parametrize("text, reward, reason", GRADER_TABLE)
def test_grader_table(text, reward, reason):
    g = cd.grade(text, P)
    assert (g.reward, g.reason) == (reward, reason)
    assert g.feedback == (cd.CORRECT_FEEDBACK if reward == 1.0 else cd.INCORRECT_FEEDBACK)


def test_generator_is_deterministic_and_splits_disjoint():
    a, b = cd.generate(300, seed=5), cd.generate(300, seed=5)
    assert a == b
    assert cd.generate(50, seed=6) != cd.generate(50, seed=5)
    held = cd.generate(300, seed=5, split="heldout")
    train_triples = {tuple(sorted(p.numbers)) for p in a}
    held_triples = {tuple(sorted(p.numbers)) for p in held}
    assert not train_triples & held_triples
    assert all(cd.solutions(p) for p in a + held)  # every problem is solvable
    assert all(1 <= p.target <= cd.MAX_TARGET for p in a)


def test_reference_answer_and_traces_grade_consistently():
    rng = random.Random(0)
    for p in cd.generate(40, seed=1):
        assert cd.grade(p.answer, p).reward == 1.0
        trace, solved = cd.search_trace(p, rng)
        assert cd.grade(trace, p).reward == float(solved)
        assert cd.truncate_demonstration(trace + "\nextra chatter") == trace


def test_task_reward_fn_reads_dataset_columns():
    task = load_task("countdown", n_heldout=2)
    row = task.train_rows[0]
    problem = cd.Problem(tuple(row["numbers"]), row["target"])
    fn = task.reward_fn()
    rewards = fn(
        completions=[[{"role": "assistant", "content": problem.answer}], [{"role": "assistant", "content": "nope"}]],
        prompts=[row["prompt"]] * 2, completion_ids=[[1], [2]], numbers=[row["numbers"]] * 2, target=[row["target"]] * 2,
        trainer_state=None,
    )  # fmt: skip
    assert rewards == [1.0, 0.0]


def test_jsonl_rows_name_the_bad_line(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"prompt": "1+1?", "answer": "2"}\n{"prompt": "2+2?"}\n')
    with pytest.raises(ValueError, match=r"d.jsonl:2: field 'answer' is missing"):
        read_jsonl_rows(f)
    f.write_text('{"prompt": "1+1?", "answer": "2"}\nnot json\n')
    with pytest.raises(ValueError, match=r"d.jsonl:2: not valid JSON"):
        read_jsonl_rows(f)
    with pytest.raises(ValueError, match="Unknown task"):
        load_task("gsm9k")


def test_gsm_task_offline_with_reference_solutions():
    task = load_task("gsm", n_heldout=5)
    assert len(task.train_rows) == 2000 and len(task.heldout) == 5
    train_q = {r["prompt"][0]["content"] for r in task.train_rows}
    assert not any(item.messages[0]["content"] in train_q for item in task.heldout)
    for item in task.heldout:
        assert item.messages[0]["content"].endswith("Put the final answer in \\boxed{}.")
        assert task.grade(item.row["reference"], item.row) == (1.0, "Your answer is correct.")
        assert task.grade(item.row["answer"], item.row)[0] == 0.0  # a bare number is not a marked answer


def test_models_registry_errors(monkeypatch, tmp_path):
    from antisd.infra.models import load_model
    from antisd.infra.models import install

    monkeypatch.setenv("ANTISD_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="antisd models install smollm2-135m"):
        load_model("smollm2-135m")
    with pytest.raises(KeyError, match="installable"):
        install("gpt-5")


def test_math_rows_field_mapping_and_bad_rows(tmp_path, monkeypatch):
    from antisd.tasks import math_rows_task

    rows = [{"q": "1+1?", "sol": "2"}, {"q": "2+2?", "sol": "4"}, {"q": "3+3?", "sol": ""}]
    with pytest.raises(ValueError, match=r"row 3: field 'sol' is missing or empty"):  # 1-based: the third row
        math_rows_task("d", rows, prompt_field="q", answer_field="sol")
    task = math_rows_task("d", rows[:2], prompt_field="q", answer_field="sol")
    assert task.train_rows[0]["prompt"] == [{"role": "user", "content": "2+2?"}] and task.heldout[0].row["answer"] == "2"
    from datasets import Dataset

    Dataset.from_list(rows[:2]).to_parquet(str(tmp_path / "d.parquet"))
    assert len(load_task(str(tmp_path / "d.parquet"), prompt_field="q", answer_field="sol").heldout) == 1
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="not available on this machine"):
        load_task("hf:open-r1/DAPO-Math-17k-Processed")


def test_named_hub_datasets_fail_clearly_offline(monkeypatch):
    from antisd.tasks import HUB_DATASETS

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert HUB_DATASETS["dapo"].hf_id == "open-r1/DAPO-Math-17k-Processed"  # the deduplicated version
    for name in HUB_DATASETS:
        with pytest.raises(FileNotFoundError, match=f"data set '{name}'.*not available on this machine"):
            load_task(name)


def test_trace_stats_count_tries_and_deliberation_lines():
    text = "let me try 3 * 5 is 15 + 7 gives 22 no\nhmm\nwait\ncheck 5 - 3 = 2 * 7 = 14 yes\nanswer: ( 5 - 3 ) * 7"
    assert cd.trace_stats(text) == {"tries": 2.0, "deliberation_lines": 2.0}
    assert cd.trace_stats("answer: ( 1 + 2 ) + 3") == {"tries": 0.0, "deliberation_lines": 0.0}
    from antisd.tasks import countdown_task

    task = countdown_task(n_train=4, n_heldout=2)
    assert task.trace_stats is cd.trace_stats


def test_evaluation_reports_length_and_trace_stats_sharded_or_not(monkeypatch):
    """eval/mean_length and eval/tries are means over every sample, the same whether one process evaluates all
    problems or two processes each take half and gather."""
    from antisd.evaluation import heldout as evaluation
    from antisd.tasks import countdown_task

    task = countdown_task(n_train=4, n_heldout=3)
    texts = {1: "try 1 + 2 = 3 + 3 = 6 no\nanswer: ( 1 + 2 ) + 3", 2: "try 1 + 2 = 3 + 3 = 6 no\nwait\ntry 1 * 2 = 2 * 3 = 6 no\nanswer: ( 1 * 2 ) * 3"}

    class Tok:
        def apply_chat_template(self, messages, **kwargs):
            return messages[-1]["content"]

        def decode(self, ids, **kwargs):
            return texts[ids[0]]

    index = {item.messages[-1]["content"]: i for i, item in enumerate(task.heldout)}

    def fake_sample(model, tok, prompts, k, **kw):  # held-out problem i: i+1 tokens per sample, text by parity
        return [(j, [1 + index[p] % 2] * (index[p] + 1)) for j, p in enumerate(prompts) for _ in range(k)]

    monkeypatch.setattr(evaluation, "sample", fake_sample)
    whole = evaluation.evaluate(None, Tok(), task, k=2)
    # problems 0, 1, 2 → 1, 2, 3 tokens; texts 1, 2, 1 → 1, 2, 1 tries; 0, 1, 0 deliberation lines
    assert whole.mean_length == pytest.approx(2.0)
    assert whole.trace == pytest.approx({"tries": 4 / 3, "deliberation_lines": 1 / 3})
    assert whole.metrics()["eval/tries"] == pytest.approx(4 / 3)
    local = {}  # two processes: each one's rows, then a gather that returns both
    for rank in range(2):
        evaluation.evaluate(None, Tok(), task, k=2, shard=(rank, 2), gather=lambda rows, r=rank: local.setdefault(r, rows))
    gathered = [evaluation.evaluate(None, Tok(), task, k=2, shard=(r, 2), gather=lambda rows: local[0] + local[1]) for r in range(2)]
    for g in gathered:
        assert (g.mean_length, g.trace, g.per_problem) == (whole.mean_length, whole.trace, whole.per_problem)

"""`antisd eval`: maj@k, benchmark loading, outputs through the real CLI."""

from __future__ import annotations

import json

import pytest

from antisd import cli
from antisd.evaluation.sets import load_benchmark
from antisd.commands.eval import majority


def test_majority_vote():
    assert majority(["1", "2", "1", None], [True, False, True, False]) is True
    assert majority(["2", "1", "2"], [False, True, False]) is False
    assert majority(["1", "2"], [False, True]) is False  # tie: the answer seen first wins
    assert majority([None, None], [False, False]) is False


def test_benchmark_offline_message_and_local_override(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="--data aime25=PATH"):
        load_benchmark("aime25")
    f = tmp_path / "aime.jsonl"
    f.write_text('{"problem": "What is 1+1?", "answer": "2"}\n{"problem": "3*3?", "answer": "9"}\n')
    task = load_benchmark("aime25", str(f))
    assert [i.row["answer"] for i in task.heldout] == ["2", "9"]
    assert task.grade("so \\boxed{2}", task.heldout[0].row)[0] == 1.0
    assert task.extract("\\boxed{ 9 }") == "9"
    with pytest.raises(KeyError, match="Unknown benchmark"):
        load_benchmark("aime99")


@pytest.mark.slow
def test_eval_cli_outputs(tmp_path, capsys):
    from tiny import make_tiny_model

    model = make_tiny_model(tmp_path / "tiny")
    out = tmp_path / "ev"
    assert cli.main(["eval", "--model", str(model), "--benchmarks", "countdown", "--k", "4", "--problems", "3", "--max_new_tokens", "8", "--output_dir", str(out)]) == 0
    assert f"results: {out / 'results.md'}" in capsys.readouterr().out  # where the outputs are
    res = json.loads((out / "results.json").read_text())["results"]["countdown"]
    assert res["k"] == 4 and res["n_problems"] == 3 and len(res["per_problem"]) == 3
    assert all(len(p["completions"]) == 4 for p in res["per_problem"])
    assert set(res["pass@"]) == {"1", "2", "3", "4"}
    assert res["pass@"]["1"] == pytest.approx(res["avg@4"])
    assert (out / "passk.png").stat().st_size > 0 and "| countdown | 3 | 0 | 4 |" in (out / "results.md").read_text()

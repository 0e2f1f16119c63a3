"""Privileged-context builder: sibling selection, templates, truncation."""

from __future__ import annotations

import pytest

from antisd import context as ctx


def test_select_demonstrations_first_other_correct_sibling():
    rewards = [1, 0, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert ctx.select_demonstrations(rewards, 4) == [2, 0, 0, 0, None, None, None, None, 9, 8, 8, 8]


def test_select_demonstrations_never_uses_own_text():
    assert ctx.select_demonstrations([0, 1, 0], 3) == [1, None, 1]  # the lone correct rollout gets no demo
    assert ctx.select_demonstrations([0, 1, 0], 3, exclude_self=False) == [1, 1, 1]


def test_select_demonstrations_threshold_and_nan():
    assert ctx.select_demonstrations([0.5, 0.99, float("nan"), 1.0], 4, threshold=1.0) == [3, 3, 3, None]
    with pytest.raises(ValueError, match="groups of 4"):
        ctx.select_demonstrations([1, 0, 1], 4)


def test_teacher_text_matches_paper_template_exactly():
    text = ctx.teacher_user_text("Solve x.", "x = 2", "Your answer is incorrect.", ctx.ContextTemplates())
    assert text == (
        "Solve x.\nYour previous attempt:\n\nx = 2\n\n\nPrevious assessment: Your answer is incorrect.\n"
        "\n\nNow solve this problem step by step.\n"
    )


def test_teacher_text_fallbacks():
    t = ctx.ContextTemplates()
    assert ctx.teacher_user_text("P", None, "Your answer is correct.", t) == (
        "P\nPrevious assessment: Your answer is correct.\n\n\nNow solve this problem step by step.\n"
    )
    assert ctx.teacher_user_text("P", None, None, t) == "P"  # no context: the teacher is the student (u = 0)
    assert "Previous assessment" not in ctx.teacher_user_text("P", "demo", None, t)


def test_teacher_messages_keep_system_and_replace_user():
    prompt = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    assert ctx.teacher_messages(prompt, "R") == [{"role": "system", "content": "S"}, {"role": "user", "content": "R"}]
    assert ctx.last_user_text(prompt) == "Q"
    with pytest.raises(ValueError, match="no user message"):
        ctx.last_user_text([{"role": "system", "content": "S"}])


def test_head_tail_truncate_keeps_quarter_head_and_tail():
    ids = list(range(100))
    out = ctx.head_tail_truncate(ids, 22, sep_ids=[-1, -1])
    assert out == list(range(5)) + [-1, -1] + list(range(85, 100))  # room 20: head 5, tail 15
    assert ctx.head_tail_truncate(ids[:10], 22, [-1]) == ids[:10]


def test_strip_thinking():
    assert ctx.strip_thinking("<think>hmm\nno</think>\nThe answer is \\boxed{2}") == "The answer is \\boxed{2}"


def test_demonstration_cleaner_cuts_and_budgets():
    cleaner = ctx.DemonstrationCleaner(
        tokenize=lambda s: list(s), detokenize=lambda ids: "".join(ids), max_tokens=10,
        cut_after_answer=lambda s: s.split("END")[0] + "END",
    )  # fmt: skip
    assert cleaner("abcEND tail junk") == ("abcEND", False)
    text, cut = cleaner("0123456789abcdefEND")
    assert cut and text.startswith("0") and text.endswith("END") and "\n...\n" in text

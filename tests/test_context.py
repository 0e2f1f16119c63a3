"""Privileged-context builder: sibling selection, templates, truncation."""

from __future__ import annotations

import pytest

from antisd.method import context as ctx
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
        cut_demonstration=lambda s: s.split("END")[0] + "END",
    )  # fmt: skip
    assert cleaner("abcEND tail junk") == ("abcEND", False)
    text, cut = cleaner("0123456789abcdefEND")
    assert cut and text.startswith("0") and text.endswith("END") and "\n...\n" in text


def _builder(settings, tokenize=lambda s: s.split()):
    cleaner = ctx.DemonstrationCleaner(tokenize=tokenize, detokenize=" ".join, max_tokens=settings.max_demonstration_tokens)
    return ctx.TeacherContextBuilder(settings, cleaner)


def test_builder_picks_siblings_by_group_id_wherever_they_sit():
    from antisd.method.settings import preset

    texts = ["a0", "b0", "a1", "b1"]
    rewards = [0.0, 1.0, 1.0, float("nan")]
    groups = ["A", "B", "A", "B"]  # verl-style uid, interleaved
    prompts = [[{"role": "user", "content": "P"}]] * 4
    teacher, stats = _builder(preset("antisd")).build(range(4), prompts, [None] * 4, texts, rewards, groups)
    assert "Your previous attempt:\n\na1" in teacher[0][-1]["content"]  # its group's correct member
    assert "Your previous attempt" not in teacher[2][-1]["content"]  # the lone correct one never sees itself
    assert "Your previous attempt:\n\nb0" in teacher[3][-1]["content"] and "Previous assessment" not in teacher[3][-1]["content"]
    assert stats["has_context"] == [True, True, True, True] and sum(stats["demonstration_rows"]) == 2


def test_builder_flags_rows_without_any_context():
    from antisd.method.settings import preset

    s = preset("antisd").replace(include_feedback=False)
    teacher, stats = _builder(s).build(range(2), ["P", "P"], [None, None], ["x", "y"], [0.0, 0.0], [0, 0])
    assert teacher == ["P", "P"] and stats["has_context"] == [False, False]


def test_release_message_list_keeps_everything_but_the_last_message():
    prompt = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}]
    assert ctx.teacher_messages(prompt, "R", "all_but_last") == prompt[:-1] + [{"role": "user", "content": "R"}]
    assert ctx.teacher_messages(prompt, "R") == [prompt[0], {"role": "user", "content": "R"}]


def test_release_demonstration_budget_depends_on_the_prompt():
    from antisd.method.settings import preset

    s = preset("antisd_release").replace(max_reprompt_len=320)
    builder = _builder(s)
    prompt = "w " * 10  # 10 tokens; feedback line 6 tokens ⇒ 320 − 10 − 6 − 300 = 4 < 128 ⇒ the floor, 128
    assert builder._demonstration_budget(prompt.strip(), "Your answer is correct.") == 128
    assert _builder(s.replace(max_reprompt_len=4096))._demonstration_budget("w", None) == 3072
    assert _builder(preset("antisd"))._demonstration_budget(prompt, "x") == 3072  # the paper preset: always max_demonstration_tokens


def test_teacher_prompt_ids_match_trl_string_tokenization_and_release_truncation():
    from antisd.method.settings import preset

    class Tok:
        def __call__(self, text, add_special_tokens=True):
            ids = [ord(c) for c in text]
            return {"input_ids": ([1] if add_special_tokens else []) + ids}

    ids, cut = ctx.teacher_prompt_ids(Tok(), "abc", preset("antisd"))
    assert ids == [1, 97, 98, 99] and not cut  # BOS as TRL's processing_class(text=...) gives the student
    long = "x" * 40
    ids, cut = ctx.teacher_prompt_ids(Tok(), long, preset("antisd_release").replace(max_reprompt_len=20))
    sep = [ord(c) for c in " ... "]
    assert cut and len(ids) == 20 and ids[5:10] == sep and ids[:5] == [1] + [120] * 4  # a third of the 15 kept at the head

"""Privileged context: the teacher's input for each rollout (paper App. C, digest §1.4).

For rollout i of a group, the teacher sees, in one user turn:
    {prompt}
    Your previous attempt:  <a *different* correct rollout of the same group>
    Previous assessment: Your answer is (in)correct.   <- the correctness of rollout i itself
    Now solve this problem step by step.
followed, in the assistant turn, by rollout i's own response tokens, which the teacher re-scores.

Defaults follow the released launchers: ``demonstration_source=group_only`` (no dataset fallback), the first eligible
sibling in batch order, never the rollout's own text, feedback included even with a solution, demonstrations cut
after their final answer and head/tail-truncated to ``max_demonstration_tokens`` (25% head, 75% tail). With no correct
sibling the feedback-only template is used; with neither solution nor feedback the bare prompt (u ≈ 0).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

from antisd.method.settings import AntiSDSettings

REPROMPT = "{prompt}{solution}{feedback}\n\nNow solve this problem step by step.\n"
SOLUTION = "\nYour previous attempt:\n\n{successful_previous_attempt}\n\n"
FEEDBACK = "\nPrevious assessment: {feedback_raw}\n"
REPROMPT_FEEDBACK_ONLY = "{prompt}{feedback}\n\nNow solve this problem step by step.\n"

_THINK_RE = re.compile(r"<think>.*?</think>\s*", flags=re.DOTALL)


@dataclass(frozen=True)
class ContextTemplates:
    """The four template strings of the released code (``SelfDistillationConfig`` defaults)."""

    reprompt: str = REPROMPT
    solution: str = SOLUTION
    feedback: str = FEEDBACK
    reprompt_feedback_only: str = REPROMPT_FEEDBACK_ONLY


def select_demonstrations(
    rewards: Sequence[float], group_size: int, threshold: float = 1.0, exclude_self: bool = True
) -> list[int | None]:
    """For each rollout, the index of the first successful *other* rollout in its group, or None.

    Args:
        rewards: [B] rewards in batch order, groups of ``group_size`` consecutive rollouts. NaN never succeeds.
        threshold: reward ≥ threshold counts as success.
        exclude_self: never pick the rollout itself (``dont_reprompt_on_self_success``).
    """
    if len(rewards) % group_size:
        raise ValueError(f"{len(rewards)} rewards do not split into groups of {group_size}")
    return select_demonstrations_by_group(rewards, [i // group_size for i in range(len(rewards))], threshold, exclude_self)


def select_demonstrations_by_group(
    rewards: Sequence[float], group_ids: Sequence[Hashable], threshold: float = 1.0, exclude_self: bool = True
) -> list[int | None]:
    """As :func:`select_demonstrations`, with groups named by id (verl's ``uid``) instead of consecutive runs.

    The pick is the first successful other member of the group in batch order, wherever the members sit.
    """
    if len(rewards) != len(group_ids):
        raise ValueError(f"{len(rewards)} rewards for {len(group_ids)} group ids")
    members: dict[Hashable, list[int]] = {}
    for i, g in enumerate(group_ids):
        members.setdefault(g, []).append(i)
    picks: list[int | None] = []
    for i, g in enumerate(group_ids):
        eligible = [j for j in members[g] if rewards[j] >= threshold and not (exclude_self and j == i)]
        picks.append(eligible[0] if eligible else None)
    return picks


def select_mismatched_demonstrations(rewards: Sequence[float], group_ids: Sequence[Hashable], threshold: float = 1.0) -> list[int | None]:
    """For each rollout, a successful rollout of *another* group (the control teacher's solution), or None.

    Groups are taken in order of first appearance; a rollout gets the first successful member of the next group
    (cyclically) that has one, so the pick is deterministic and never from its own group."""
    order: list[Hashable] = []
    first_success: dict[Hashable, int] = {}
    for i, g in enumerate(group_ids):
        if g not in order:
            order.append(g)
        if rewards[i] >= threshold and g not in first_success:
            first_success[g] = i
    picks = []
    for g in group_ids:
        k = order.index(g)
        others = [order[(k + d) % len(order)] for d in range(1, len(order))]
        picks.append(next((first_success[o] for o in others if o in first_success), None))
    return picks


def strip_thinking(text: str) -> str:
    return _THINK_RE.sub("", text)


def head_tail_truncate(ids: list[int], budget: int, sep_ids: list[int], head_fraction: float = 0.25) -> list[int]:
    """Keep ``head_fraction`` of the budget from the start and the rest from the end, joined by ``sep_ids``."""
    if len(ids) <= budget:
        return ids
    room = max(budget - len(sep_ids), 0)
    head = int(room * head_fraction)
    tail = room - head
    return ids[:head] + sep_ids + (ids[-tail:] if tail else [])


def teacher_user_text(prompt_text: str, demonstration: str | None, feedback: str | None, templates: ContextTemplates) -> str:
    """The reprompt text of the teacher's user turn."""
    feedback_text = templates.feedback.format(feedback_raw=feedback) if feedback else ""
    if demonstration:
        solution_text = templates.solution.format(successful_previous_attempt=demonstration)
        return templates.reprompt.format(prompt=prompt_text, solution=solution_text, feedback=feedback_text)
    if feedback:
        return templates.reprompt_feedback_only.format(prompt=prompt_text, feedback=feedback_text)
    return prompt_text


def teacher_messages(prompt_messages: list[dict], user_text: str, mode: str = "system_and_last_user") -> list[dict]:
    """The teacher's message list: one user message holding the reprompt text, after either the original system
    messages ('system_and_last_user') or every original message but the last ('all_but_last', the release)."""
    kept = prompt_messages[:-1] if mode == "all_but_last" else [m for m in prompt_messages if m.get("role") == "system"]
    return list(kept) + [{"role": "user", "content": user_text}]


# The release's demonstration budget: min(max_demonstration_tokens, max_reprompt_len − prompt − feedback − 300) ≥ 128.
RELEASE_BUDGET_MARGIN, RELEASE_BUDGET_FLOOR = 300, 128


def last_user_text(prompt_messages: list[dict]) -> str:
    users = [m for m in prompt_messages if m.get("role") == "user"]
    if not users:
        raise ValueError(f"prompt has no user message: {prompt_messages!r}")
    content = users[-1]["content"]
    if not isinstance(content, str):
        raise ValueError("multimodal prompts are not supported for the privileged context")
    return content


@dataclass
class DemonstrationCleaner:
    """Turns a sibling's decoded response into the demonstration text (cut, strip, token budget)."""

    tokenize: Callable[[str], list[int]]
    detokenize: Callable[[list[int]], str]
    max_tokens: int = 3072
    cut_demonstration: Callable[[str], str] | None = None
    """The task's rule that cuts a demonstration right after its final answer (None: keep it whole)."""
    remove_thinking: bool = False

    def __call__(self, text: str, max_tokens: int | None = None) -> tuple[str, bool]:
        """Returns (demonstration, was_truncated); ``max_tokens`` overrides the budget for this call."""
        budget = self.max_tokens if max_tokens is None else max_tokens
        if self.remove_thinking:
            text = strip_thinking(text)
        if self.cut_demonstration is not None:
            text = self.cut_demonstration(text)
        ids = self.tokenize(text)
        if len(ids) <= budget:
            return text, False
        return self.detokenize(head_tail_truncate(ids, budget, self.tokenize("\n...\n"))), True


@dataclass
class TeacherContextBuilder:
    """Builds each rollout's teacher prompt from its group: the one piece every framework shares.

    What a framework must give :meth:`build`, for the whole generation batch (all processes, batch order):
    - ``texts``: each rollout's decoded response (special tokens skipped);
    - ``rewards``: each rollout's scalar reward, NaN where it could not be scored (no feedback, never a demonstration);
    - ``group_ids``: which prompt each rollout answers (TRL: consecutive runs of G; verl: the ``uid``);
    and for the rows this process scores: ``rows`` (their indices in the batch), their ``prompts`` (a string or
    a list of chat messages, as the student saw them) and ``references`` (the row's reference solution or None).
    It returns the teacher prompts of those rows and counts for the ``antisd/*`` context metrics.
    """

    settings: AntiSDSettings
    clean: DemonstrationCleaner
    templates: ContextTemplates = ContextTemplates()

    def build(
        self, rows: Sequence[int], prompts: Sequence[Any], references: Sequence[Any], texts: Sequence[str], rewards: Sequence[float],
        group_ids: Sequence[Hashable], control: bool = False, feedback: Sequence[str | None] | None = None,
    ):  # fmt: skip
        """``control=True`` builds the control teacher's prompts instead (``settings.control``): wherever the teacher
        gets a solution, the control gets another group's correct rollout in the same template with the same
        feedback; a row whose teacher has a solution but for which no other group has one has no context.
        ``feedback`` (whole batch): the task's own feedback text per rollout (code: "Your code passes N of M test
        cases."), used instead of the settings' correct/incorrect strings where it is not None."""
        s = self.settings
        if len(rewards) != len(texts):
            raise RuntimeError(f"{len(rewards)} gathered rewards for {len(texts)} gathered completions")
        scored = [-math.inf if math.isnan(r) else r for r in rewards]
        picks = select_demonstrations_by_group(scored, group_ids, s.success_threshold)
        mismatched = select_mismatched_demonstrations(scored, group_ids, s.success_threshold) if control else None
        teacher = []
        stats = {key: [] for key in ("has_context", "demonstration_rows", "reference_rows", "truncated_rows", "control_missing_rows")}
        budgets: dict[tuple, int] = {}  # the G rollouts of a group share prompt and often feedback: count tokens once
        for g, prompt, reference in zip(rows, prompts, references):
            prompt_text = prompt if isinstance(prompt, str) else last_user_text(prompt)
            line = None
            if s.include_feedback and not math.isnan(rewards[g]):
                line = s.feedback_correct if rewards[g] >= s.success_threshold else s.feedback_incorrect
                line = feedback[g] if feedback is not None and feedback[g] is not None else line
            source, from_group = self._source(picks[g], texts, reference)
            missing = False
            if control and source:
                source = texts[mismatched[g]] if mismatched[g] is not None else None
                missing = source is None
            demonstration, cut = None, False
            if source:
                key = (prompt_text, line)
                if key not in budgets:
                    budgets[key] = self._demonstration_budget(prompt_text, line)
                demonstration, cut = self.clean(source, budgets[key])
            for name, flag in (("demonstration_rows", bool(source) and from_group), ("reference_rows", bool(source) and not from_group),
                               ("truncated_rows", cut), ("control_missing_rows", missing)):  # fmt: skip
                stats[name].append(flag)
            stats["has_context"].append(bool(demonstration or line) and not missing)
            user = teacher_user_text(prompt_text, demonstration, line, self.templates)
            teacher.append(user if isinstance(prompt, str) else teacher_messages(prompt, user, s.teacher_messages))
        return teacher, stats

    def _source(self, pick: int | None, texts: Sequence[str], reference: Any) -> tuple[Any, bool]:
        """The demonstration's source text and whether it is a sibling (settings.demonstration_source)."""
        mode = self.settings.demonstration_source
        if mode == "reference_only":
            return reference, False
        if pick is not None:
            return texts[pick], True
        return (reference if mode == "group_then_reference" else None), False

    def _demonstration_budget(self, prompt_text: str, feedback: str | None) -> int:
        s = self.settings
        if not s.demonstration_budget_from_prompt:
            return s.max_demonstration_tokens
        used = len(self.clean.tokenize(prompt_text)) + len(self.clean.tokenize(self.templates.feedback.format(feedback_raw=feedback) if feedback else ""))
        return max(min(s.max_demonstration_tokens, s.max_reprompt_len - used - RELEASE_BUDGET_MARGIN), RELEASE_BUDGET_FLOOR)


def builder_for_tokenizer(settings: AntiSDSettings, tokenizer: Any, cut_demonstration: Callable[[str], str] | None) -> TeacherContextBuilder:
    """The context builder of a trainer: demonstrations tokenized with ``tokenizer`` (a Hugging Face tokenizer),
    cut after their final answer with the task's ``cut_demonstration`` when ``settings.cut_demonstration``."""
    cleaner = DemonstrationCleaner(
        tokenize=lambda text: tokenizer(text, add_special_tokens=False)["input_ids"],
        detokenize=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
        max_tokens=settings.max_demonstration_tokens,
        cut_demonstration=cut_demonstration if settings.cut_demonstration else None,
        remove_thinking=settings.remove_thinking,
    )
    return TeacherContextBuilder(settings, cleaner)


def teacher_prompt_ids(tokenizer: Any, teacher_prompt: Any, settings: AntiSDSettings, chat_template_kwargs: dict | None = None) -> tuple[list[int], bool]:
    """Token ids of one teacher prompt (chat template with the generation prompt), head/tail cut to the budget.

    ``tokenizer`` is a Hugging Face tokenizer (duck-typed: ``__call__`` and ``apply_chat_template``). A string
    prompt is tokenized exactly as TRL tokenizes the student's string prompts (special tokens such as BOS
    included), so teacher and student differ only by the context. Returns (ids, was_truncated).
    """
    ids = prompt_ids(tokenizer, teacher_prompt, chat_template_kwargs)
    sep = tokenizer(settings.reprompt_separator, add_special_tokens=False)["input_ids"]
    budget = settings.max_reprompt_len
    return head_tail_truncate(ids, budget, sep, settings.reprompt_head_fraction), len(ids) > budget


def prompt_ids(tokenizer: Any, prompt: Any, chat_template_kwargs: dict | None = None) -> list[int]:
    """Token ids of a student or teacher prompt: a string as TRL tokenizes string prompts (special tokens such as
    BOS included), chat messages through the chat template with the generation prompt."""
    if isinstance(prompt, str):
        return list(tokenizer(prompt)["input_ids"])
    return list(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False, **(chat_template_kwargs or {})))

"""The teacher pass: each rollout's privileged-context input, scored by the teacher, and the context metrics.

One pass for every caller. An adapter translates its generation batch into :class:`Rollouts` and supplies a
:data:`ScoreFn` (its own forward over ``teacher prompt ⊕ the rollout's response``) and a
:class:`~antisd.method.reducer.Reducer`; :meth:`TeacherPass.run` builds the contexts (siblings by group id,
feedback, demonstration cut and budget, template, chat template, head/tail cut), scores them, decides whether the
entropies are needed, scores the control teacher when the settings ask for one, and computes the ``antisd/*``
context metrics once, over the batch's real rows. ``antisd pmi`` calls :meth:`TeacherPass.inputs` on the same
:class:`Rollouts`, so a PMI report scores exactly what training scores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

import torch

from antisd.method import context as ctx
from antisd.method.reducer import LOCAL, Reducer
from antisd.method.settings import AntiSDSettings

ScoreFn = Callable[[list[list[int]], bool], tuple[torch.Tensor, torch.Tensor | None]]
"""``score(prompt_ids, entropy)``: the teacher's no-grad log-probs [B, T] (and entropies [B, T] if ``entropy``, else
None) of each local row's own response tokens after ``prompt_ids[i]``, same rows in the same order."""


@dataclass(frozen=True, kw_only=True)
class Rollouts:
    """One generation batch, framework-neutral.

    The whole batch (every process), in generation order: ``texts`` each rollout's decoded response (special tokens
    skipped), ``rewards`` its scalar reward (NaN: unscored: no feedback, never a demonstration), ``group_ids`` the
    prompt it answers (TRL: consecutive runs of G; verl: ``uid``). The rows this process scores: ``rows`` their
    indices in the batch, ``prompts`` as the student saw them (text or chat messages), ``references`` the row's
    reference solution or None, ``is_padding`` True on a framework's synthetic padding rows (verl)."""

    texts: Sequence[str]
    rewards: Sequence[float]
    group_ids: Sequence[Hashable]
    rows: Sequence[int]
    prompts: Sequence[Any]
    references: Sequence[Any]
    is_padding: Sequence[bool] | None = None
    feedback: Sequence[str | None] | None = None
    """Whole batch: the task's own feedback text per rollout (code: "Your code passes N of M test cases."), used
    instead of the settings' correct/incorrect strings; None: the settings' strings for every rollout."""

    def __post_init__(self):
        if not len(self.texts) == len(self.rewards) == len(self.group_ids):
            raise ValueError(f"{len(self.texts)} texts, {len(self.rewards)} rewards and {len(self.group_ids)} group ids: one each per rollout")
        if not len(self.rows) == len(self.prompts) == len(self.references):
            raise ValueError(f"{len(self.rows)} rows, {len(self.prompts)} prompts and {len(self.references)} references: one each per local row")

    @property
    def real_B(self) -> list[bool]:
        """[B] whether each local row is a real rollout (not padding)."""
        return [not pad for pad in self.is_padding] if self.is_padding is not None else [True] * len(self.rows)


@dataclass(kw_only=True)
class TeacherInputs:
    """Each local row's teacher input, before scoring."""

    prompts: list
    """The teacher prompts (chat messages or text), in the rows' order."""
    prompt_ids: list[list[int]]
    """Their token ids (chat template with the generation prompt, head/tail cut to ``max_reprompt_len``)."""
    truncated: list[bool]
    """Whether each prompt was cut to the budget."""
    has_context: list[bool]
    """False where the prompt carries neither demonstration nor feedback (a padding row never has context)."""
    kinds: list[str]
    """Each row's context: 'demonstration' (a correct sibling), 'reference' (the reference solution), 'feedback' (feedback only) or 'none'."""
    counts: dict
    """Local counts over real rows: rows, demonstration, reference, demonstration_truncated, control_missing, teacher_prompt_truncated."""


@dataclass(kw_only=True)
class TeacherScores:
    """What the step needs from the teacher, for the local rows."""

    teacher_logp_BT: torch.Tensor
    teacher_entropy_BT: torch.Tensor | None
    control_logp_BT: torch.Tensor | None
    has_context_B: torch.Tensor
    """[B] bool; with a control, also False where the control found no other group's demonstration."""
    inputs: TeacherInputs
    control_inputs: TeacherInputs | None = None
    metrics: dict[str, float] = field(default_factory=dict)


class TeacherPass:
    """Builds, scores and measures the teacher's inputs of a generation batch (module docstring)."""

    def __init__(self, settings: AntiSDSettings, tokenizer: Any, *, cut_demonstration: Callable[[str], str] | None = None, chat_template_kwargs: dict | None = None):
        self.settings = settings
        self.tokenizer = tokenizer
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.builder = ctx.builder_for_tokenizer(settings, tokenizer, cut_demonstration)

    def inputs(self, batch: Rollouts, *, control: bool = False) -> TeacherInputs:
        """The local rows' teacher prompts and token ids (``control``: the control teacher's, settings.control)."""
        prompts, stats = self.builder.build(
            batch.rows, batch.prompts, batch.references, batch.texts, batch.rewards, batch.group_ids, control=control, feedback=batch.feedback
        )  # fmt: skip
        encoded = [ctx.teacher_prompt_ids(self.tokenizer, p, self.settings, self.chat_template_kwargs) for p in prompts]
        real = batch.real_B
        counts = {
            "rows": sum(real),
            "demonstration": _count_real(stats["demonstration_rows"], real),
            "reference": _count_real(stats["reference_rows"], real),
            "demonstration_truncated": _count_real(stats["truncated_rows"], real),
            "control_missing": _count_real(stats["control_missing_rows"], real),
            "teacher_prompt_truncated": sum(int(cut) for (_, cut), r in zip(encoded, real) if r),
        }
        has_context = [c and r for c, r in zip(stats["has_context"], real)]
        kinds = [
            "none" if not r else "demonstration" if d else "reference" if ref else "feedback" if c else "none"
            for d, ref, c, r in zip(stats["demonstration_rows"], stats["reference_rows"], has_context, real)
        ]
        return TeacherInputs(
            prompts=prompts, prompt_ids=[ids for ids, _ in encoded], truncated=[cut for _, cut in encoded],
            has_context=has_context, kinds=kinds, counts=counts,
        )  # fmt: skip

    def run(self, batch: Rollouts, score: ScoreFn, reducer: Reducer = LOCAL) -> TeacherScores:
        """Teacher inputs, their scores (entropies only when the settings use them), the control teacher's scores
        when ``settings.control``, and the context metrics reduced over processes."""
        s = self.settings
        x = self.inputs(batch)
        logp_BT, entropy_BT = score(x.prompt_ids, s.needs_teacher_entropy)
        out = TeacherScores(
            teacher_logp_BT=logp_BT.float(), teacher_entropy_BT=entropy_BT.float() if entropy_BT is not None else None,
            control_logp_BT=None, has_context_B=torch.tensor(x.has_context, dtype=torch.bool), inputs=x,
        )  # fmt: skip
        if s.control:
            start = time.perf_counter()
            out.control_inputs = c = self.inputs(batch, control=True)
            out.control_logp_BT = score(c.prompt_ids, False)[0].float()
            out.has_context_B &= torch.tensor(c.has_context, dtype=torch.bool)
            out.metrics["perf/antisd_control_forward_s"] = time.perf_counter() - start
        out.metrics |= self.context_metrics(x, out.control_inputs, reducer)
        return out

    def context_metrics(self, x: TeacherInputs, control: TeacherInputs | None, reducer: Reducer = LOCAL) -> dict[str, float]:
        """The ``antisd/*`` context metrics of the whole batch: fractions over real rows, counts as totals."""
        c = x.counts
        n, ndemo, nref, ndcut, ntrunc, nmiss = reducer.sum([
            c["rows"], c["demonstration"], c["reference"], c["demonstration_truncated"], c["teacher_prompt_truncated"],
            control.counts["control_missing"] if control is not None else 0,
        ])  # fmt: skip
        metrics = {
            "antisd/demonstration_fraction": ndemo / max(n, 1),
            "antisd/reference_fraction": nref / max(n, 1),
            "antisd/demonstration_truncated": ndcut,
            "antisd/teacher_prompt_truncated": ntrunc,
        }
        if control is not None:
            metrics["antisd/control_missing_fraction"] = nmiss / max(n, 1)
        return metrics


def _count_real(flags: Sequence[bool], real: Sequence[bool]) -> int:
    return sum(int(f and r) for f, r in zip(flags, real))

"""Driver-side AntiSD on one verl batch: translate it for the teacher pass and the shared step. No verl imports.

verl's v1 trainer holds the whole generation batch on the driver (single controller), already re-ordered by its
sequence-length balancer, so group members are *not* consecutive: siblings are found by ``uid``, and every
statistic the step reduces is global without any collective (the reducer is the identity, :data:`LOCAL`).

Conventions (verl's padded layout): ``responses_BT`` right-padded response token ids, ``response_mask_BT`` 1 on
tokens that take part in the loss (0 on tool output and padding), ``response_len_B`` the number of response
positions of each row (tool output included), ``scores_BT`` token-level rewards (the outcome on the last token).
"""

from __future__ import annotations

from typing import Any, Hashable, Sequence

import torch

from antisd.method.step import LOCAL, AntiSDStep, Reducer, StepInputs, StepOutput
from antisd.method.teacher_pass import Rollouts


def sequence_rewards(scores_BT: torch.Tensor, response_mask_BT: torch.Tensor, is_padding_B: Sequence[bool] | None = None) -> list[float]:
    """[B] outcome reward of each row (sum of its token-level scores); NaN on verl's synthetic padding rows, which
    must neither get feedback nor serve as a demonstration."""
    rewards = (scores_BT.double() * response_mask_BT.double()).sum(dim=1).tolist()
    if is_padding_B is not None:
        rewards = [float("nan") if pad else r for r, pad in zip(rewards, is_padding_B)]
    return rewards


def sequence_advantages(adv_BT: torch.Tensor, response_mask_BT: torch.Tensor, atol: float = 1e-6) -> torch.Tensor:
    """[B] A_seq from verl's [B, T] outcome advantages (constant over a row's response tokens; 0 for empty rows).

    Raises if a row's advantages vary along it: AntiSD adds its per-token term to an *outcome* advantage (grpo,
    rloo, reinforce_plus_plus_baseline, ...), not to a token-level one such as GAE's."""
    mask = response_mask_BT.bool()
    first = torch.where(mask.any(dim=1), mask.float().argmax(dim=1), torch.zeros(mask.size(0), dtype=torch.long))
    seq_B = adv_BT.gather(1, first[:, None]).squeeze(1) * mask.any(dim=1)
    spread_B = ((adv_BT - seq_B[:, None]).abs() * mask).amax(dim=1)
    bad = (spread_B > atol).nonzero().flatten().tolist()
    if bad:
        raise ValueError(
            f"row {bad[0]}: the advantage varies along the response (by {spread_B[bad[0]].item():.3g}); AntiSD needs an "
            "outcome estimator such as algorithm.adv_estimator=grpo, not a token-level one (gae)"
        )
    return seq_B.float()


def rollout_order(keys: Sequence[str]) -> list[tuple]:
    """Generation order of verl v1 rows from their TransferQueue keys ``{uid}_{session_id}_{index}`` (session_id is
    the rollout's number within its group); a key of another form keeps its batch position."""
    order = []
    for position, key in enumerate(keys):
        parts = str(key).rsplit("_", 2)
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            order.append((0, int(parts[1]), int(parts[2]), position))
        else:
            order.append((1, position, 0, position))
    return order


def decode_responses(tokenizer: Any, responses_BT: torch.Tensor, response_mask_BT: torch.Tensor) -> list[str]:
    """Each row's response text as the demonstration builder needs it (TRL decodes its completions the same way)."""
    return [tokenizer.decode(ids[m.bool()].tolist(), skip_special_tokens=True) for ids, m in zip(responses_BT, response_mask_BT)]


def rollouts(
    raw_prompts: Sequence[Any], texts: Sequence[str], rewards: Sequence[float], uids: Sequence[Hashable], *,
    references: Sequence[Any] | None = None, is_padding_B: Sequence[bool] | None = None, order_B: Sequence | None = None,
    feedback_B: Sequence[str | None] | None = None,
) -> Rollouts:  # fmt: skip
    """verl's batch (balancer order) as the teacher pass takes it: the whole batch in *generation* order, so that the
    demonstration is the first correct sibling in that order, as in TRL; the rows in batch order, each pointing at
    its place in generation order. ``order_B``: e.g. :func:`rollout_order` of verl's keys (None: batch order).
    ``feedback_B``: each row's own feedback line from the reward function (:func:`reward_feedback`), or None."""
    B = len(texts)
    order = sorted(range(B), key=lambda i: order_B[i]) if order_B is not None else list(range(B))
    position = {row: k for k, row in enumerate(order)}  # row → its place in generation order
    return Rollouts(
        texts=[texts[i] for i in order], rewards=[rewards[i] for i in order], group_ids=[uids[i] for i in order],
        rows=[position[i] for i in range(B)], prompts=list(raw_prompts), references=list(references or [None] * B),
        is_padding=list(is_padding_B) if is_padding_B is not None else None,
        feedback=[feedback_B[i] for i in order] if feedback_B is not None else None,
    )  # fmt: skip


def reward_feedback(extra_fields_B: Sequence[Any]) -> list[str | None] | None:
    """Each row's ``feedback`` from its reward function's extras (verl keeps them in ``extra_fields
    ["reward_extra_info"]``; antisd's code reward writes "Your code passes N of M test cases."); None when no row has
    one (the settings' correct/incorrect lines then apply)."""
    lines = []
    for fields in extra_fields_B:
        fields = getattr(fields, "data", fields)  # a TransferQueue NonTensorData, or the dict itself
        info = fields.get("reward_extra_info") if isinstance(fields, dict) else None
        line = info.get("feedback") if isinstance(info, dict) else None
        lines.append(line if isinstance(line, str) else None)
    return lines if any(line is not None for line in lines) else None


def response_ids(responses_BT: torch.Tensor, response_len_B: torch.Tensor) -> list[list[int]]:
    """Each row's response token ids (tool output included, padding excluded)."""
    return [responses_BT[i, : int(response_len_B[i])].tolist() for i in range(responses_BT.size(0))]


def teacher_sequences(prompt_ids: list[list[int]], responses: list[list[int]], response_mask_BT: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """One verl sample per row, in the layout verl's agent loop writes (1-D tensors; the trainer nests them):
    teacher prompt ⊕ the row's response, full attention, positions 0..L−1, the row's own response mask."""
    samples = []
    for i, (prompt, response) in enumerate(zip(prompt_ids, responses)):
        input_ids = torch.tensor(prompt + response, dtype=torch.long)
        samples.append({
            "prompts": torch.tensor(prompt, dtype=torch.long),
            "responses": torch.tensor(response, dtype=torch.long),
            "response_mask": response_mask_BT[i, : len(response)].long(),
            "loss_mask": response_mask_BT[i, : len(response)].long(),  # verl's agent loop writes both
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "position_ids": torch.arange(input_ids.numel()),
        })  # fmt: skip
    return samples


def apply_step(
    step: AntiSDStep, adv_BT: torch.Tensor, teacher_logp_BT: torch.Tensor, old_logp_BT: torch.Tensor, response_mask_BT: torch.Tensor,
    has_context_B: torch.Tensor, teacher_entropy_BT: torch.Tensor | None = None, microbatch_B: torch.Tensor | None = None,
    reducer: Reducer = LOCAL,
) -> StepOutput:  # fmt: skip
    """The shared step on the batch, in the same two calls as the TRL adapter (decide, then compose_rows): A_seq from
    verl's outcome advantages, u from the teacher pass and the old log-probs (the student under the plain prompt,
    same weights), → [B, T] advantages (0 past each response)."""
    inputs = StepInputs(
        seq_adv_B=sequence_advantages(adv_BT, response_mask_BT), teacher_logp_BT=teacher_logp_BT.float(), student_logp_BT=old_logp_BT.float(),
        response_mask_BT=response_mask_BT, teacher_entropy_BT=teacher_entropy_BT, microbatch_B=microbatch_B, has_context_B=has_context_B,
    )  # fmt: skip
    out = step(inputs, reducer)  # decide, then compose_rows on every row (the student's log-probs are at hand)
    out.advantages_BT = out.advantages_BT * response_mask_BT.to(out.advantages_BT.dtype)  # verl's convention
    return out

"""Sampling and re-scoring with plain transformers, outside any trainer (used by `antisd pmi` and evaluation).

Scoring runs one forward per batch of (prompt ⊕ completion) rows, keeps logits only for the completion
positions, and reduces them with the chunked :func:`antisd.core.logp_entropy_from_logits`.
"""

from __future__ import annotations

import inspect

import torch

from antisd.core import logp_entropy_from_logits


@torch.no_grad()
def sample(
    model, tokenizer, prompt_texts: list[str], n: int, *, temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 96, batch_size: int = 64,
    seed: int = 0, synced: bool = False, progress=None, resume: tuple | None = None, shrink: bool = False,
) -> list[tuple[int, list[int]]]:
    """``n`` completions per prompt: a list of (prompt index, completion token ids without padding).

    ``progress(done, total, batch, rng_state)`` is called after each generate batch with that batch's (prompt index,
    ids) pairs and the random state that the next batch starts from. ``resume=(done, rng_state)`` continues such a
    run after its first ``done`` completions (which it does not return): the same draws as an uninterrupted run.

    ``synced``: several processes generate in lock step (``synced_gpus``), as sharded weights (ZeRO-3, FSDP)
    require; every process must then call this with the same number of prompts.

    ``shrink``: :func:`generate_shrinking` instead of transformers' ``generate`` — the same distribution, other draws,
    finished rows leave the batch (single process only)."""
    if shrink and synced:
        raise ValueError("shrink=True drops finished rows from the batch; processes generating in lock step (synced) cannot")
    side, was_training = tokenizer.padding_side, model.training
    tokenizer.padding_side = "left"
    model.eval()
    flat = [i for i in range(len(prompt_texts)) for _ in range(n)]
    out = []
    cuda = [model.device] if model.device.type == "cuda" else []
    # a private RNG stream (on the GPU too): sampling here never shifts a training run's random state
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        done = 0
        if resume is not None:
            done = resume[0]
            _set_rng_state(resume[1], cuda)
        for start in range(done, len(flat), batch_size):
            idx = flat[start : start + batch_size]
            enc = tokenizer([prompt_texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            if shrink:
                rows = generate_shrinking(model, enc["input_ids"], enc["attention_mask"], temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, eos_id=tokenizer.eos_token_id)
            else:
                gen = model.generate(
                    **enc, do_sample=True, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, synced_gpus=synced,
                )  # fmt: skip
                rows = [_trim(row, tokenizer) for row in gen[:, enc["input_ids"].shape[1] :].tolist()]
            batch = list(zip(idx, rows))
            out += batch
            if progress is not None:
                progress(start + len(batch), len(flat), batch, _rng_state(cuda))
    tokenizer.padding_side = side
    model.train(was_training)
    return out


TOP_K = 50  # transformers' generate applies top-k 50 unless a generation config says otherwise (SmolLM2's and ours do not)


@torch.no_grad()
def generate_shrinking(
    model, input_ids_BP: torch.Tensor, attention_mask_BP: torch.Tensor, *, temperature: float, top_p: float, max_new_tokens: int, eos_id: int,
) -> list[list[int]]:  # fmt: skip
    """Sample as transformers' ``generate`` does (logits in float32, temperature, top-k 50, top-p, one multinomial
    draw per row per step; temperature 0: greedy), except that a row that has drawn its end-of-sequence token leaves
    the batch and the KV cache. Same distribution; on a CPU, where a decoding step costs in proportion to its rows,
    a batch costs the sum of its completions' lengths rather than rows × the longest one.

    Args:
        input_ids_BP, attention_mask_BP: [B, P] left-padded prompts.
    Returns:
        B completions, each up to and including its end-of-sequence token (at most ``max_new_tokens`` ids).
    """
    from transformers import DynamicCache, LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    warp = LogitsProcessorList(
        ([TemperatureLogitsWarper(temperature)] if temperature not in (0.0, 1.0) else []) + [TopKLogitsWarper(TOP_K)] + ([TopPLogitsWarper(top_p)] if top_p < 1.0 else [])
    )  # fmt: skip
    cache, mask_BS = DynamicCache(config=model.config), attention_mask_BP
    # transformers ≥ 5.2x names the argument `cache` (`past_key_values` is deprecated); older versions know only the latter
    with_cache = {"cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values": cache, "use_cache": True}
    pos_BS = (mask_BS.long().cumsum(-1) - 1).clamp(min=0)
    logits_BV = model(input_ids=input_ids_BP, attention_mask=mask_BS, position_ids=pos_BS, logits_to_keep=1, **with_cache).logits[:, -1].float()
    rows, out, last_pos_B = list(range(input_ids_BP.shape[0])), [[] for _ in range(input_ids_BP.shape[0])], pos_BS[:, -1]
    for t in range(max_new_tokens):
        if temperature == 0.0:
            next_B = logits_BV.argmax(-1)
        else:
            next_B = torch.multinomial(warp(input_ids_BP, logits_BV).softmax(-1), num_samples=1).squeeze(1)
        for r, token in zip(rows, next_B.tolist()):
            out[r].append(token)
        alive_B = next_B != eos_id
        if t == max_new_tokens - 1 or not alive_B.any():
            break
        if not alive_B.all():  # finished rows leave the batch and the cache
            keep = alive_B.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            rows = [r for r, alive in zip(rows, alive_B.tolist()) if alive]
            next_B, mask_BS, last_pos_B, input_ids_BP = next_B[keep], mask_BS[keep], last_pos_B[keep], input_ids_BP[keep]
        mask_BS = torch.cat([mask_BS, mask_BS.new_ones(mask_BS.shape[0], 1)], dim=1)
        last_pos_B = last_pos_B + 1
        logits_BV = model(input_ids=next_B[:, None], attention_mask=mask_BS, position_ids=last_pos_B[:, None], **with_cache).logits[:, -1].float()
    return out


def _trim(row: list[int], tokenizer) -> list[int]:
    """A generated row up to and including its end-of-sequence token, without padding."""
    ids = []
    for t in row:
        if t == tokenizer.pad_token_id and t != tokenizer.eos_token_id:
            break
        ids.append(t)
        if t == tokenizer.eos_token_id:
            break
    return ids


def _rng_state(cuda: list) -> list:
    return [torch.get_rng_state()] + [torch.cuda.get_rng_state(d) for d in cuda]


def _set_rng_state(state: list, cuda: list) -> None:
    torch.set_rng_state(state[0])
    for d, s in zip(cuda, state[1:]):
        torch.cuda.set_rng_state(s, d)


@torch.no_grad()
def score(model, prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int, *, temperature: float = 1.0, batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token log-probs and entropies of each completion given its prompt.

    Returns (logp_BT, entropy_BT, mask_BT) with T = the longest completion; rows are right-padded.
    """
    T = max(len(c) for c in completion_ids)
    B = len(completion_ids)
    logp_BT, ent_BT, mask_BT = torch.zeros(B, T), torch.zeros(B, T), torch.zeros(B, T, dtype=torch.bool)
    for start in range(0, B, batch_size):
        rows = range(start, min(start + batch_size, B))
        P = max(len(prompt_ids[i]) for i in rows)
        ids = torch.full((len(rows), P + T), pad_id)
        attn = torch.zeros((len(rows), P + T), dtype=torch.long)
        for k, i in enumerate(rows):
            p, c = prompt_ids[i], completion_ids[i]
            ids[k, P - len(p) : P] = torch.tensor(p)  # prompt left-padded, completion right-padded
            ids[k, P : P + len(c)] = torch.tensor(c)
            attn[k, P - len(p) : P + len(c)] = 1
        logits = model(input_ids=ids.to(model.device), attention_mask=attn.to(model.device), logits_to_keep=T + 1).logits
        lp, ent = logp_entropy_from_logits(logits[:, :-1].cpu(), ids[:, P:], temperature=temperature)
        for k, i in enumerate(rows):
            n = len(completion_ids[i])
            logp_BT[i, :n], ent_BT[i, :n], mask_BT[i, :n] = lp[k, :n], ent[k, :n], True
    return logp_BT, ent_BT, mask_BT

"""Sampling and re-scoring with plain transformers, outside any trainer (used by `antisd pmi` and evaluation).

Scoring runs one forward per batch of (prompt ⊕ completion) rows, keeps logits only for the completion
positions, and reduces them with the chunked :func:`antisd.core.logp_entropy_from_logits`.
"""

from __future__ import annotations

import torch

from antisd.core import logp_entropy_from_logits


@torch.no_grad()
def sample(model, tokenizer, prompt_texts: list[str], n: int, *, temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 96, batch_size: int = 64, seed: int = 0, synced: bool = False, progress=None, resume: tuple | None = None) -> list[tuple[int, list[int]]]:
    """``n`` completions per prompt: a list of (prompt index, completion token ids without padding).

    ``progress(done, total, batch, rng_state)`` is called after each generate batch with that batch's (prompt index,
    ids) pairs and the random state that the next batch starts from. ``resume=(done, rng_state)`` continues such a
    run after its first ``done`` completions (which it does not return): the same draws as an uninterrupted run.

    ``synced``: several processes generate in lock step (``synced_gpus``), as sharded weights (ZeRO-3, FSDP)
    require; every process must then call this with the same number of prompts."""
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
            gen = model.generate(
                **enc, do_sample=True, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, synced_gpus=synced,
            )  # fmt: skip
            batch = [(i, _trim(row, tokenizer)) for i, row in zip(idx, gen[:, enc["input_ids"].shape[1] :].tolist())]
            out += batch
            if progress is not None:
                progress(start + len(batch), len(flat), batch, _rng_state(cuda))
    tokenizer.padding_side = side
    model.train(was_training)
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

"""The shrinking sampler (`antisd eval --sampler shrinking`) against transformers' own generate."""

from __future__ import annotations

import pytest
import torch

from antisd.evaluation.scoring import generate_shrinking, sample
from tiny import make_tiny_model

pytestmark = pytest.mark.exact  # token-for-token comparisons: rerun under other CPU kernels (Makefile)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = make_tiny_model(tmp_path_factory.mktemp("tiny"))
    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    with torch.no_grad():  # a random model with sharper logits, so that greedy paths differ and EOS comes at various steps
        model.lm_head.weight.mul_(8.0) if not model.config.tie_word_embeddings else model.model.embed_tokens.weight.mul_(8.0)
    tok.padding_side = "left"
    return model.eval(), tok


def _prompts(tok, texts):
    return tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)


TEXTS = ["Use 3 5 7 to make 22.", "Use 1 2 3 to make 9.", "try", "Use 9 9 9 to make 81. answer:"]


def _hf(model, tok, enc, **kw):
    gen = model.generate(**enc, pad_token_id=tok.pad_token_id, **kw)
    return gen[:, enc["input_ids"].shape[1] :].tolist()


def test_sampling_draws_what_generate_draws_until_a_row_finishes(tiny):
    """Same seed, same prompts (left-padded, of different lengths): token for token the draws of transformers'
    sampling (temperature, top-k 50, top-p) while every row is still running — the loop, cache, positions and
    warpers are the same; after that the shrinking sampler draws for fewer rows, so the streams part."""
    model, tok = tiny
    enc = _prompts(tok, TEXTS * 4)
    never = len(tok) + 7  # an end-of-sequence id that cannot be drawn: no row finishes
    torch.manual_seed(1)
    ref = _hf(model, tok, enc, do_sample=True, temperature=0.7, top_p=0.95, max_new_tokens=12, eos_token_id=never)
    torch.manual_seed(1)
    got = generate_shrinking(model, enc["input_ids"], enc["attention_mask"], temperature=0.7, top_p=0.95, max_new_tokens=12, eos_id=never)
    assert got == ref
    assert len({tuple(row) for row in ref}) > len(TEXTS)  # copies of one prompt drew different tokens: real sampling


def test_greedy_with_rows_finishing_at_different_steps_equals_generate(tiny):
    """Deterministic decoding with an end-of-sequence token that rows reach at different steps: dropping finished
    rows from the batch and the cache changes no row."""
    model, tok = tiny
    enc = _prompts(tok, TEXTS * 2)
    ref = _hf(model, tok, enc, do_sample=False, max_new_tokens=40, eos_token_id=tok.eos_token_id)
    first = ref[0][5]  # a token some rows produce early: as "end of sequence", rows stop at different steps
    ref = _hf(model, tok, enc, do_sample=False, max_new_tokens=40, eos_token_id=first)
    got = generate_shrinking(model, enc["input_ids"], enc["attention_mask"], temperature=0.0, top_p=1.0, max_new_tokens=40, eos_id=first)
    trimmed = [row[: row.index(first) + 1] if first in row else row for row in ref]
    assert got == trimmed
    assert len({len(row) for row in got}) > 1  # rows did finish at different steps


def test_sample_with_shrink_is_resumable_and_refuses_lock_step(tiny):
    model, tok = tiny
    batches = []
    full = sample(model, tok, TEXTS, 3, temperature=1.0, max_new_tokens=10, batch_size=4, seed=5, shrink=True, progress=lambda d, t, b, s: batches.append((d, s)))
    resumed = sample(model, tok, TEXTS, 3, temperature=1.0, max_new_tokens=10, batch_size=4, seed=5, shrink=True, resume=batches[0])
    assert resumed == full[4:]
    with pytest.raises(ValueError, match="lock step"):
        sample(model, tok, TEXTS, 1, shrink=True, synced=True)

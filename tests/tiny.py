"""A tiny random Qwen3 model with a BPE tokenizer and chat template, built in-process (no hub)."""

from __future__ import annotations

import random
from pathlib import Path

from antisd.method.context import ContextTemplates
from antisd.tasks import countdown as cd
from antisd.testbed.build import build_model, build_tokenizer, make_example


def make_tiny_model(out: Path, hidden: int = 32, layers: int = 2) -> Path:
    rng = random.Random(0)
    texts = []
    for p in cd.generate(200, seed=0):
        messages, response = make_example(p, rng, 0.5, ContextTemplates())
        texts.append(messages[0]["content"] + "\n" + response)
    tok = build_tokenizer(texts, vocab_size=400)
    model = build_model(tok, hidden, layers)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out

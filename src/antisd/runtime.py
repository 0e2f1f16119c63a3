"""Loading models and tokenizers for every command (train, eval, pmi, testbed check), never from a hub at run time.

A name is 'testbed' (the model shipped in the package), a registered model installed by `antisd models install`,
a local directory, or a Hugging Face id already in the local cache.
"""

from __future__ import annotations

import os
from pathlib import Path

SHIPPED_TESTBED = Path(__file__).resolve().parent / "assets" / "testbed"


def shipped_model_dir() -> Path:
    """The tiny testbed model shipped inside the package."""
    if not (SHIPPED_TESTBED / "config.json").is_file():
        raise FileNotFoundError(f"the shipped testbed model is missing from {SHIPPED_TESTBED}; rebuild it with `antisd testbed build --out {SHIPPED_TESTBED}`")
    return SHIPPED_TESTBED


def resolve_model_path(name: str) -> str:
    """The local path (or cached hub id) behind a model name; an uninstalled registered model names the fix."""
    from antisd.models import REGISTRY, installed_dir

    if name in REGISTRY and installed_dir(name) is None:
        raise FileNotFoundError(f"model {name!r} is not installed: run `antisd models install {name}`")
    return str(shipped_model_dir() if name == "testbed" else installed_dir(name) or name)


def load_model(name: str):
    """Model and tokenizer by name; no hub download is ever attempted for a name that is not cached."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(name)
    local_only = os.environ.get("HF_HUB_OFFLINE") == "1" or Path(path).is_dir()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=local_only)
    if tok.pad_token is None:  # documented fallback: pad with eos (masked out of every loss)
        tok.pad_token = tok.eos_token
    if tok.chat_template is None:
        raise ValueError(f"tokenizer of {name!r} has no chat template; the student and teacher prompts need one")
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=local_only)
    return model, tok

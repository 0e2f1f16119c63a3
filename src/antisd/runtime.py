"""Loading models and tokenizers for every command (train, eval, pmi, testbed check), never from a hub at run time.

A name is 'testbed' or 'testbed-v2' (models shipped in the package), a registered model installed by `antisd models install`,
a local directory, or a Hugging Face id already in the local cache.
"""

from __future__ import annotations

import os
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
SHIPPED_TESTBED = ASSETS / "testbed"
SHIPPED = ("testbed", "testbed-v2")  # v1: the default (one wording); v2: the paper's regime (issue #12, docs/testbed.md)


def shipped_model_dir(name: str = "testbed") -> Path:
    """A tiny testbed model shipped inside the package (its build recipe is in its antisd_build.json)."""
    path = ASSETS / name
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"the shipped model {name!r} is missing from {path}; rebuild it with `antisd testbed build --out {path}` and the recipe in docs/testbed.md")
    return path


def resolve_model_path(name: str) -> str:
    """The local path (or cached hub id) behind a model name; an uninstalled registered model names the fix."""
    from antisd.models import REGISTRY, installed_dir

    if name in REGISTRY and installed_dir(name) is None:
        raise FileNotFoundError(f"model {name!r} is not installed: run `antisd models install {name}`")
    return str(shipped_model_dir(name) if name in SHIPPED else installed_dir(name) or name)


def load_model(name: str, dtype: str = "float32"):
    """Model and tokenizer by name; no hub download is ever attempted for a name that is not cached.

    Weights load in ``dtype``, float32 by default whatever the checkpoint stores (transformers 5 would otherwise
    load Qwen3/OLMo in bf16): training keeps fp32 master weights and gets bf16 from autocast (``--bf16 true``).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(name)
    local_only = os.environ.get("HF_HUB_OFFLINE") == "1" or Path(path).is_dir()
    looks_local = Path(path).is_absolute() or path.startswith((".", "~")) or Path(path).exists()
    if looks_local and not Path(path, "config.json").is_file():
        raise FileNotFoundError(f"--model {name}: {path} is not a model directory (no config.json)")
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=local_only)
    except OSError as e:
        raise FileNotFoundError(f"--model {name}: no tokenizer at {path} on this machine ({str(e).splitlines()[0][:200]})") from None
    if tok.pad_token is None:  # documented fallback: pad with eos (masked out of every loss)
        tok.pad_token = tok.eos_token
    if tok.chat_template is None:
        raise ValueError(f"tokenizer of {name!r} has no chat template; the student and teacher prompts need one")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=local_only, dtype=getattr(torch, dtype))
    except OSError as e:
        raise FileNotFoundError(f"--model {name}: cannot load the weights in {path} ({str(e).splitlines()[0][:200]})") from None
    except Exception as e:  # noqa: BLE001 — a damaged weights file surfaces as many error types; name the file
        if "safetensors" in type(e).__module__ or "SafetensorError" in type(e).__name__ or "header" in str(e).lower():
            raise ValueError(f"--model {name}: the weights in {path} are damaged ({type(e).__name__}: {str(e)[:200]})") from None
        raise
    return model, tok


def check_training_precision(model, mixed_precision: str, engine_keeps_fp32_master: bool = False) -> str:
    """Refuse weights that AdamW would step in 16 bits; return a one-line description of the precision in use.

    At lr 1e-6 almost every bf16 update rounds to nothing (an update smaller than half a bf16 ulp of the weight is
    lost), so the optimizer must step fp32 master weights: either the model's own (loaded in float32, autocast for
    bf16 compute) or an engine's fp32 copy (DeepSpeed ZeRO with bf16 keeps one in the optimizer).
    """
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters() if p.requires_grad})
    if dtypes != ["float32"] and not engine_keeps_fp32_master:
        raise ValueError(
            f"trainable weights are {'/'.join(dtypes)}: AdamW would update them in 16 bits and most updates at small learning "
            "rates would round to nothing. Load the model in float32 (antisd's loader does unless told otherwise) and use "
            "--bf16 true for bf16 autocast, or train under DeepSpeed ZeRO, which keeps fp32 master weights."
        )
    master = "fp32 master in the DeepSpeed optimizer" if engine_keeps_fp32_master and dtypes != ["float32"] else "fp32 master weights"
    return f"precision: weights {'/'.join(dtypes)} ({master}), compute {'bf16 autocast' if mixed_precision == 'bf16' else 'fp32'}"

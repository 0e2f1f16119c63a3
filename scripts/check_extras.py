"""Dry resolve of the GPU extras (issue #20): does `pip install -e ".[EXTRA]"` keep the tested torch, transformers
and trl? Run where the package registry is reachable (it downloads metadata only; nothing is installed):

    .venv/bin/python scripts/check_extras.py            # deepspeed, vllm, gpu

For each extra, `pip install --dry-run --report` against constraints that pin this environment's torch,
transformers and trl: an extra that would need another version of them fails to resolve (pip says which), and one
that resolves lists what it would add. Exit status 1 if any extra fails. docs/install.md records the output.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEPT = ("torch", "transformers", "trl", "accelerate")
SHOWN = ("deepspeed", "vllm", "flashinfer-python", "xformers", "torchvision", "torchaudio", "numpy")


def resolve(extra: str, constraints: Path) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report), "-c", str(constraints), "-e", f"{ROOT}[{extra}]"],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            errors = [x for x in done.stderr.splitlines() if x.startswith("ERROR") or "conflict" in x.lower()]
            return False, " | ".join(errors[-3:]) or done.stderr[-500:]
        install = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    changed = {name: install[name] for name in KEPT if name in install}
    if changed:
        return False, f"would change {changed}"
    added = ", ".join(f"{n} {install[n]}" for n in SHOWN if n in install)
    return True, f"keeps {', '.join(f'{n} {version(n)}' for n in KEPT)}; adds {len(install) - 1} packages ({added})"


def main(extras: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("".join(f"{name}=={version(name).split('+')[0]}\n" for name in KEPT))
        bad = 0
        for extra in extras:
            ok, what = resolve(extra, constraints)
            bad += not ok
            print(f".[{extra}]: {'resolves' if ok else 'FAILS'}: {what}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["deepspeed", "vllm", "gpu"]))

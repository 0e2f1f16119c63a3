#!/usr/bin/env bash
# The wheels `make gpu-check` carries to the lent GPU machine: what its image lacks for antisd (the device tool's
# KINDS.md: Python 3.12, torch 2.11 CUDA, transformers 5.17, accelerate 1.15, no trl, datasets or math-verify;
# nothing can be downloaded there). Run here, where the package registry is reachable:
#   bash scripts/gpu_wheels.sh [DIR]      # default .whl (ignored by git; name it in the device run's `carry`)
# Versions are the ones CI tests (transformers 5.24 rather than the image's 5.17). Prints each wheel and its size.
set -euo pipefail
DIR=${1:-.whl}
PY=${PYTHON:-python3}
mkdir -p "$DIR"
WHEELS=(
  trl==1.16.0 transformers==5.24.0 regex==2026.11.19
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 fsspec==2026.9.0
  math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2
)
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
for w in "${WHEELS[@]}"; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" -d "$DIR" "$w"
done
"$PY" - "$DIR" <<'PYEOF'
import sys
from pathlib import Path

wheels = sorted(Path(sys.argv[1]).glob("*.whl"))
for w in wheels:
    print(f"{w.stat().st_size / 2**20:8.2f} MiB  {w.name}")
print(f"{sum(w.stat().st_size for w in wheels) / 2**20:8.2f} MiB  in all (the device tool carries at most 64 MiB with the working tree)")
PYEOF

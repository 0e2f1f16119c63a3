#!/usr/bin/env bash
# On the lent GPU machine (docs/results/gpu.md): install the carried wheels (.whl/, made here by
# `bash scripts/gpu_wheels.sh`) into /tmp/site with the image's own python3, then run the GPU check.
# The report lands in $OUT (the device tool's folder that comes back) or runs/gpu-check; run files in /tmp.
#   device run: command "bash scripts/gpu_check.sh", carry [".whl"], timeout_s 540
set -euo pipefail
cd "$(dirname "$0")/.."
ls .whl/*.whl > /dev/null || { echo "no wheels in .whl/: run 'bash scripts/gpu_wheels.sh' where the registry is reachable and carry .whl"; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:src HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python3 scripts/gpu_check.py --out "${OUT:-runs/gpu-check}" --work /tmp/gpu-check-work "$@"

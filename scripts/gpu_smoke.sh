#!/usr/bin/env bash
# GPU smoke test of the TRL path, for a machine with accelerators (nothing here runs in CI).
#   scripts/gpu_smoke.sh 1   # one GPU: 3 steps, bf16 autocast over fp32 master weights, vLLM colocated
#   scripts/gpu_smoke.sh 8   # one 8-GPU node: 3 steps of the Qwen3-8B recipe, shortened, under ZeRO-3
# MODEL (default smollm2-135m, installed with `antisd models install smollm2-135m`) may be any local model dir or
# cached hub id. It prints the precision line, the per-step antisd/* metrics and the per-GPU peak memory, and
# fails if a step is missing, a metric is non-finite, or two processes wrote the same step.
set -euo pipefail
N=${1:-1}
OUT=${OUT:-runs/gpu-smoke-$N}
MODEL=${MODEL:-smollm2-135m}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
rm -rf "$OUT"
COMMON=(--preset antisd_release --antisd_gate_warmup_steps 1 --steps 3 --eval_k 0 --save_steps 3 --output_dir "$OUT")
if [ "$N" = 1 ]; then
  antisd train --model "$MODEL" --task gsm --prompts_per_step 4 --num_generations 4 --max_completion_length 256 \
    --bf16 true --use_vllm true --vllm_mode colocate "${COMMON[@]}" \
    --trl_args '{vllm_gpu_memory_utilization: 0.3, vllm_max_model_length: 4096}'
else
  accelerate launch --config_file configs/accelerate/deepspeed_zero3.yaml --num_processes "$N" -m antisd.cli train \
    --config configs/recipes/qwen3-8b.yaml --model "${MODEL_8:-Qwen/Qwen3-8B}" --max_completion_length 1024 \
    --prompts_per_step 8 --grad_accum 8 "${COMMON[@]}"
fi
python - "$OUT" <<'PY'
import json, math, sys
from pathlib import Path
out = Path(sys.argv[1])
lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
steps = [x for x in lines if "antisd/gate_on" in x]
assert [x["step"] for x in steps] == [1, 2, 3], f"steps logged: {[x['step'] for x in steps]}"
for x in steps:
    keys = ("antisd/gate_on", "antisd/lambda_mean", "antisd/teacher_ppl_mean", "antisd/u_mean", "antisd/frac_u_neg", "reward/reward", "perf/step_time")
    print(x["step"], {k: round(x[k], 4) for k in keys if k in x})
    assert all(math.isfinite(x[k]) for k in keys if k in x and k != "perf/step_time"), x
summary = json.loads((out / "summary.json").read_text())
print(summary["precision"], "| processes:", summary["processes"])
print("OK: gpu smoke passed")
PY
nvidia-smi --query-gpu=index,memory.used,memory.total --format=csv || true

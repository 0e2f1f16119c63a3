#!/usr/bin/env bash
# AntiSD on Qwen3-8B for code with verl — the paper's §7.3 run (Table 2: Dolci-RLZero, HumanEval+/MBPP+ avg@10):
# the math launcher's recipe (qwen3_8b_antisd.sh), with antisd's sandboxed code reward, the task's own feedback
# ("Your code passes N of M test cases.") and demonstrations cut after their code block (docs/verl.md, "Code").
# Data: verl parquet files whose rows have data_source containing "code" and reward_model.ground_truth holding the
# tests (Dolci-RLZero's list of assertions, or {"inputs", "outputs", "fn_name"?}, or their JSON text).
#   NNODES=2 TRAIN_FILE=~/data/dolci-rlzero-code/train.parquet VAL_FILE=~/data/humaneval-plus/test.parquet \
#     bash scripts/verl/qwen3_8b_code.sh
set -euo pipefail
HERE=$(dirname "$0")
REWARD_FILE=$(python3 -c "import antisd.integrations.verl.reward as m; print(m.__file__)")
export TRAIN_FILE=${TRAIN_FILE:-$HOME/data/dolci-rlzero-code/train.parquet}
export VAL_FILE=${VAL_FILE:-$HOME/data/humaneval-plus/test.parquet}
export VAL_N=${VAL_N:-10}
export OUT=${OUT:-checkpoints/antisd/qwen3-8b-code-${PRESET:-antisd_release}}

# BEGIN OVERRIDES (added to qwen3_8b_antisd.sh's; tests_verl compose both in verl's config)
ARGS=(
  antisd.demonstration_cut=code
  reward.custom_reward_function.path=$REWARD_FILE
  reward.custom_reward_function.name=compute_score
)
# END OVERRIDES

exec bash "$HERE/qwen3_8b_antisd.sh" "${ARGS[@]}" "$@"

#!/usr/bin/env bash
# GPU smoke test of the verl plug-in: 3 steps of antisd_sync on a small Qwen model with verl's vLLM rollout, on one
# GPU, printing the antisd/* metrics. Needs the verl environment plus vLLM (`make test-verl`, then
# `.verl-venv/bin/pip install vllm`) and a local model directory and data (no hub at run time):
#   MODEL=/models/Qwen2.5-0.5B-Instruct DATA=/data/gsm8k bash scripts/verl/gpu_smoke.sh
# DATA holds verl's gsm8k parquet files (examples/data_preprocess/gsm8k.py writes train.parquet and test.parquet).
# Record the output in docs/LOG.md.
set -euo pipefail
MODEL=${MODEL:?a local model directory, e.g. Qwen2.5-0.5B-Instruct}
DATA=${DATA:?a directory with verl gsm8k train.parquet and test.parquet}
PRESET=${PRESET:-antisd}
PY=${PY:-.verl-venv/bin/python}
CONFIG_DIR=$($PY -c "from antisd.integrations.verl.config import CONFIG_DIR; print(CONFIG_DIR)")
export HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled
$PY -m verl.trainer.main_ppo --config-path "$CONFIG_DIR" --config-name antisd_trainer \
  antisd.preset=$PRESET antisd.gate_warmup_steps=1 \
  data.train_files=$DATA/train.parquet data.val_files=$DATA/test.parquet \
  data.train_batch_size=8 data.max_prompt_length=512 data.max_response_length=256 \
  actor_rollout_ref.model.path=$MODEL \
  actor_rollout_ref.actor.ppo_mini_batch_size=8 actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8 \
  actor_rollout_ref.actor.use_kl_loss=false \
  actor_rollout_ref.rollout.name=vllm actor_rollout_ref.rollout.n=4 actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
  actor_rollout_ref.rollout.gpu_memory_utilization=0.4 actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8 \
  trainer.total_training_steps=3 trainer.save_freq=3 trainer.test_freq=-1 trainer.val_before_train=false \
  trainer.nnodes=1 trainer.n_gpus_per_node=1 trainer.logger='["console"]' \
  trainer.default_local_dir=${OUT:-/tmp/antisd-verl-smoke} "$@" 2>&1 | tee /tmp/antisd-verl-smoke.log
grep -o "antisd/[a-z_/-]*:[^ ]*" /tmp/antisd-verl-smoke.log | tail -40
test -f "${OUT:-/tmp/antisd-verl-smoke}/global_step_3/antisd_state.json" && echo "gate state saved with the checkpoint"

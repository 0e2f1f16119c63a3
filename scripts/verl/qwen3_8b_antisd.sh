#!/usr/bin/env bash
# AntiSD on Qwen3-8B with verl — the paper's Table 5 recipe as the authors released it (launch_short.sh): 32 prompts
# × 8 rollouts a step, one on-policy update (ppo_mini_batch_size = train_batch_size), lr 1e-6 constant, no KL,
# prompt 2048 / response 16384 tokens, T = 1.0, non-thinking mode, length mask 12000, checkpoints every 10 steps.
# Run on every node after `ray start` (head: `ray start --head`; others: `ray start --address HEAD:6379`), then on
# the head:   NNODES=2 TRAIN_FILE=... VAL_FILE=... bash scripts/verl/qwen3_8b_antisd.sh
# Data: verl parquet files (prompt as chat messages, reward_model.ground_truth, data_source, e.g. "math_dapo").
# PRESET=antisd for the paper-as-written variant, grpo / sd / sd_jsd for the baselines (docs/verl.md).
# The update runs in fixed micro-batches of 2 sequences (≤ 2 × 18,432 tokens: the 36,864-token budget the released
# launcher gives dynamic batching), because the release's warm-up statistic is a mean per *update micro-batch* and
# the plug-in refuses it under dynamic batch sizes; the log-prob passes (old and teacher) keep dynamic batching.
set -euo pipefail
NNODES=${NNODES:-1}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
MODEL=${MODEL:-Qwen/Qwen3-8B}
TRAIN_FILE=${TRAIN_FILE:-$HOME/data/dapo-math-17k/train.parquet}
VAL_FILE=${VAL_FILE:-$HOME/data/aime-2025/test.parquet}
PRESET=${PRESET:-antisd_release}
VAL_N=${VAL_N:-4}
OUT=${OUT:-checkpoints/antisd/qwen3-8b-$PRESET}
CONFIG_DIR=$(python3 -c "from antisd.integrations.verl.config import CONFIG_DIR; print(CONFIG_DIR)")

# BEGIN OVERRIDES (tests_verl check that verl's config accepts every one of these)
ARGS=(
  antisd.preset=$PRESET
  antisd.len_mask=12000
  antisd.gate_warmup_steps=5
  antisd.max_demonstration_tokens=3072
  antisd.max_reprompt_len=4096
  algorithm.adv_estimator=grpo
  algorithm.use_kl_in_reward=false
  data.train_files=$TRAIN_FILE
  data.val_files=$VAL_FILE
  data.train_batch_size=32
  data.max_prompt_length=2048
  data.max_response_length=16384
  +data.apply_chat_template_kwargs.enable_thinking=false
  actor_rollout_ref.model.path=$MODEL
  actor_rollout_ref.model.enable_gradient_checkpointing=true
  actor_rollout_ref.actor.optim.lr=1e-6
  actor_rollout_ref.actor.optim.lr_warmup_steps=0
  actor_rollout_ref.actor.ppo_mini_batch_size=32
  actor_rollout_ref.actor.use_dynamic_bsz=false
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2
  actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=true
  actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=36864
  actor_rollout_ref.actor.use_kl_loss=false
  actor_rollout_ref.actor.entropy_coeff=0
  actor_rollout_ref.actor.loss_agg_mode=token-mean
  actor_rollout_ref.actor.clip_ratio_low=0.2
  actor_rollout_ref.actor.clip_ratio_high=0.2
  actor_rollout_ref.rollout.name=vllm
  actor_rollout_ref.rollout.n=8
  actor_rollout_ref.rollout.temperature=1.0
  actor_rollout_ref.rollout.top_p=1.0
  actor_rollout_ref.rollout.tensor_model_parallel_size=2
  actor_rollout_ref.rollout.gpu_memory_utilization=0.5
  actor_rollout_ref.rollout.max_model_len=35328
  actor_rollout_ref.rollout.val_kwargs.temperature=0.7
  actor_rollout_ref.rollout.val_kwargs.top_p=0.95
  actor_rollout_ref.rollout.val_kwargs.n=$VAL_N
  actor_rollout_ref.rollout.val_kwargs.do_sample=true
  trainer.total_training_steps=200
  trainer.save_freq=10
  trainer.test_freq=10
  trainer.nnodes=$NNODES
  trainer.n_gpus_per_node=$GPUS_PER_NODE
  trainer.default_local_dir=$OUT
  trainer.project_name=antisd
  trainer.experiment_name=qwen3-8b-$PRESET
)
# END OVERRIDES

# Every node must import the plug-in, or verl only says "Unknown trainer 'antisd_sync'": check first, naming the node.
python3 "$(dirname "$0")/check_nodes.py"
exec python3 -m verl.trainer.main_ppo --config-path "$CONFIG_DIR" --config-name antisd_trainer "${ARGS[@]}" "$@"

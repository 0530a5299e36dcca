#!/usr/bin/env bash
# MASPO trained by verl's own trainer (python -m verl.trainer.main_ppo, V1 sync) on a CPU box:
# a tiny random-weight Qwen2 on the embedded arithmetic task (both made in code, nothing downloaded).
# Ships with the package (a wheel install has it); a checkout also has the same entry point at
# examples/run_scripts/cpu/train_maspo_cpu.sh. CPU backend settings: cpu_backend.sh beside this file.
#
#   bash examples/run_scripts/cpu/train_maspo_cpu.sh [HYDRA_OVERRIDE ...]   # or <site-packages>/maspo_verl/sandbox/tiny/train_cpu.sh
#   DRY_RUN=1 bash examples/run_scripts/cpu/train_maspo_cpu.sh   # print the command, validate the config
#
# Environment (all optional): WORK_DIR, MODEL_PATH, TRAIN_FILE, VAL_FILE, CKPT_DIR, TOTAL_STEPS,
# TRAIN_BATCH_SIZE, ROLLOUT_N, PPO_MINI_BATCH_SIZE, PPO_EPOCHS, LEARNING_RATE, MAX_RESPONSE_LENGTH,
# VAL_N, SAVE_FREQ, TEST_FREQ, LOSS_MODE, RAY_TMPDIR, CONFIG_DIR, PYTHON.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

PYTHON=${PYTHON:-python}
# The package's own files, found from this script's location, without importing maspo_verl (which
# imports verl: seconds): the configs are maspo_verl/configs in an install, <checkout>/configs in a checkout.
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PACKAGE_DIR=$(cd "$SCRIPT_DIR/../.." && pwd)
if [[ -z "${CONFIG_DIR:-}" ]]; then
  if [[ -f "$PACKAGE_DIR/configs/maspo.yaml" ]]; then CONFIG_DIR=$PACKAGE_DIR/configs; else CONFIG_DIR=$PACKAGE_DIR/../configs; fi
fi
REWARD_FILE=${REWARD_FILE:-$SCRIPT_DIR/reward.py}
# shellcheck source=cpu_backend.sh
source "$SCRIPT_DIR/cpu_backend.sh"
WORK_DIR=${WORK_DIR:-$PWD/maspo_cpu_run}
MODEL_PATH=${MODEL_PATH:-$WORK_DIR/model}
TRAIN_FILE=${TRAIN_FILE:-$WORK_DIR/data/train.parquet}
VAL_FILE=${VAL_FILE:-$WORK_DIR/data/val.parquet}
CKPT_DIR=${CKPT_DIR:-$WORK_DIR/checkpoints}

TOTAL_STEPS=${TOTAL_STEPS:-3}
TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-8}        # prompts per step
ROLLOUT_N=${ROLLOUT_N:-4}                      # responses per prompt (GRPO group)
PPO_MINI_BATCH_SIZE=${PPO_MINI_BATCH_SIZE:-$TRAIN_BATCH_SIZE}
PPO_EPOCHS=${PPO_EPOCHS:-1}
LEARNING_RATE=${LEARNING_RATE:-1e-3}
MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-20}
MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-8}
VAL_N=${VAL_N:-1}
SAVE_FREQ=${SAVE_FREQ:-$TOTAL_STEPS}
TEST_FREQ=${TEST_FREQ:-$TOTAL_STEPS}
LOSS_MODE=${LOSS_MODE:-maspo}

export VERL_FILE_LOGGER_PATH=${VERL_FILE_LOGGER_PATH:-$WORK_DIR/metrics.jsonl}  # verl's `file` logger

ray_temp_dir=()
if [[ -n "${RAY_TMPDIR:-}" ]]; then
  ray_temp_dir=("++ray_kwargs.ray_init._temp_dir=$RAY_TMPDIR")
fi

args=(
  --config-path="$CONFIG_DIR" --config-name=maspo
  # One policy-loss config class for MASPO, verl's losses and the baselines alike (configs/policy_loss/).
  +policy_loss=baselines
  "${CPU_BACKEND_ARGS[@]}"
  algorithm.adv_estimator=grpo
  actor_rollout_ref.actor.policy_loss.loss_mode="$LOSS_MODE"
  data.train_files="$TRAIN_FILE"
  data.val_files="$VAL_FILE"
  data.train_batch_size="$TRAIN_BATCH_SIZE"
  data.max_prompt_length="$MAX_PROMPT_LENGTH"
  data.max_response_length="$MAX_RESPONSE_LENGTH"
  data.seed=0
  reward.custom_reward_function.path="$REWARD_FILE"
  reward.custom_reward_function.name=compute_score
  actor_rollout_ref.model.path="$MODEL_PATH"
  actor_rollout_ref.actor.optim.lr="$LEARNING_RATE"
  actor_rollout_ref.actor.ppo_mini_batch_size="$PPO_MINI_BATCH_SIZE"
  # one micro-batch per mini-batch (verl requires the mini-batch to split into whole micro-batches)
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=$((PPO_MINI_BATCH_SIZE * ROLLOUT_N))
  actor_rollout_ref.actor.ppo_epochs="$PPO_EPOCHS"
  actor_rollout_ref.actor.entropy_coeff=0
  actor_rollout_ref.actor.calculate_entropy=true
  actor_rollout_ref.rollout.n="$ROLLOUT_N"
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=$((TRAIN_BATCH_SIZE * ROLLOUT_N))
  actor_rollout_ref.rollout.calculate_log_probs=true
  actor_rollout_ref.rollout.val_kwargs.n="$VAL_N"
  actor_rollout_ref.rollout.val_kwargs.do_sample=false
  # Trainer: console + file logs, a checkpoint at the end.
  trainer.total_training_steps="$TOTAL_STEPS"
  trainer.total_epochs=1000
  trainer.val_before_train=true
  trainer.test_freq="$TEST_FREQ"
  trainer.save_freq="$SAVE_FREQ"
  trainer.resume_mode=disable
  trainer.default_local_dir="$CKPT_DIR"
  trainer.project_name=maspo_verl_cpu
  trainer.experiment_name="$LOSS_MODE"
  'trainer.logger=[console,file]'
  "${ray_temp_dir[@]}"
)

if [[ "${DRY_RUN:-0}" == "1" ]]; then
  printf 'VERL_PLATFORM=cpu %s -m verl.trainer.main_ppo' "$PYTHON"
  printf ' %q' "${args[@]}" "$@"
  printf '\n'
  exec "$PYTHON" -m maspo_verl.experiments.dry_run "${args[@]}" "$@"
fi

if [[ ! -f "$MODEL_PATH/config.json" || ! -f "$TRAIN_FILE" || ! -f "$VAL_FILE" ]]; then
  "$PYTHON" -m maspo_verl.sandbox.tiny --out "$WORK_DIR"
fi
mkdir -p "$(dirname "$VERL_FILE_LOGGER_PATH")"
exec "$PYTHON" -m verl.trainer.main_ppo "${args[@]}" "$@"

#!/usr/bin/env bash
# MASPO on a Ray cluster of NNODES GPU nodes (default 2 x 8 GPUs) with the same experiment config as
# the single-node scripts (default EXPERIMENT=r1_distill_7b). One call of this script per step:
#   on the head node:    bash ray_cluster.sh head
#   on every worker:     HEAD_IP=<head ip> bash ray_cluster.sh worker
#   from any machine:    HEAD_IP=<head ip> bash ray_cluster.sh submit [Hydra overrides...]
# `submit` (the default) sends the training command with `ray job submit`; its driver runs on the
# head, so CONFIG_DIR (this checkout's configs/ by default) and DATA_DIR must exist there (shared
# file system, or install maspo-verl on every node and set CONFIG_DIR to its configs folder).
# Baselines: add the method's overrides, e.g. `submit actor_rollout_ref.actor.policy_loss.loss_mode=vanilla`.
# Paper (Table 1): the single-node numbers; more nodes change throughput, not the recipe.
# expect: actor_rollout_ref.actor.policy_loss.loss_mode=maspo trainer.nnodes=2 trainer.n_gpus_per_node=8
# expect: actor_rollout_ref.model.path=deepseek-ai/DeepSeek-R1-Distill-Qwen-7B
set -euo pipefail
# shellcheck source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

role=submit
if [[ $# -gt 0 && "$1" =~ ^(head|worker|submit)$ ]]; then
    role="$1"
    shift
fi
head_ip="${HEAD_IP:-127.0.0.1}"
ray_port="${RAY_PORT:-6379}"
dashboard_port="${RAY_DASHBOARD_PORT:-8265}"
export NNODES="${NNODES:-2}"

case "$role" in
    head)
        maspo_dry_run_or_exec ray start --head --port="$ray_port" \
            --dashboard-host=0.0.0.0 --dashboard-port="$dashboard_port"
        ;;
    worker)
        maspo_dry_run_or_exec ray start --address="$head_ip:$ray_port"
        ;;
    submit)
        experiment="${EXPERIMENT:-r1_distill_7b}"
        maspo_build_command "$experiment" "maspo-$experiment-${NNODES}nodes" -- "$@"
        # The job's processes need the logger paths maspo_build_command exported here.
        runtime_env="{\"env_vars\": {\"VERL_FILE_LOGGER_PATH\": \"$VERL_FILE_LOGGER_PATH\", \"TENSORBOARD_DIR\": \"$TENSORBOARD_DIR\"}}"
        maspo_dry_run_or_exec ray job submit --address="http://$head_ip:$dashboard_port" \
            --runtime-env-json="$runtime_env" -- \
            "${JOB_PYTHON:-python3}" "${MASPO_COMMAND[@]:1}"
        ;;
esac

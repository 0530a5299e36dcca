#!/usr/bin/env bash
# MASPO on a Ray cluster of NNODES GPU nodes (default 2 x 8 GPUs) with the same experiment config as
# the single-node scripts (default EXPERIMENT=r1_distill_7b). One call of this script per step:
#   on the head node:    bash ray_cluster.sh head
#   on every worker:     HEAD_IP=<head ip> bash ray_cluster.sh worker
#   from any machine:    HEAD_IP=<head ip> bash ray_cluster.sh submit [Hydra overrides...]
# `submit` (the default) sends the training command with `ray job submit`; its driver runs on the
# head, so CONFIG_DIR (this checkout's configs/ by default) and DATA_DIR must exist there (shared
# file system, or install maspo-verl on every node and set CONFIG_DIR to its configs folder).
# OUTPUT_DIR must be on a file system every node shares, given as the same absolute path: the job
# makes the run directory itself (on the head), checkpoints are written by every node and the
# metrics by verl's TaskRunner actor, which Ray may place on any node.
# `head` / `worker` pass RAY_NUM_CPUS / RAY_NUM_GPUS (default: GPUS_PER_NODE) to `ray start`.
# Baselines: add the method's overrides, e.g. `submit actor_rollout_ref.actor.policy_loss.loss_mode=vanilla`.
# Paper: the single-node numbers; more nodes change throughput, not the recipe.
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
ray_resources=(--num-gpus="${RAY_NUM_GPUS:-${GPUS_PER_NODE:-8}}")
if [[ -n "${RAY_NUM_CPUS:-}" ]]; then
    ray_resources+=(--num-cpus="$RAY_NUM_CPUS")
fi

case "$role" in
    head)
        maspo_dry_run_or_exec ray start --head --port="$ray_port" "${ray_resources[@]}" \
            --dashboard-host=0.0.0.0 --dashboard-port="$dashboard_port"
        ;;
    worker)
        maspo_dry_run_or_exec ray start --address="$head_ip:$ray_port" "${ray_resources[@]}"
        ;;
    submit)
        experiment="${EXPERIMENT:-r1_distill_7b}"
        if [[ -z "${OUTPUT_DIR:-}" || "${OUTPUT_DIR:0:1}" != / ]]; then
            echo "ray_cluster.sh submit: set OUTPUT_DIR to an absolute path on a file system all nodes share" >&2
            if [[ "${DRY_RUN:-0}" =~ ^(0|false|)$ ]]; then
                exit 2
            fi
        fi
        maspo_build_command "$experiment" "maspo-$experiment-${NNODES}nodes" -- "$@"
        # The job's driver and its actors get the logger paths from the runtime env (the command
        # also carries them in ray_kwargs.ray_init.runtime_env); the job itself, not this machine,
        # makes the run directory and keeps earlier metrics as parts before main_ppo starts.
        runtime_env="{\"env_vars\": {\"VERL_FILE_LOGGER_PATH\": \"$VERL_FILE_LOGGER_PATH\", \"TENSORBOARD_DIR\": \"$TENSORBOARD_DIR\"}}"
        MASPO_RUN_DIR_IN_JOB=1 maspo_dry_run_or_exec ray job submit --address="http://$head_ip:$dashboard_port" \
            --runtime-env-json="$runtime_env" -- \
            sh -c "$MASPO_KEEP_METRICS_PARTS"' && exec "$@"' maspo-job \
            "${JOB_PYTHON:-python3}" "${MASPO_COMMAND[@]:1}"
        ;;
esac

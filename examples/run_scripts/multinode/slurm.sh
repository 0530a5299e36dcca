#!/usr/bin/env bash
#SBATCH --job-name=maspo
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --exclusive
#SBATCH --time=72:00:00
#SBATCH --output=slurm-%x-%j.out
# MASPO on a Slurm allocation (template: adapt the #SBATCH lines to your cluster). Starts a Ray head
# on the first node and a Ray worker on every other one, then runs the single-node scripts' training
# command on the head with trainer.nnodes = the allocation's node count. Submit from the checkout:
#   sbatch examples/run_scripts/multinode/slurm.sh [Hydra overrides...]
#   EXPERIMENT=r1_distill_14b sbatch --nodes=4 examples/run_scripts/multinode/slurm.sh
# Baselines: add the method's overrides, e.g. actor_rollout_ref.actor.policy_loss.loss_mode=vanilla.
# Outside Slurm (DRY_RUN=1 bash slurm.sh) it prints the steps for NNODES placeholder nodes.
# OUTPUT_DIR must be on a file system all nodes share (checkpoints and metrics are written by
# whichever node runs verl's actors). Ray gets --num-cpus = SLURM_CPUS_PER_TASK and --num-gpus =
# GPUS_PER_NODE on every node (as verl's examples/tutorial/slurm/ray_on_slurm.slurm does); the run's
# environment (logger paths) is exported before the Ray nodes start and passed in the runtime env.
# Paper: the single-node numbers; more nodes change throughput, not the recipe.
# expect: actor_rollout_ref.actor.policy_loss.loss_mode=maspo trainer.nnodes=2 trainer.n_gpus_per_node=8
# expect: actor_rollout_ref.model.path=deepseek-ai/DeepSeek-R1-Distill-Qwen-7B
set -euo pipefail
# sbatch runs a copy of this file from Slurm's spool folder: find the checkout from the submit folder.
if [[ -n "${SLURM_JOB_ID:-}" ]]; then
    run_scripts="${MASPO_RUN_SCRIPTS:-$SLURM_SUBMIT_DIR/examples/run_scripts}"
else
    run_scripts="$(dirname "${BASH_SOURCE[0]}")/.."
fi
# shellcheck source=../common.sh
source "$run_scripts/common.sh"

ray_port="${RAY_PORT:-6379}"
if [[ -n "${SLURM_JOB_NODELIST:-}" ]]; then
    mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
    export GPUS_PER_NODE="${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}"
else
    nodes=()
    for ((index = 0; index < ${NNODES:-2}; index++)); do
        nodes+=("node$index")
    done
fi
export NNODES="${#nodes[@]}"
head_node="${nodes[0]}"
if [[ -n "${SLURM_JOB_ID:-}" ]]; then
    head_ip="$(srun --nodes=1 --ntasks=1 -w "$head_node" hostname --ip-address | awk '{print $1}')"
else
    head_ip="<ip of $head_node>"
fi

# The run's command first: it exports VERL_FILE_LOGGER_PATH / TENSORBOARD_DIR, which the Ray nodes
# started below inherit (and the command passes to every actor in ray_kwargs.ray_init.runtime_env).
experiment="${EXPERIMENT:-r1_distill_7b}"
maspo_build_command "$experiment" "maspo-$experiment-${NNODES}nodes" -- "$@"
ray_resources=(--num-cpus="${SLURM_CPUS_PER_TASK:-${RAY_NUM_CPUS:-64}}" --num-gpus="${GPUS_PER_NODE:-8}")

# Each Ray process stays alive in the background for the whole job (--block keeps its srun step open).
# (MASPO_RUN_DIR emptied: a `ray start` is neither validated as the training command nor makes the run directory.)
start_ray() {
    if [[ "${DRY_RUN:-0}" == 0 ]]; then
        MASPO_RUN_DIR="" maspo_dry_run_or_exec "$@" &
    else
        MASPO_RUN_DIR="" maspo_dry_run_or_exec "$@"
    fi
}
start_ray srun --nodes=1 --ntasks=1 -w "$head_node" \
    ray start --head --node-ip-address="$head_ip" --port="$ray_port" "${ray_resources[@]}" --block
for node in "${nodes[@]:1}"; do
    start_ray srun --nodes=1 --ntasks=1 -w "$node" ray start --address="$head_ip:$ray_port" "${ray_resources[@]}" --block
done
if [[ "${DRY_RUN:-0}" == 0 ]]; then
    sleep "${RAY_START_WAIT_SECONDS:-30}"
fi

# main_ppo's ray.init() joins the cluster named by RAY_ADDRESS instead of starting its own.
maspo_dry_run_or_exec env RAY_ADDRESS="$head_ip:$ray_port" "${MASPO_COMMAND[@]}"

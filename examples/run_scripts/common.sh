# shellcheck shell=bash
# Launch logic shared by every experiment script under examples/run_scripts/ (sourced, never run).
#
# An experiment script is a header and one call. To add one (e.g. a new baseline), copy
# 1.5b/grpo.sh and change the marked parts:
#
#   #!/usr/bin/env bash
#   # <What it reproduces: paper table / row, and the number it should approach.>
#   # expect: <key>=<value> [<key>=<value> ...]      <- REQUIRED: tests/test_run_scripts.py runs the
#   #                                                    script with DRY_RUN=1 and checks that the
#   #                                                    composed config holds these values (one or
#   #                                                    more lines, must include the loss_mode)
#   set -euo pipefail
#   source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
#   maspo_launch r1_distill_1p5b grpo-r1-distill-1.5b \       <- experiment overlay, default run name
#       actor_rollout_ref.actor.policy_loss.loss_mode=vanilla \ <- the method's own overrides
#       -- "$@"                                               <- the user's Hydra overrides, last
#
# The experiment overlay is configs/experiment/<name>.yaml applied on configs/maspo.yaml, so every
# script of a scale shares one config and differs only in its method overrides (a baseline verl lacks
# adds +policy_loss=baselines: the baselines' config class and blocks, configs/policy_loss/baselines.yaml).
#
# Environment (all optional; unset means "as in the config"):
#   DRY_RUN=1            print the command, then compose and validate the config with
#                        `python -m maspo_verl.experiments.dry_run` (verl's Hydra config, validate_config, the
#                        registries, worker-side batch checks); starts neither Ray nor a model
#   DRY_RUN=print        print the command only
#   MODEL_PATH           actor_rollout_ref.model.path (local dir or hub name)
#   DATA_DIR             folder written by `python -m maspo_verl.experiments.data --dataset all` [~/data/maspo]
#   TRAIN_FILES          data.train_files [$DATA_DIR/dapo_math.parquet]
#   VAL_FILES            data.val_files, a Hydra list [the six evaluation sets in $DATA_DIR]
#   NNODES, GPUS_PER_NODE  trainer.nnodes, trainer.n_gpus_per_node [1, 8]
#   OUTPUT_DIR           checkpoints, validation generations and logs go to
#                        $OUTPUT_DIR/$PROJECT_NAME/$EXPERIMENT_NAME [./outputs]
#   PROJECT_NAME         trainer.project_name [maspo]
#   EXPERIMENT_NAME      trainer.experiment_name [the script's run name]
#   LOGGER               trainer.logger, e.g. '["console","wandb"]' [console + file]
#   TRAIN_BATCH_SIZE, MINI_BATCH_SIZE, ROLLOUT_N, VAL_N, MAX_PROMPT_LENGTH, MAX_RESPONSE_LENGTH,
#   MAX_TOKEN_LEN_PER_GPU, ROLLOUT_TP, LR, TOTAL_EPOCHS, TEST_FREQ, SAVE_FREQ
#                        the matching keys (see MASPO_ENV_OVERRIDES below)
#   REGIME               a training regime of configs/regime/ applied after the experiment overlay:
#                        reported_512_32 = batch 512 / mini-batch 32 (16 updates per step), as third-party
#                        summaries report the paper's runs; unset = the authors' released template
#                        (1024 / 256, 4 updates per step; configs/experiment/math_rl.yaml)
#   PYTHON               interpreter with maspo-verl and verl installed [python3]
#   CONFIG_DIR           folder holding maspo.yaml [this checkout's configs/, else the installed copy]
#   REHEARSE=cpu         run this very script on a CPU box: its composed config with a printed,
#                        allow-listed substitution (tiny model, hf_cpu rollout, tiny sizes, REHEARSE_STEPS
#                        steps [2]), data prepared from tests/fixtures/datasets, then the Pass@k table and
#                        the plot of the run (see maspo_rehearse below and maspo_verl/sandbox/rehearse.py)
#   REHEARSE=gpu         the same on one CUDA GPU (GPUS_PER_NODE [1]) on the production path: verl's vLLM rollout
#                        as the script sets it, flash-attn with remove-padding, FSDP (scripts/gpu_smoke.sh)
#   REHEARSAL_DIR        where REHEARSE keeps the tiny model and data [$OUTPUT_DIR/rehearsal_inputs_<cpu|gpu>]
#   EVAL_STEP=N          evaluate this run's checkpoints/global_step_N (trainer.val_only, EVAL_N [32]
#                        samples per problem) into <run dir>/eval/global_step_N/ instead of training;
#                        eval/evaluate_checkpoint.sh loops over steps and makes the Pass@k table
#
# A rerun of the same command resumes from the last checkpoint (trainer.resume_mode=auto). verl's
# file logger truncates its file on start, so the metrics logged before are first moved aside as
# metrics.part<N>.jsonl; maspo_verl.experiments.evaluation.plot reads the parts and metrics.jsonl together.

MASPO_RUN_SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"

# Environment variable -> Hydra key, passed only when the variable is set.
MASPO_ENV_OVERRIDES=(
    TRAIN_BATCH_SIZE=data.train_batch_size
    MINI_BATCH_SIZE=actor_rollout_ref.actor.ppo_mini_batch_size
    ROLLOUT_N=actor_rollout_ref.rollout.n
    VAL_N=actor_rollout_ref.rollout.val_kwargs.n
    MAX_PROMPT_LENGTH=data.max_prompt_length
    MAX_RESPONSE_LENGTH=data.max_response_length
    MAX_TOKEN_LEN_PER_GPU=actor_rollout_ref.actor.ppo_max_token_len_per_gpu
    ROLLOUT_TP=actor_rollout_ref.rollout.tensor_model_parallel_size
    LR=actor_rollout_ref.actor.optim.lr
    TOTAL_EPOCHS=trainer.total_epochs
    TEST_FREQ=trainer.test_freq
    SAVE_FREQ=trainer.save_freq
    MODEL_PATH=actor_rollout_ref.model.path
    NNODES=trainer.nnodes
    GPUS_PER_NODE=trainer.n_gpus_per_node
    LOGGER=trainer.logger
)

maspo_config_dir() {
    if [[ -n "${CONFIG_DIR:-}" ]]; then
        echo "$CONFIG_DIR"
    elif [[ -f "$MASPO_RUN_SCRIPTS_DIR/../../configs/maspo.yaml" ]]; then
        (cd "$MASPO_RUN_SCRIPTS_DIR/../../configs" && pwd)
    else
        "$PYTHON" -c 'import os, maspo_verl.configs as c; print(os.path.dirname(c.__file__))'
    fi
}

# maspo_build_command EXPERIMENT RUN_NAME [METHOD_OVERRIDES...] -- [USER_OVERRIDES...]
# Sets MASPO_COMMAND (the main_ppo argv), MASPO_RUN_DIR and exports the logger paths.
maspo_build_command() {
    local experiment="$1" run_name="$2"
    shift 2
    local method=()
    while [[ $# -gt 0 && "$1" != "--" ]]; do
        method+=("$1")
        shift
    done
    [[ $# -gt 0 ]] && shift  # the "--"

    local data_dir="${DATA_DIR:-$HOME/data/maspo}"
    local project="${PROJECT_NAME:-maspo}"
    local name="${EXPERIMENT_NAME:-$run_name}"
    MASPO_RUN_DIR="${OUTPUT_DIR:-$PWD/outputs}/$project/$name"
    # EVAL_STEP=N: evaluate this run's checkpoint global_step_N instead of training (trainer.val_only;
    # verl's V1 trainer loads the checkpoint before its validation, trainer/ppo/v1/trainer_base.py).
    local logs_dir="$MASPO_RUN_DIR" evaluation=()
    if [[ -n "${EVAL_STEP:-}" ]]; then
        logs_dir="$MASPO_RUN_DIR/eval/global_step_$EVAL_STEP"
        evaluation=(
            trainer.val_only=true
            trainer.val_before_train=true
            trainer.resume_mode=resume_path
            "trainer.resume_from_path=$MASPO_RUN_DIR/checkpoints/global_step_$EVAL_STEP"
            "trainer.validation_data_dir=$logs_dir/val_generations"
            # [paper] Avg@32 / Pass@32: 32 samples per problem (the training config validates with fewer).
            "actor_rollout_ref.rollout.val_kwargs.n=${EVAL_N:-32}"
        )
    fi
    # verl's file logger and TensorBoard writer read these; maspo_verl.experiments.evaluation.plot reads their files.
    export VERL_FILE_LOGGER_PATH="${VERL_FILE_LOGGER_PATH:-$logs_dir/metrics.jsonl}"
    export TENSORBOARD_DIR="${TENSORBOARD_DIR:-$logs_dir/tensorboard}"

    local eval_sets=(aime24 aime25 amc23 math500 minerva olympiadbench) val_list="" set_name
    for set_name in "${eval_sets[@]}"; do
        val_list+="${val_list:+,}$data_dir/$set_name.parquet"
    done

    MASPO_COMMAND=(
        "$PYTHON" -m verl.trainer.main_ppo
        "--config-path=$(maspo_config_dir)" --config-name=maspo "+experiment=$experiment"
        ${REGIME:+"+regime=$REGIME"}
        "data.train_files=${TRAIN_FILES:-$data_dir/dapo_math.parquet}"
        "data.val_files=${VAL_FILES:-[$val_list]}"
        "trainer.project_name=$project"
        "trainer.experiment_name=$name"
        "trainer.default_local_dir=$MASPO_RUN_DIR/checkpoints"
        "trainer.validation_data_dir=$MASPO_RUN_DIR/val_generations"
        # Ray actors (the TaskRunner holds the file logger) take their environment from their
        # node's `ray start`, plus this runtime_env, which verl merges into ray.init's (main_ppo.py).
        "++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH=$VERL_FILE_LOGGER_PATH"
        "++ray_kwargs.ray_init.runtime_env.env_vars.TENSORBOARD_DIR=$TENSORBOARD_DIR"
    )
    local pair variable
    for pair in "${MASPO_ENV_OVERRIDES[@]}"; do
        variable="${pair%%=*}"
        if [[ -n "${!variable:-}" ]]; then
            MASPO_COMMAND+=("${pair#*=}=${!variable}")
        fi
    done
    MASPO_COMMAND+=("${evaluation[@]}" "${method[@]}" "$@")
    MASPO_USER_ARGS=("$@")
}

# verl's FileLogger opens VERL_FILE_LOGGER_PATH with "wb" (verl/utils/tracking.py): before a run
# (or a resumed run) starts, its folder is made and a non-empty metrics file becomes the next
# metrics.part<N>.jsonl. One sh snippet, run here or inside a Ray job (multinode/ray_cluster.sh).
# shellcheck disable=SC2016  # expanded by the sh that runs it
MASPO_KEEP_METRICS_PARTS='p="$VERL_FILE_LOGGER_PATH"; mkdir -p "$(dirname "$p")" || exit 1; if [ -s "$p" ]; then n=1; while [ -e "${p%.jsonl}.part$n.jsonl" ]; do n=$((n + 1)); done; mv "$p" "${p%.jsonl}.part$n.jsonl" && echo "[maspo] kept the metrics logged so far as ${p%.jsonl}.part$n.jsonl"; fi'
maspo_keep_metrics_parts() {
    if [[ -n "${VERL_FILE_LOGGER_PATH:-}" ]]; then
        sh -c "$MASPO_KEEP_METRICS_PARTS"
    fi
}

# Prints a command so that it can be pasted back into a shell (with the logger paths it needs).
maspo_print_command() {
    if [[ -n "${MASPO_RUN_DIR:-}" ]]; then
        echo "[maspo] run directory: $MASPO_RUN_DIR"
    fi
    echo "[maspo] command:"
    if [[ -n "${MASPO_RUN_DIR:-}" ]]; then
        printf 'VERL_FILE_LOGGER_PATH=%q TENSORBOARD_DIR=%q ' "$VERL_FILE_LOGGER_PATH" "$TENSORBOARD_DIR"
    fi
    printf '%q ' "$@"
    printf '\n'
}

# maspo_dry_run_or_exec COMMAND...: run COMMAND; under DRY_RUN only print it and, when
# maspo_build_command has built a training command, compose and validate that command's config.
maspo_dry_run_or_exec() {
    case "${DRY_RUN:-0}" in
        0 | "" | false)
            # MASPO_RUN_DIR_IN_JOB=1: the command itself makes the run directory where it runs.
            if [[ -n "${MASPO_RUN_DIR:-}" && "${MASPO_RUN_DIR_IN_JOB:-0}" != 1 ]]; then
                mkdir -p "$MASPO_RUN_DIR"
                maspo_keep_metrics_parts
            fi
            "$@"
            ;;
        print)
            maspo_print_command "$@"
            ;;
        *)
            maspo_print_command "$@"
            if [[ -n "${MASPO_RUN_DIR:-}" ]]; then
                # MASPO_COMMAND is: python -m verl.trainer.main_ppo <what the dry run composes>.
                "$PYTHON" -m maspo_verl.experiments.dry_run "${MASPO_COMMAND[@]:3}"
            fi
            ;;
    esac
}

# maspo_launch EXPERIMENT RUN_NAME [METHOD_OVERRIDES...] -- [USER_OVERRIDES...]: one single-node run.
maspo_launch() {
    if [[ -n "${REHEARSE:-}" ]]; then
        maspo_rehearse "$@"
        return
    fi
    maspo_build_command "$@"
    maspo_dry_run_or_exec "${MASPO_COMMAND[@]}"
}

# The rehearsal's sizes: each key is of a kind maspo_verl/sandbox/rehearse.py allows to change (sizes and
# token budgets, lengths, steps, validation n/frequency, devices, CUDA-only options); the preflight
# refuses any other change. Sets MASPO_REHEARSAL_ARGS (CPU_BACKEND_ARGS come first).
maspo_rehearsal_args() {
    local inputs="$1" steps="${REHEARSE_STEPS:-2}" backend_args=()
    if [[ "$REHEARSE" == gpu ]]; then
        # The production path on one node of GPUS_PER_NODE [1] CUDA GPUs (scripts/gpu_smoke.sh): verl's
        # vLLM rollout at the script's tensor parallelism and memory share with CUDA graphs, flash-attn with
        # remove-padding, dynamic batch size, FSDP; only the process counts shrink. 14B's vLLM TP 2 needs
        # GPUS_PER_NODE=2.
        backend_args=(
            trainer.nnodes=1
            "trainer.n_gpus_per_node=${GPUS_PER_NODE:-1}"
            actor_rollout_ref.rollout.agent.num_workers=1
            data.dataloader_num_workers=0
            reward.num_workers=1
            transfer_queue.backend.SimpleStorage.num_data_storage_units=1
        )
    else
        # The CPU backend ships with the package's sandbox; ask the package where (a checkout or a wheel).
        local backend
        backend="$("$PYTHON" -c 'import maspo_verl.sandbox.tiny as tiny; print(tiny.CPU_BACKEND_SCRIPT)')"
        # shellcheck source=../../maspo_verl/sandbox/tiny/cpu_backend.sh
        source "$backend"
        backend_args=("${CPU_BACKEND_ARGS[@]}")
    fi
    MASPO_REHEARSAL_ARGS=(
        "${backend_args[@]}"
        "actor_rollout_ref.model.path=$inputs/model"
        # 4 prompts x 4 responses a step in 2 mini-batches (two PPO updates, so the ratio leaves 1).
        data.train_batch_size=4
        actor_rollout_ref.actor.ppo_mini_batch_size=2
        actor_rollout_ref.rollout.n=4
        # Fixture prompts are < 256 tiny-tokenizer tokens; budgets hold four whole sequences.
        data.max_prompt_length=256
        data.max_response_length=32
        actor_rollout_ref.actor.ppo_max_token_len_per_gpu=1152
        actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=1152
        actor_rollout_ref.rollout.max_num_batched_tokens=1152
        # FSDP offload (14B) moves GPU memory to the host: nothing to move on CPU.
        actor_rollout_ref.actor.fsdp_config.param_offload=false
        actor_rollout_ref.actor.fsdp_config.optimizer_offload=false
        "trainer.total_training_steps=$steps"
        "trainer.test_freq=$steps"
        actor_rollout_ref.rollout.val_kwargs.n=2
    )
    if [[ -n "${RAY_TMPDIR:-}" ]]; then
        MASPO_REHEARSAL_ARGS+=("++ray_kwargs.ray_init._temp_dir=$RAY_TMPDIR")
    fi
}

# maspo_rehearse EXPERIMENT RUN_NAME [METHOD_OVERRIDES...] -- [USER_OVERRIDES...]: REHEARSE=cpu.
# The script's real command with MASPO_REHEARSAL_ARGS inserted before the user's overrides; the
# preflight prints the substitution (the composed configs' difference) and refuses keys outside
# the allow-list; after training, the Pass@k table and the plot are made from the run's outputs.
maspo_rehearse() {
    if [[ "$REHEARSE" != cpu && "$REHEARSE" != gpu ]]; then
        echo "REHEARSE=$REHEARSE: use REHEARSE=cpu (a CPU box) or REHEARSE=gpu (one CUDA GPU, vLLM)" >&2
        return 2
    fi
    local inputs="${REHEARSAL_DIR:-${OUTPUT_DIR:-$PWD/outputs}/rehearsal_inputs_$REHEARSE}"
    DATA_DIR="${DATA_DIR:-$inputs/data}" maspo_build_command "$@"
    local real=("${MASPO_COMMAND[@]}")
    local head_length=$((${#MASPO_COMMAND[@]} - ${#MASPO_USER_ARGS[@]}))
    maspo_rehearsal_args "$inputs"
    MASPO_COMMAND=("${MASPO_COMMAND[@]:0:head_length}" "${MASPO_REHEARSAL_ARGS[@]}" "${MASPO_USER_ARGS[@]}")
    local preflight=("$PYTHON" -m maspo_verl.sandbox.rehearse preflight --inputs "$inputs" --backend "$REHEARSE")
    case "${DRY_RUN:-0}" in
        print)
            maspo_print_command "${MASPO_COMMAND[@]}"
            return
            ;;
        0 | "" | false) ;;
        *)
            maspo_print_command "${MASPO_COMMAND[@]}"
            "${preflight[@]}" --no-prepare --real "${real[@]:3}" --rehearsal "${MASPO_COMMAND[@]:3}"
            return
            ;;
    esac
    "${preflight[@]}" --real "${real[@]:3}" --rehearsal "${MASPO_COMMAND[@]:3}"
    maspo_print_command "${MASPO_COMMAND[@]}"
    mkdir -p "$MASPO_RUN_DIR"
    maspo_keep_metrics_parts
    "${MASPO_COMMAND[@]}"
    # = python -m maspo_verl.experiments.evaluation.pass_at_k <run>/val_generations --k 2 > <run>/pass_at_k.md and
    #   python -m maspo_verl.experiments.evaluation.plot <metrics> -o <run>/training_dynamics.png, in one interpreter.
    "$PYTHON" -m maspo_verl.sandbox.rehearse report --run-dir "$MASPO_RUN_DIR" --metrics "$VERL_FILE_LOGGER_PATH" \
        --label "${EXPERIMENT_NAME:-$2}" --k 2
}

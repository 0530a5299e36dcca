#!/usr/bin/env bash
# GPU smoke check of the production path (target: under 10 minutes on one H100-class GPU, model
# download excluded). Run it in the environment that will train (verl, vLLM, flash-attn and
# maspo-verl installed: docs/experiments.md, "Installing on a GPU cluster"). From the repository root:
#
#   bash scripts/gpu_smoke.sh                        # every stage; exit status = number of failed stages
#   DRY_RUN=1 bash scripts/gpu_smoke.sh              # compose and validate every run's config; run nothing
#   REHEARSE=cpu bash scripts/gpu_smoke.sh           # the same stages on CPU with the tiny model (a test runs it)
#   bash scripts/gpu_smoke.sh --print                # print the commands, run nothing
#
# Stages, in order:
#   loss   benchmarks/gpu_loss_check.py: MASPO's gate math and custom autograd against an independent
#          torch reference on the GPU, and their time per million tokens in bf16 and fp32 (torch only)
#   runs   verl's trainer through the experiment scripts' own config (examples/run_scripts/1.5b/maspo.sh and
#          grpo.sh with REHEARSE=gpu: flash-attn with remove-padding, dynamic batch size, FSDP, vLLM at the
#          scripts' tensor parallelism, CUDA graphs on) on MODEL_PATH, with the smoke reward (math reward +
#          a response-hash bonus: nonzero advantages whatever the model solves), 8 prompts a step:
#            maspo_dp1        MASPO, 1 step, one mini-batch (on-policy), 1 GPU
#            vanilla_dp1      verl's vanilla loss, the same run and seed
#            maspo_dp2        MASPO as maspo_dp1 on 2 GPUs (data-parallel 2; only when 2 GPUs are there)
#            maspo_offpolicy  MASPO, 3 steps of 4 mini-batches, on all GPUs up to 2
#   check  python -m maspo_verl.experiments.smoke check on the runs' metrics: on-policy loss = -token-mean
#          advantage for MASPO and vanilla (r = 1), MASPO = vanilla and DP1 = DP2 when rollouts coincide, the gate
#          acts on every off-policy step; writes seconds per step to <workdir>/smoke_result.json
#
# Environment: MODEL_PATH [Qwen/Qwen2.5-0.5B-Instruct; REHEARSE=cpu: the tiny model], PYTHON [python3],
# SMOKE_GPUS [GPUs nvidia-smi lists; REHEARSE=cpu: 1], SMOKE_LR [1e-5; cpu 2.5e-4], SMOKE_RESPONSE_LENGTH
# [1024; cpu 32], SMOKE_ATOL [2e-3], SMOKE_LOSS_TOKENS [4M; cpu 256k], REHEARSE_STEPS of the off-policy run [3],
# RAY_TMPDIR.
# Outputs go to --workdir [gpu_smoke_out/]: runs/, logs/, loss_check.json, smoke_result.json.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
workdir="${GPU_SMOKE_WORKDIR:-$repo/gpu_smoke_out}"
all_stages=(loss runs check)
stages=("${all_stages[@]}")
print_only=0
mode="${REHEARSE:-gpu}"
dry_run="${DRY_RUN:-0}"
[[ "$dry_run" == 0 || "$dry_run" == false ]] && dry_run=""
PYTHON="${PYTHON:-python3}"

usage() {
    sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    echo "Options: --only STAGE[,STAGE...]  --workdir DIR  --print  --help"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --only)
            [[ $# -ge 2 ]] || { echo "gpu_smoke.sh: --only needs a value" >&2; exit 2; }
            IFS=, read -ra stages <<<"$2"
            for stage in "${stages[@]}"; do
                if [[ ! " ${all_stages[*]} " == *" $stage "* ]]; then
                    echo "gpu_smoke.sh: unknown stage '$stage' (choose from: ${all_stages[*]})" >&2
                    exit 2
                fi
            done
            shift 2
            ;;
        --workdir)
            [[ $# -ge 2 ]] || { echo "gpu_smoke.sh: --workdir needs a value" >&2; exit 2; }
            workdir="$2"; shift 2
            ;;
        --print) print_only=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "gpu_smoke.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
case "$mode" in
    gpu | cpu) ;;
    *) echo "gpu_smoke.sh: REHEARSE=$mode: use REHEARSE=cpu (CPU, tiny model) or leave it unset (GPU)" >&2; exit 2 ;;
esac
workdir="$(mkdir -p "$workdir" && cd "$workdir" && pwd)"

if [[ "$mode" == gpu ]]; then
    if [[ -z "${SMOKE_GPUS:-}" ]]; then
        if [[ -z "$dry_run" && "$print_only" == 0 ]]; then
            if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
                echo "FAIL gpu    nvidia-smi finds no GPU: this smoke check needs a CUDA device (REHEARSE=cpu runs it on CPU)" >&2
                exit 1
            fi
            SMOKE_GPUS="$(nvidia-smi -L | grep -c '^GPU ')"
        else
            SMOKE_GPUS=2  # what a dry run validates
        fi
    fi
    device=cuda
    lr="${SMOKE_LR:-1e-5}"
    response_length="${SMOKE_RESPONSE_LENGTH:-1024}"
    prompt_length=512
    loss_tokens="${SMOKE_LOSS_TOKENS:-4194304}"
else
    SMOKE_GPUS="${SMOKE_GPUS:-1}"
    device=cpu
    lr="${SMOKE_LR:-2.5e-4}"
    response_length="${SMOKE_RESPONSE_LENGTH:-32}"
    prompt_length=256  # the tiny model's position table holds 512
    loss_tokens="${SMOKE_LOSS_TOKENS:-262144}"
fi
[[ "$SMOKE_GPUS" =~ ^[1-9][0-9]*$ ]] || { echo "gpu_smoke.sh: SMOKE_GPUS must be a positive integer" >&2; exit 2; }
# Token budgets of the dynamic batch size: four full sequences, so a mini-batch spans micro-batches.
budget=$((4 * (prompt_length + response_length)))
offpolicy_dp=$((SMOKE_GPUS >= 2 ? 2 : 1))
run_names=(maspo_dp1 vanilla_dp1)
[[ "$SMOKE_GPUS" -ge 2 ]] && run_names+=(maspo_dp2)
run_names+=(maspo_offpolicy)

# run_command NAME: the command of one run, in RUN_COMMAND (an experiment script under REHEARSE=gpu|cpu).
run_command() {
    local name="$1" script=maspo.sh dp=1 steps=1 mini_batch=8
    case "$name" in
        vanilla_dp1) script=grpo.sh ;;
        maspo_dp2) dp=2 ;;
        maspo_offpolicy) dp="$offpolicy_dp" steps="${REHEARSE_STEPS:-3}" mini_batch=2 ;;
    esac
    local overrides=(
        reward.custom_reward_function.path=pkg://maspo_verl.experiments.smoke
        trainer.val_before_train=false
        data.train_batch_size=8
        "actor_rollout_ref.actor.ppo_mini_batch_size=$mini_batch"
        "trainer.n_gpus_per_node=$dp"
        "data.max_prompt_length=$prompt_length"
        "data.max_response_length=$response_length"
        "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=$budget"
        "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=$budget"
        "actor_rollout_ref.rollout.max_num_batched_tokens=$budget"
        "actor_rollout_ref.actor.optim.lr=$lr"
        # verl's warm-up starts at lr 0 (step / warm-up steps): the first step would not move the policy.
        actor_rollout_ref.actor.optim.lr_warmup_steps=0
        trainer.save_freq=-1
    )
    if [[ "$mode" == gpu ]]; then
        overrides+=("actor_rollout_ref.model.path=${MODEL_PATH:-Qwen/Qwen2.5-0.5B-Instruct}")
    elif [[ "$dp" -gt 1 ]]; then
        overrides+=("++ray_kwargs.ray_init.num_gpus=$dp")
    fi
    RUN_COMMAND=(env "REHEARSE=$mode" "REHEARSE_STEPS=$steps" "PYTHON=$PYTHON" "OUTPUT_DIR=$workdir/runs"
        "REHEARSAL_DIR=$workdir/rehearsal_inputs" "EXPERIMENT_NAME=$name" "PROJECT_NAME=smoke"
        bash "$repo/examples/run_scripts/1.5b/$script" "${overrides[@]}")
    if [[ -n "$dry_run" ]]; then
        RUN_COMMAND=(env "DRY_RUN=$dry_run" "${RUN_COMMAND[@]:1}")
    fi
}

metrics_file() { echo "$workdir/runs/smoke/$1/metrics.jsonl"; }

failures=0
# run_logged LABEL LOG COMMAND...: run COMMAND into LOG with one PASS/FAIL line (or print it under --print).
run_logged() {
    local label="$1" log="$2" started
    shift 2
    if [[ "$print_only" == 1 ]]; then
        printf '%s:' "$label"
        printf ' %q' "$@"
        printf '\n'
        return 0
    fi
    started=$(date +%s)
    if (cd "$repo" && "$@") >"$log" 2>&1; then
        printf 'PASS %-16s %4ds  (log: %s)\n' "$label" "$(($(date +%s) - started))" "$log"
    else
        printf 'FAIL %-16s %4ds  (log: %s; last lines below)\n' "$label" "$(($(date +%s) - started))" "$log"
        tail -n 20 "$log" | sed 's/^/    /'
        return 1
    fi
}

# validate_run NAME: DRY_RUN=1 of a run = the script's preflight (composition, allowed substitution), then
# verl's validation of the very command the run would execute (python -m maspo_verl.experiments.dry_run).
# shellcheck disable=SC2329  # invoked through run_logged
validate_run() {
    local name="$1" line words
    run_command "$name"
    "${RUN_COMMAND[@]}" || return 1
    RUN_COMMAND[1]=DRY_RUN=print
    line="$("${RUN_COMMAND[@]}" | grep -A1 '^\[maspo\] command:' | tail -n 1)"
    eval "words=($line)"
    local index
    for index in "${!words[@]}"; do
        if [[ "${words[$index]}" == verl.trainer.main_ppo ]]; then
            "$PYTHON" -m maspo_verl.experiments.dry_run "${words[@]:index+1}"
            return
        fi
    done
    echo "gpu_smoke.sh: no main_ppo command in the run script's output" >&2
    return 1
}

mkdir -p "$workdir/logs"
echo "gpu_smoke: mode ${mode}${dry_run:+ (DRY_RUN=$dry_run)}, ${SMOKE_GPUS} device(s), runs: ${run_names[*]}, workdir $workdir"
total_started=$(date +%s)
for stage in "${stages[@]}"; do
    case "$stage" in
        loss)
            if [[ -n "$dry_run" ]]; then
                echo "SKIP loss             (DRY_RUN)"
                continue
            fi
            run_logged loss "$workdir/logs/loss.log" "$PYTHON" "$repo/benchmarks/gpu_loss_check.py" \
                --device "$device" --tokens "$loss_tokens" --output "$workdir/loss_check.json" || failures=$((failures + 1))
            ;;
        runs)
            for name in "${run_names[@]}"; do
                if [[ -n "$dry_run" ]]; then
                    run_command "$name"
                    if [[ "$print_only" == 1 ]]; then
                        run_logged "$name" /dev/null "${RUN_COMMAND[@]}"
                    else
                        run_logged "$name" "$workdir/logs/$name.dry_run.log" validate_run "$name" || failures=$((failures + 1))
                    fi
                    continue
                fi
                run_command "$name"
                if [[ "$print_only" == 0 ]]; then
                    # a rerun starts afresh: verl would resume from a checkpoint and the metrics would mix
                    rm -rf "$workdir/runs/smoke/$name"
                fi
                run_logged "$name" "$workdir/logs/$name.log" "${RUN_COMMAND[@]}" || failures=$((failures + 1))
            done
            ;;
        check)
            if [[ -n "$dry_run" ]]; then
                echo "SKIP check            (DRY_RUN)"
                continue
            fi
            check=("$PYTHON" -m maspo_verl.experiments.smoke check --output "$workdir/smoke_result.json"
                --atol "${SMOKE_ATOL:-2e-3}")
            for name in "${run_names[@]}"; do
                check+=(--run "$name=$(metrics_file "$name")")
            done
            run_logged check "$workdir/logs/check.log" "${check[@]}" || failures=$((failures + 1))
            if [[ "$print_only" == 0 && -f "$workdir/logs/check.log" ]]; then
                sed 's/^/    /' "$workdir/logs/check.log"
            fi
            ;;
    esac
done
if [[ "$print_only" == 0 ]]; then
    echo "gpu_smoke: ${#stages[@]} stage(s), $failures failed, $(($(date +%s) - total_started))s"
fi
exit "$failures"

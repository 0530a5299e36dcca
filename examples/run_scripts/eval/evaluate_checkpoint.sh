#!/usr/bin/env bash
# The paper's Avg@32 / Pass@32 (arXiv 2602.17550; as the authors' README reports them) of chosen checkpoints of a training run:
# verl's own trainer with trainer.val_only=true on the run's own config (the same script and
# environment as the training), loading checkpoints/global_step_<N> (trainer.resume_mode=resume_path),
# 32 samples per problem at temperature 0.6 / top-p 0.95 over the six benchmarks. Training validates
# with only 4 samples every test_freq steps (configs/experiment/math_rl.yaml); this is the full protocol.
#   TRAIN_SCRIPT=7b/maspo.sh STEPS="200 340" bash examples/run_scripts/eval/evaluate_checkpoint.sh [HYDRA_OVERRIDE ...]
# Each step writes <run dir>/eval/global_step_<N>/{val_generations/<N>.jsonl,metrics.jsonl}; then
# `python -m maspo_verl.experiments.evaluation.pass_at_k` prints one table row per step (also saved as
# <run dir>/eval/pass_at_32.md). Environment: TRAIN_SCRIPT [1.5b/maspo.sh], STEPS [50], EVAL_N [32],
# plus everything the training script reads (OUTPUT_DIR, EXPERIMENT_NAME, MODEL_PATH, DATA_DIR, ...).
# expect: actor_rollout_ref.actor.policy_loss.loss_mode=maspo trainer.val_only=true trainer.resume_mode=resume_path
# expect: actor_rollout_ref.rollout.val_kwargs.n=32 actor_rollout_ref.rollout.val_kwargs.temperature=0.6
set -euo pipefail
run_scripts="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
train_script="$run_scripts/${TRAIN_SCRIPT:-1.5b/maspo.sh}"
if [[ ! -f "$train_script" ]]; then
    echo "evaluate_checkpoint.sh: TRAIN_SCRIPT=${TRAIN_SCRIPT:-} is not a script under $run_scripts" >&2
    exit 2
fi
read -ra steps <<<"${STEPS:-50}"
python="${PYTHON:-python3}"
dumps=() labels=()
for step in "${steps[@]}"; do
    if [[ ! "$step" =~ ^[0-9]+$ ]]; then
        echo "evaluate_checkpoint.sh: STEPS must hold checkpoint step numbers, got '$step'" >&2
        exit 2
    fi
    # The run directory as the training script computes it (its printed command, nothing started).
    run_dir="$(DRY_RUN=print EVAL_STEP="$step" bash "$train_script" "$@" | sed -n 's/^\[maspo\] run directory: //p' | tail -n 1)"
    EVAL_STEP="$step" bash "$train_script" "$@"
    dumps+=("$run_dir/eval/global_step_$step/val_generations")
    labels+=(--label "$(basename "$run_dir") step $step")
done
case "${DRY_RUN:-0}" in
    0 | "" | false)
        "$python" -m maspo_verl.experiments.evaluation.pass_at_k "${dumps[@]}" "${labels[@]}" --k "${EVAL_N:-32}" \
            | tee "$(dirname "$(dirname "${dumps[0]}")")/pass_at_${EVAL_N:-32}.md"
        ;;
    *)
        echo "[maspo] then: $python -m maspo_verl.experiments.evaluation.pass_at_k ${dumps[*]} --k ${EVAL_N:-32}"
        ;;
esac

#!/usr/bin/env bash
# Sensitivity to the mass-adaptive exponent alpha (arXiv 2602.17550, hyper-parameter analysis; the
# authors use 0.5 at 1.5B and 0.3 at 7B/14B). One run per value; the sweep is a loop:
#   for a in 0.0 0.1 0.3 0.5 0.7 1.0; do ALPHA=$a bash examples/run_scripts/ablations/alpha_sensitivity.sh; done
# Runs at 1.5B by default; EXPERIMENT=r1_distill_7b (or _14b) picks another scale.
# Paper: not reported here (the paper's ablation numbers are not public); expected below MASPO at the same scale.
# expect: actor_rollout_ref.actor.policy_loss.loss_mode=maspo actor_rollout_ref.actor.policy_loss.maspo.alpha=0.1
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
experiment="${EXPERIMENT:-r1_distill_1p5b}"
alpha="${ALPHA:-0.1}"
maspo_launch "$experiment" "maspo-alpha$alpha-$experiment" \
    actor_rollout_ref.actor.policy_loss.maspo.alpha="$alpha" \
    -- "$@"

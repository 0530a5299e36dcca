#!/usr/bin/env bash
# Sensitivity to the risk-controller slopes beta_pos / beta_neg (arXiv 2602.17550, hyper-parameter
# analysis; the authors use 0.03 for both). BETA sets both; BETA_POS / BETA_NEG set one side:
#   for b in 0.0 0.01 0.03 0.05 0.1; do BETA=$b bash examples/run_scripts/ablations/beta_sensitivity.sh; done
# Runs at 1.5B by default; EXPERIMENT=r1_distill_7b (or _14b) picks another scale.
# Paper: not reported here (the paper's ablation numbers are not public); expected below MASPO at the same scale.
# expect: actor_rollout_ref.actor.policy_loss.loss_mode=maspo actor_rollout_ref.actor.policy_loss.maspo.beta_pos=0.01 actor_rollout_ref.actor.policy_loss.maspo.beta_neg=0.01
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
experiment="${EXPERIMENT:-r1_distill_1p5b}"
beta_pos="${BETA_POS:-${BETA:-0.01}}"
beta_neg="${BETA_NEG:-${BETA:-0.01}}"
maspo_launch "$experiment" "maspo-beta$beta_pos-$beta_neg-$experiment" \
    actor_rollout_ref.actor.policy_loss.maspo.beta_pos="$beta_pos" \
    actor_rollout_ref.actor.policy_loss.maspo.beta_neg="$beta_neg" \
    -- "$@"

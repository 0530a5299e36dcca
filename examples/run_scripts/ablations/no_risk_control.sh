#!/usr/bin/env bash
# Ablation "no risk controller" (arXiv 2602.17550, ablation study): both asymmetric risk factors fixed
# at 1, so positive and negative advantages get the same width (policy_loss.maspo.risk_control=false).
# Runs at 1.5B by default; EXPERIMENT=r1_distill_7b (or _14b) picks another scale.
# Paper: not reported here (the paper's ablation numbers are not public); expected below MASPO at the same scale.
# expect: actor_rollout_ref.actor.policy_loss.loss_mode=maspo actor_rollout_ref.actor.policy_loss.maspo.risk_control=false
# expect: actor_rollout_ref.actor.policy_loss.maspo.gate=gaussian actor_rollout_ref.actor.policy_loss.maspo.mass_adaptive=true
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
experiment="${EXPERIMENT:-r1_distill_1p5b}"
maspo_launch "$experiment" "maspo-no-risk-control-$experiment" \
    actor_rollout_ref.actor.policy_loss.maspo.risk_control=false \
    -- "$@"

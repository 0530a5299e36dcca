#!/usr/bin/env bash
# Ablation "no mass-adaptive limiter" (arXiv 2602.17550, ablation study): the trust-region width stays
# sigma_base for every token instead of growing for low-probability tokens (policy_loss.maspo.mass_adaptive=false).
# Runs at 1.5B by default; EXPERIMENT=r1_distill_7b (or _14b) picks another scale.
# Paper: not reported here (the paper's ablation numbers are not public); expected below MASPO at the same scale.
# expect: actor_rollout_ref.actor.policy_loss.loss_mode=maspo actor_rollout_ref.actor.policy_loss.maspo.mass_adaptive=false
# expect: actor_rollout_ref.actor.policy_loss.maspo.gate=gaussian actor_rollout_ref.actor.policy_loss.maspo.risk_control=true
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
experiment="${EXPERIMENT:-r1_distill_1p5b}"
maspo_launch "$experiment" "maspo-no-mass-adaptive-$experiment" \
    actor_rollout_ref.actor.policy_loss.maspo.mass_adaptive=false \
    -- "$@"

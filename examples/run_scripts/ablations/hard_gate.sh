#!/usr/bin/env bash
# Ablation "no soft gate" (arXiv 2602.17550, ablation study): MASPO's Gaussian gate replaced by a hard
# PPO clip whose bounds keep MASPO's mass-adaptive, risk-controlled widths (policy_loss.maspo.gate=hard).
# Runs at 1.5B by default; EXPERIMENT=r1_distill_7b (or _14b) picks another scale.
# Paper: not reported here (the paper's ablation numbers are not public); expected below MASPO at the same scale.
# Second difference from MASPO, beside the gate: the hard clip comes with verl's dual clip
# (actor.clip_ratio_c, 3.0: the loss of A < 0 tokens is capped at -A * c), which soft-gated MASPO does not have
# (its A < 0, r > 1 side is unbounded). The metric actor/ratio/max_neg shows how far that side went.
# expect: actor_rollout_ref.actor.policy_loss.loss_mode=maspo actor_rollout_ref.actor.policy_loss.maspo.gate=hard
# expect: actor_rollout_ref.actor.policy_loss.maspo.mass_adaptive=true actor_rollout_ref.actor.policy_loss.maspo.risk_control=true
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
experiment="${EXPERIMENT:-r1_distill_1p5b}"
maspo_launch "$experiment" "maspo-hard-gate-$experiment" \
    actor_rollout_ref.actor.policy_loss.maspo.gate=hard \
    -- "$@"

#!/usr/bin/env bash
# Entropy Advantage baseline (arXiv 2506.14758) on DeepSeek-R1-Distill-Qwen-14B: GRPO whose advantages get
# min(0.4 * H, |A| / 2) from the policy's per-token entropy H, through the opt-in ppo_loss patch that
# policy_loss.entropy_advantage.enable=true applies; verl computes H in the actor forward only with
# actor.calculate_entropy=true. alpha 0.4 / kappa 2 are unverified against the paper's text (see docs/baselines.md).
# Paper: not reported. Our extension, not a paper row: at 14B the paper reports only GRPO and MASPO
# (the authors' README); compare with 14b/grpo.sh and 14b/maspo.sh run the same way.
# expect: actor_rollout_ref.actor.policy_loss.loss_mode=vanilla actor_rollout_ref.actor.policy_loss.entropy_advantage.enable=true actor_rollout_ref.actor.calculate_entropy=true
# expect: actor_rollout_ref.actor.policy_loss.entropy_advantage.alpha=0.4 actor_rollout_ref.actor.policy_loss.entropy_advantage.kappa=2.0 actor_rollout_ref.model.path=deepseek-ai/DeepSeek-R1-Distill-Qwen-14B
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
maspo_launch r1_distill_14b entropy-adv-r1-distill-14b \
    +policy_loss=baselines \
    actor_rollout_ref.actor.policy_loss.loss_mode=vanilla \
    actor_rollout_ref.actor.policy_loss.entropy_advantage.enable=true \
    actor_rollout_ref.actor.calculate_entropy=true \
    -- "$@"

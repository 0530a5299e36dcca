#!/usr/bin/env bash
# SAPO baseline (arXiv 2511.20347) on DeepSeek-R1-Distill-Qwen-14B: verl's own loss_mode=sapo with
# its temperatures tau_pos 1.0 / tau_neg 1.05 (verl's defaults), which verl reads from the actor
# config (actor_rollout_ref.actor.tau_pos/tau_neg), not from policy_loss.
# Paper: not reported. Our extension, not a paper row: at 14B the paper reports only GRPO and MASPO
# (the authors' README); compare with 14b/grpo.sh and 14b/maspo.sh run the same way.
# expect: actor_rollout_ref.actor.policy_loss.loss_mode=sapo actor_rollout_ref.actor.tau_pos=1.0 actor_rollout_ref.actor.tau_neg=1.05
# expect: actor_rollout_ref.model.path=deepseek-ai/DeepSeek-R1-Distill-Qwen-14B
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
maspo_launch r1_distill_14b sapo-r1-distill-14b \
    actor_rollout_ref.actor.policy_loss.loss_mode=sapo \
    actor_rollout_ref.actor.tau_pos=1.0 \
    actor_rollout_ref.actor.tau_neg=1.05 \
    -- "$@"

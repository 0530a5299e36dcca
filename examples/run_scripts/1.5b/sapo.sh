#!/usr/bin/env bash
# SAPO baseline (arXiv 2511.20347) on DeepSeek-R1-Distill-Qwen-1.5B: verl's own loss_mode=sapo with
# its temperatures tau_pos 1.0 / tau_neg 1.05 (verl's defaults), which verl reads from the actor
# config (actor_rollout_ref.actor.tau_pos/tau_neg), not from policy_loss.
# Paper (1.5B, as the authors' README reports it): Avg@32 / Pass@32 = 51.2 / 71.5 over the six benchmarks.
# expect: actor_rollout_ref.actor.policy_loss.loss_mode=sapo actor_rollout_ref.actor.tau_pos=1.0 actor_rollout_ref.actor.tau_neg=1.05
# expect: actor_rollout_ref.model.path=deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
maspo_launch r1_distill_1p5b sapo-r1-distill-1.5b \
    actor_rollout_ref.actor.policy_loss.loss_mode=sapo \
    actor_rollout_ref.actor.tau_pos=1.0 \
    actor_rollout_ref.actor.tau_neg=1.05 \
    -- "$@"

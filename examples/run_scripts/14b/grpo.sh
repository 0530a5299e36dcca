#!/usr/bin/env bash
# GRPO baseline: PPO clipped surrogate, clip ratio 0.2 both sides on DeepSeek-R1-Distill-Qwen-14B.
# Paper (14B, as the authors' README reports it): Avg@32 / Pass@32 = 53.6 / 67.4 over the six benchmarks.
# expect: actor_rollout_ref.actor.policy_loss.loss_mode=vanilla actor_rollout_ref.actor.clip_ratio_low=0.2 actor_rollout_ref.actor.clip_ratio_high=0.2
# expect: actor_rollout_ref.model.path=deepseek-ai/DeepSeek-R1-Distill-Qwen-14B
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
maspo_launch r1_distill_14b grpo-r1-distill-14b \
    actor_rollout_ref.actor.policy_loss.loss_mode=vanilla \
    -- "$@"

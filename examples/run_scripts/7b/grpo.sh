#!/usr/bin/env bash
# GRPO baseline: PPO clipped surrogate, clip ratio 0.2 both sides on DeepSeek-R1-Distill-Qwen-7B.
# Paper (7B, as the authors' README reports it): Avg@32 / Pass@32 = 58.9 / 77.2 over the six benchmarks.
# expect: actor_rollout_ref.actor.policy_loss.loss_mode=vanilla actor_rollout_ref.actor.clip_ratio_low=0.2 actor_rollout_ref.actor.clip_ratio_high=0.2
# expect: actor_rollout_ref.model.path=deepseek-ai/DeepSeek-R1-Distill-Qwen-7B
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
maspo_launch r1_distill_7b grpo-r1-distill-7b \
    actor_rollout_ref.actor.policy_loss.loss_mode=vanilla \
    -- "$@"

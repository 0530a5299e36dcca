#!/usr/bin/env bash
# Clip Higher baseline (DAPO, arXiv 2503.14476): upper clip ratio raised to 0.28 on DeepSeek-R1-Distill-Qwen-1.5B.
# Paper (1.5B, as the authors' README reports it): Avg@32 / Pass@32 = 48.0 / 70.1 over the six benchmarks.
# expect: actor_rollout_ref.actor.policy_loss.loss_mode=vanilla actor_rollout_ref.actor.clip_ratio_low=0.2 actor_rollout_ref.actor.clip_ratio_high=0.28
# expect: actor_rollout_ref.model.path=deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
maspo_launch r1_distill_1p5b clip-higher-r1-distill-1.5b \
    actor_rollout_ref.actor.policy_loss.loss_mode=vanilla \
    actor_rollout_ref.actor.clip_ratio_high=0.28 \
    -- "$@"

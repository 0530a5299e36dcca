#!/usr/bin/env bash
# Clip Higher baseline (DAPO, arXiv 2503.14476): upper clip ratio raised to 0.28 on DeepSeek-R1-Distill-Qwen-14B.
# Paper: not reported. Our extension, not a paper row: at 14B the paper reports only GRPO and MASPO
# (the authors' README); compare with 14b/grpo.sh and 14b/maspo.sh run the same way.
# expect: actor_rollout_ref.actor.policy_loss.loss_mode=vanilla actor_rollout_ref.actor.clip_ratio_low=0.2 actor_rollout_ref.actor.clip_ratio_high=0.28
# expect: actor_rollout_ref.model.path=deepseek-ai/DeepSeek-R1-Distill-Qwen-14B
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
maspo_launch r1_distill_14b clip-higher-r1-distill-14b \
    actor_rollout_ref.actor.policy_loss.loss_mode=vanilla \
    actor_rollout_ref.actor.clip_ratio_high=0.28 \
    -- "$@"

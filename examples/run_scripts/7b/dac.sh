#!/usr/bin/env bash
# DAC baseline: DCPO's dynamic adaptive clipping (arXiv 2509.02333) on DeepSeek-R1-Distill-Qwen-7B, bounds
# 0.5 +/- 0.5 sqrt(1 -/+ 4 eps/q) from the old probability q, eps_low 0.2 / eps_high 0.28, upper
# bound capped at 10, dual clip c = 10 (DCPO's public scripts; see docs/baselines.md).
# Paper (Table 1, 7B): a baseline row of the main table; compare with GRPO and MASPO.
# expect: actor_rollout_ref.actor.policy_loss.loss_mode=dac actor_rollout_ref.actor.policy_loss.dac.eps_low=0.2 actor_rollout_ref.actor.policy_loss.dac.eps_high=0.28
# expect: actor_rollout_ref.actor.policy_loss.dac.upper_bound_cap=10.0 actor_rollout_ref.actor.clip_ratio_c=10.0 actor_rollout_ref.model.path=deepseek-ai/DeepSeek-R1-Distill-Qwen-7B
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
maspo_launch r1_distill_7b dac-r1-distill-7b \
    actor_rollout_ref.actor.policy_loss.loss_mode=dac \
    actor_rollout_ref.actor.clip_ratio_c=10.0 \
    -- "$@"

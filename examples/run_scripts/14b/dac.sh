#!/usr/bin/env bash
# DAC baseline: DCPO's dynamic adaptive clipping (arXiv 2509.02333) on DeepSeek-R1-Distill-Qwen-14B, bounds
# 0.5 +/- 0.5 sqrt(1 -/+ 4 eps/q) from the old probability q, eps_low 0.2 / eps_high 0.28, dual clip c = 10
# and the upper bound capped at DCPO's max(c, 10) = 10 (lime-RL/DCPO run_dcpo.sh, core_algos.py
# get_clip_low_high; see docs/baselines.md).
# Paper: not reported. Our extension, not a paper row: at 14B the paper reports only GRPO and MASPO
# (the authors' README); compare with 14b/grpo.sh and 14b/maspo.sh run the same way.
# expect: actor_rollout_ref.actor.policy_loss.loss_mode=dac actor_rollout_ref.actor.policy_loss.dac.eps_low=0.2 actor_rollout_ref.actor.policy_loss.dac.eps_high=0.28
# expect: actor_rollout_ref.actor.policy_loss.dac.upper_bound_cap=null actor_rollout_ref.actor.clip_ratio_c=10.0 actor_rollout_ref.model.path=deepseek-ai/DeepSeek-R1-Distill-Qwen-14B
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
maspo_launch r1_distill_14b dac-r1-distill-14b \
    +policy_loss=baselines \
    actor_rollout_ref.actor.policy_loss.loss_mode=dac \
    actor_rollout_ref.actor.clip_ratio_c=10.0 \
    -- "$@"

#!/usr/bin/env bash
# DAC baseline: DCPO's dynamic adaptive clipping (arXiv 2509.02333) on DeepSeek-R1-Distill-Qwen-7B, bounds
# 0.5 +/- 0.5 sqrt(1 -/+ 4 eps/q) from the old probability q, eps_low 0.2 / eps_high 0.28, dual clip c = 10
# and the upper bound capped at DCPO's max(c, 10) = 10 (lime-RL/DCPO run_dcpo.sh, core_algos.py
# get_clip_low_high; see docs/baselines.md).
# Paper (7B, as the authors' README reports it): Avg@32 / Pass@32 = 59.0 / 78.7 over the six benchmarks.
# expect: actor_rollout_ref.actor.policy_loss.loss_mode=dac actor_rollout_ref.actor.policy_loss.dac.eps_low=0.2 actor_rollout_ref.actor.policy_loss.dac.eps_high=0.28
# expect: actor_rollout_ref.actor.policy_loss.dac.upper_bound_cap=null actor_rollout_ref.actor.clip_ratio_c=10.0 actor_rollout_ref.model.path=deepseek-ai/DeepSeek-R1-Distill-Qwen-7B
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
maspo_launch r1_distill_7b dac-r1-distill-7b \
    +policy_loss=baselines \
    actor_rollout_ref.actor.policy_loss.loss_mode=dac \
    actor_rollout_ref.actor.clip_ratio_c=10.0 \
    -- "$@"

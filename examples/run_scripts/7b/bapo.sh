#!/usr/bin/env bash
# BAPO baseline: adaptive clipping (arXiv 2510.18927) on DeepSeek-R1-Distill-Qwen-7B: per micro-batch (summed
# over all data-parallel ranks) c_low rises from 0.6 to 0.9 by 0.05, then c_high from 1.2 to 3.0 by
# 0.1, until positive-advantage tokens carry half the policy-gradient loss (see docs/baselines.md).
# Paper (Table 1, 7B): a baseline row of the main table; compare with GRPO and MASPO.
# expect: actor_rollout_ref.actor.policy_loss.loss_mode=bapo actor_rollout_ref.actor.policy_loss.bapo.positive_share_target=0.5 actor_rollout_ref.actor.policy_loss.bapo.search_scope=data_parallel
# expect: actor_rollout_ref.actor.policy_loss.bapo.lower_bound_start=0.6 actor_rollout_ref.actor.policy_loss.bapo.lower_bound_max=0.9 actor_rollout_ref.actor.policy_loss.bapo.upper_bound_start=1.2 actor_rollout_ref.actor.policy_loss.bapo.upper_bound_max=3.0
# expect: actor_rollout_ref.model.path=deepseek-ai/DeepSeek-R1-Distill-Qwen-7B
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
maspo_launch r1_distill_7b bapo-r1-distill-7b \
    actor_rollout_ref.actor.policy_loss.loss_mode=bapo \
    -- "$@"

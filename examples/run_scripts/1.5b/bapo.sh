#!/usr/bin/env bash
# BAPO baseline: adaptive clipping (arXiv 2510.18927) on DeepSeek-R1-Distill-Qwen-1.5B, variant=recipe (the
# authors' released code, WooooDyy/BAPO recipe/bapo/policy_loss.py, with its run_bapo_example.sh values): per
# micro-batch (sums over all data-parallel ranks) c_low rises 0.8 -> 0.95 by 0.05, then c_high 1.2 -> 2.0 by
# 0.1, until P / N >= 0.5. The paper's Eq. 8 / Algorithm 1 instead: pass
# actor_rollout_ref.actor.policy_loss.bapo.variant=paper (see docs/baselines.md).
# Paper (1.5B, as the authors' README reports it): Avg@32 / Pass@32 = 48.4 / 70.0 over the six benchmarks.
# expect: actor_rollout_ref.actor.policy_loss.loss_mode=bapo actor_rollout_ref.actor.policy_loss.bapo.variant=recipe actor_rollout_ref.actor.policy_loss.bapo.search_scope=data_parallel
# expect: actor_rollout_ref.model.path=deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
maspo_launch r1_distill_1p5b bapo-r1-distill-1.5b \
    +policy_loss=baselines \
    actor_rollout_ref.actor.policy_loss.loss_mode=bapo \
    -- "$@"

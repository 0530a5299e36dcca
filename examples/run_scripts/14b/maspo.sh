#!/usr/bin/env bash
# MASPO on DeepSeek-R1-Distill-Qwen-14B: soft Gaussian gate, mass-adaptive limiter and risk
# controller (arXiv 2602.17550, its method section), all as configured by configs/experiment/r1_distill_*.yaml.
# Paper (14B, as the authors' README reports it): Avg@32 / Pass@32 = 56.4 / 71.1 over the six benchmarks.
# expect: actor_rollout_ref.actor.policy_loss.loss_mode=maspo actor_rollout_ref.actor.policy_loss.maspo.alpha=0.3 actor_rollout_ref.actor.policy_loss.maspo.gate=gaussian
# expect: actor_rollout_ref.actor.policy_loss.maspo.mass_adaptive=true actor_rollout_ref.actor.policy_loss.maspo.risk_control=true actor_rollout_ref.model.path=deepseek-ai/DeepSeek-R1-Distill-Qwen-14B
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
maspo_launch r1_distill_14b maspo-r1-distill-14b \
    -- "$@"

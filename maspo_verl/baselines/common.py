"""What the baseline losses share beyond verl's conventions: PPO's dual-clipped surrogate and
verl's three clip metrics.

Every baseline follows verl's policy-loss conventions through `maspo_verl.conventions`, as MASPO
does (inputs in at least float32 with padding zeroed, the NaN/inf check and the statistics in one
host sync, rollout importance weights, reduction only through `agg_loss` with
`config.global_batch_info`), reads its hyper-parameters from its block of
`PolicyLossConfigWithBaselines` (`actor_rollout_ref.actor.policy_loss.<block>.*`) and returns
scalar metrics with the same keys on every call.
"""

from __future__ import annotations

from typing import Any

import torch
import verl.utils.torch_functional as verl_F

from maspo_verl.config import resolve_config_block
from maspo_verl.conventions import PolicyLossInputs
from maspo_verl.gate import hard_gate_surrogate

__all__ = ["POLICY_LOSS_CONFIG_TARGET", "clip_metrics", "dual_clipped_surrogate", "resolve_baseline_block"]

# The policy-loss config class that carries every baseline's block (+policy_loss=baselines selects it).
POLICY_LOSS_CONFIG_TARGET = "maspo_verl.baselines.PolicyLossConfigWithBaselines"


def resolve_baseline_block(config: Any, block: str, config_class: type, loss_mode: str):
    """The `policy_loss.<block>` settings of verl's actor config as `config_class`; the defaults
    (logged once per process) when the policy-loss config has no such block."""
    return resolve_config_block(config, block, config_class, loss_mode, POLICY_LOSS_CONFIG_TARGET)


# verl's vanilla per-token PPO loss with adaptive bounds and the dual clip. MASPO's hard-gate ablation needs the
# same formula and the core may not import the baselines, so the one implementation lives in the core's gate.py.
dual_clipped_surrogate = hard_gate_surrogate


def clip_metrics(
    inputs: PolicyLossInputs, clip_active: torch.Tensor, dual_clip_active: torch.Tensor
) -> dict[str, torch.Tensor]:
    """verl's three policy-loss metrics as 0-d tensors: actor/pg_clipfrac (share of valid tokens
    clipped), actor/ppo_kl (mean -log ratio, clamped as verl does), actor/pg_clipfrac_lower (share
    dual-clipped)."""
    mask = inputs.response_mask
    return {
        "actor/pg_clipfrac": verl_F.masked_mean(clip_active.float(), mask),
        "actor/ppo_kl": verl_F.masked_mean(-inputs.clamped_log_ratio.detach(), mask),
        "actor/pg_clipfrac_lower": verl_F.masked_mean(dual_clip_active.float(), mask),
    }

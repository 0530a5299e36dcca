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

from maspo_verl.config_blocks import resolve_config_block
from maspo_verl.conventions import PolicyLossInputs

__all__ = ["POLICY_LOSS_CONFIG_TARGET", "clip_metrics", "dual_clipped_surrogate", "resolve_baseline_block"]

# The policy-loss config class that carries every baseline's block (configs/maspo.yaml selects it).
POLICY_LOSS_CONFIG_TARGET = "maspo_verl.baselines.PolicyLossConfigWithBaselines"


def resolve_baseline_block(config: Any, block: str, config_class: type, loss_mode: str):
    """The `policy_loss.<block>` settings of verl's actor config as `config_class`; the defaults
    (logged once per process) when the policy-loss config has no such block."""
    return resolve_config_block(config, block, config_class, loss_mode, POLICY_LOSS_CONFIG_TARGET)


def dual_clipped_surrogate(
    ratio: torch.Tensor,
    advantages: torch.Tensor,
    lower: torch.Tensor | float,
    upper: torch.Tensor | float,
    clip_ratio_c: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """verl's vanilla per-token PPO loss with the ratio clipped to [lower, upper] instead of
    [1 - eps_low, 1 + eps_high]: max(-A r, -A clip(r, lower, upper)), and for A < 0 the dual clip
    min(that, -A c) (Ye et al. 2020, arXiv 1912.09729).

    Args:
        ratio: r, (bs, response_length), carries the gradient.
        advantages: A, (bs, response_length).
        lower, upper: ratio bounds, floats or tensors broadcastable to ratio.
        clip_ratio_c: dual-clip bound c > 1.

    Returns:
        (per-token losses, clip_active, dual_clip_active): the masks are bool tensors marking where
        the clip (resp. the dual clip) sets the loss, i.e. where the gradient through r is cut.
    """
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, lower, upper)
    clipped_max = torch.maximum(unclipped, clipped)
    dual_clipped = torch.minimum(-advantages * clip_ratio_c, clipped_max)
    losses = torch.where(advantages < 0, dual_clipped, clipped_max)
    with torch.no_grad():
        clip_active = clipped > unclipped
        dual_clip_active = (clipped_max > -advantages * clip_ratio_c) & (advantages < 0)
    return losses, clip_active, dual_clip_active


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

"""What the baseline losses share: their config blocks, input checks, verl's clipped surrogate.

Every baseline reads its hyper-parameters from a block of verl's policy-loss config,
`actor_rollout_ref.actor.policy_loss.<block>.*`, follows verl's policy-loss conventions (float32
math, padding zeroed, rollout importance weights multiplied, reduction only through `agg_loss`
with `config.global_batch_info`) and returns scalar metrics with the same keys on every call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import verl.utils.torch_functional as verl_F
from verl.trainer.ppo.core_algos import agg_loss

# Re-exported for the baseline modules: the config-block helpers are shared with MASPO's config,
# verl's input conventions and the dual-clipped surrogate with MASPO's loss.
from maspo_verl.config_blocks import (
    config_block_from,
    require_bool,
    require_choice,
    require_number,
    resolve_config_block,
)
from maspo_verl.conventions import LOG_RATIO_LIMIT, dual_clip_bound, raise_on_non_finite
from maspo_verl.gate import dual_clipped_surrogate

__all__ = [
    "LOG_RATIO_LIMIT",
    "PolicyLossInputs",
    "aggregate_policy_loss",
    "clip_metrics",
    "config_block_from",
    "dual_clip_bound",
    "dual_clipped_surrogate",
    "metrics_from",
    "prepare_policy_loss_inputs",
    "require_bool",
    "require_choice",
    "require_number",
    "resolve_config_block",
]


@dataclass
class PolicyLossInputs:
    """One micro-batch as the baseline losses use it: float32, zero on padding, checked finite.

    ratio = exp(clamp(log pi_theta - log pi_old, -20, 20)) as in verl's vanilla loss, carrying
    log_prob's gradient; padding has log-ratio 0 (ratio 1), so whatever padded positions held
    reaches neither the loss nor the gradient. All tensors are (bs, response_length).
    """

    old_log_prob: torch.Tensor
    advantages: torch.Tensor
    response_mask: torch.Tensor  # bool
    ratio: torch.Tensor
    log_ratio: torch.Tensor
    num_valid: int


def prepare_policy_loss_inputs(
    loss_mode: str,
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
) -> PolicyLossInputs:
    """Check verl's policy-loss inputs (NaN/inf on a valid token raises, naming the tensor), cast
    them to float32 (bf16 would round ratios near 1 to 1), zero the padding and form the ratio."""
    response_mask = response_mask.bool()
    old_log_prob = torch.where(response_mask, old_log_prob.float(), 0.0)
    advantages = torch.where(response_mask, advantages.float(), 0.0)
    log_ratio = torch.where(response_mask, log_prob.float() - old_log_prob, 0.0)
    # One host sync: sums of the padding-zeroed inputs are finite exactly when no valid token holds
    # NaN/inf (as in MASPO's loss); the per-tensor scan that names the culprit runs only on failure.
    with torch.no_grad():
        num_valid, input_sum = torch.stack(
            [response_mask.sum().float(), old_log_prob.sum() + advantages.sum() + log_ratio.sum()]
        ).tolist()
    if not math.isfinite(input_sum):
        raise_on_non_finite(
            loss_mode, response_mask, old_log_prob=old_log_prob, log_prob=log_prob.detach(), advantages=advantages
        )
    log_ratio = log_ratio.clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
    return PolicyLossInputs(old_log_prob, advantages, response_mask, torch.exp(log_ratio), log_ratio, int(num_valid))


def clip_metrics(
    inputs: PolicyLossInputs, clip_active: torch.Tensor, dual_clip_active: torch.Tensor
) -> list[torch.Tensor]:
    """verl's three policy-loss metrics, in the order actor/pg_clipfrac, actor/ppo_kl,
    actor/pg_clipfrac_lower (share of tokens clipped, mean -log ratio, share dual-clipped)."""
    mask = inputs.response_mask
    return [
        verl_F.masked_mean(clip_active.float(), mask),
        verl_F.masked_mean(-inputs.log_ratio.detach(), mask),
        verl_F.masked_mean(dual_clip_active.float(), mask),
    ]


def aggregate_policy_loss(
    per_token_losses: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str,
    config: Any,
    num_valid: int,
    rollout_is_weights: torch.Tensor | None,
) -> torch.Tensor:
    """Multiply by the rollout importance weights and reduce with verl's `agg_loss` and the global
    batch info verl's `ppo_loss` stored in `config.global_batch_info`.

    A micro-batch without valid tokens gives a zero loss that still reaches the graph (verl's
    token-mean would divide 0 by 0).
    """
    if rollout_is_weights is not None:
        per_token_losses = per_token_losses * torch.where(response_mask, rollout_is_weights, 0.0)
    if num_valid == 0:
        return torch.where(response_mask, per_token_losses, 0.0).sum()  # 0, and 0 gradient everywhere
    global_batch_info = getattr(config, "global_batch_info", None) or {}
    return agg_loss(loss_mat=per_token_losses, loss_mask=response_mask, loss_agg_mode=loss_agg_mode, **global_batch_info)


def metrics_from(keys: Sequence[str], values: Sequence[torch.Tensor | float], device: torch.device) -> dict[str, float]:
    """Scalar metrics as Python floats with one host sync: `keys[i]` -> `values[i]`."""
    stacked = torch.stack([torch.as_tensor(v, dtype=torch.float32, device=device).reshape(()) for v in values])
    return dict(zip(keys, stacked.tolist(), strict=True))


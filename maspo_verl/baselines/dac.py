"""Dynamic Adaptive Clipping (DAC) of DCPO (Yang et al., arXiv 2509.02333), `loss_mode="dac"`.

DCPO replaces PPO's fixed ratio interval [1 - eps_low, 1 + eps_high] by one that depends on the
old probability q of the token: bounding the probability-weighted ratio change
|(r - 1) * r| * q <= eps (DCPO, section "Dynamic Adaptive Clipping") gives the closed form

    lower(q) = 0.5 + 0.5 * sqrt(max(1 - 4 eps_low / q, 0))
    upper(q) = min(0.5 + 0.5 * sqrt(1 + 4 eps_high / q), cap),  cap = max(clip_ratio_c, 10)

so tail tokens (small q) may move much further than head tokens. The clipped surrogate with these
bounds and verl's dual clip (`actor.clip_ratio_c`) is DCPO's `clip_type=dynamic` loss (github
lime-RL/DCPO, verl/trainer/ppo/core_algos.py `get_clip_low_high`, lines 978-991, where the cap is
`max(clip_ratio_c, 10)` at lines 990-991; called with the actor's clip_ratio_c at line 1049).
`upper_bound_cap` set to a number replaces DCPO's cap by that fixed ceiling (our option, not DCPO's).

Config: `actor_rollout_ref.actor.policy_loss.dac.{eps_low, eps_high, upper_bound_cap}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import verl.utils.torch_functional as verl_F
from verl.base_config import BaseConfig
from verl.trainer.ppo.core_algos import register_policy_loss

from maspo_verl.baselines.common import clip_metrics, dual_clipped_surrogate, resolve_baseline_block
from maspo_verl.config import require_number
from maspo_verl.conventions import (
    RATIO_METRIC_KEYS,
    aggregate_policy_loss,
    dual_clip_bound,
    policy_loss_statistics,
    prepare_policy_loss_inputs,
    ratio_statistics,
)

__all__ = ["DacConfig", "METRIC_KEYS", "compute_policy_loss_dac", "dac_ratio_bounds", "dcpo_upper_bound_cap"]

METRIC_KEYS = (
    "actor/pg_clipfrac",
    "actor/ppo_kl",
    "actor/pg_clipfrac_lower",
    "actor/dac/lower_bound_mean",
    "actor/dac/upper_bound_mean",
    "actor/dac/upper_bound_capped_frac",
    *RATIO_METRIC_KEYS,
)

# exp(80) is finite in float32: at log q = -80 both bounds already sit at their q -> 0 limits
# (lower 0.5, upper at any sensible cap), and log q = -inf cannot turn eps * exp(-log q) into NaN.
_MIN_OLD_LOG_PROB = -80.0


@dataclass
class DacConfig(BaseConfig):
    """Hyper-parameters of DCPO's dynamic adaptive clipping (arXiv 2509.02333).

    Defaults are DCPO's public training scripts (github lime-RL/DCPO): recipe/dcpo/run_base.sh
    lines 86-87 (`clip_ratio_low` 0.2, `clip_ratio_high` 0.28, passed to the actor at lines
    185-186), which recipe/dcpo/run_dcpo.sh lines 82-84 run with CLIP_RATIO_HIGH=0.28,
    CLIP_RATIO_C=10 and CLIP_TYPE=dynamic. The paper's illustration table uses eps_low 0.16,
    eps_high 0.2; the scripts are what produced its results. The cap defaults to DCPO's
    max(clip_ratio_c, 10) (core_algos.py lines 990-991).

    Args:
        eps_low (float): lower-side budget, >= 0; the lower bound is 0.5 for q <= 4 eps_low.
        eps_high (float): upper-side budget, >= 0.
        upper_bound_cap (float | None): ceiling of the upper ratio bound. None (default): DCPO's
            max(actor.clip_ratio_c, 10); a number > 1: that fixed ceiling instead (not DCPO's).
    """

    eps_low: float = 0.2
    eps_high: float = 0.28
    upper_bound_cap: float | None = None

    def __post_init__(self):
        for key in ("eps_low", "eps_high"):
            require_number(f"policy_loss.dac.{key}", getattr(self, key))
            if getattr(self, key) < 0:
                raise ValueError(f"policy_loss.dac.{key} must be >= 0, got {getattr(self, key)}")
        if self.upper_bound_cap is not None:
            require_number("policy_loss.dac.upper_bound_cap", self.upper_bound_cap)
            if not self.upper_bound_cap > 1.0:
                raise ValueError(
                    f"policy_loss.dac.upper_bound_cap must be > 1 (or null for DCPO's max(clip_ratio_c, 10)), "
                    f"got {self.upper_bound_cap}"
                )


def dcpo_upper_bound_cap(upper_bound_cap: float | None, clip_ratio_c: float) -> float:
    """The ceiling of DAC's upper bound: DCPO's max(clip_ratio_c, 10) (lime-RL/DCPO
    verl/trainer/ppo/core_algos.py lines 990-991, at commit 01787b0) unless
    `policy_loss.dac.upper_bound_cap` fixes one."""
    return max(clip_ratio_c, 10.0) if upper_bound_cap is None else float(upper_bound_cap)


def dac_ratio_bounds(
    old_log_prob: torch.Tensor, eps_low: float, eps_high: float, upper_bound_cap: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """DCPO's dynamic adaptive clipping bounds (arXiv 2509.02333, DAC equation; lime-RL/DCPO
    core_algos.py `get_clip_low_high`, lines 978-991):
    lower = 0.5 + 0.5 sqrt(max(1 - 4 eps_low / q, 0)), upper = min(0.5 + 0.5 sqrt(1 + 4 eps_high / q), cap).

    Both solve q * r * |r - 1| = eps (the larger root): the probability-weighted ratio change a
    token may make. q -> 0 gives (0.5, cap); q = 1 gives 0.5 + 0.5 sqrt(1 -/+ 4 eps), which is
    1 -/+ eps to first order in eps (verl's vanilla clip).

    Args:
        old_log_prob: log q, float32, shape (bs, response_length).

    Returns:
        (lower, upper): each (bs, response_length), lower in [0.5, 1], upper in [1, cap].
    """
    inverse_q = torch.exp(-old_log_prob.clamp(min=_MIN_OLD_LOG_PROB))
    lower = 0.5 + 0.5 * torch.sqrt((1.0 - 4.0 * eps_low * inverse_q).clamp(min=0.0))
    upper = (0.5 + 0.5 * torch.sqrt(1.0 + 4.0 * eps_high * inverse_q)).clamp(max=upper_bound_cap)
    return lower, upper


@register_policy_loss("dac")
def compute_policy_loss_dac(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any | None = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """PPO-clip loss with DCPO's dynamic adaptive clipping bounds and verl's dual clip.

    Args:
        old_log_prob: log-probs under the old policy, (bs, response_length).
        log_prob: log-probs under the current policy (carries the gradient), (bs, response_length).
        advantages: per-token advantages, (bs, response_length).
        response_mask: valid response tokens, (bs, response_length).
        loss_agg_mode: verl's aggregation mode.
        config: verl's `ActorConfig`; `config.policy_loss.dac` holds the DAC keys,
            `config.clip_ratio_c` is the dual-clip bound.
        rollout_is_weights: optional rollout-correction weights, (bs, response_length).

    Returns:
        (loss, metrics): the scalar loss in log_prob's dtype and the scalar metrics METRIC_KEYS.
    """
    dac = resolve_baseline_block(config, "dac", DacConfig, "dac")
    clip_ratio_c = dual_clip_bound(config, "dac")
    inputs = prepare_policy_loss_inputs(old_log_prob, log_prob, advantages, response_mask, rollout_is_weights)
    mask = inputs.response_mask
    cap = dcpo_upper_bound_cap(dac.upper_bound_cap, clip_ratio_c)
    with torch.no_grad():
        lower, upper = dac_ratio_bounds(inputs.old_log_prob, dac.eps_low, dac.eps_high, cap)

    pg_losses, clip_active, dual_clip_active = dual_clipped_surrogate(
        inputs.ratio, inputs.advantages, lower, upper, clip_ratio_c
    )
    with torch.no_grad():
        statistics = {
            **clip_metrics(inputs, clip_active, dual_clip_active),
            "actor/dac/lower_bound_mean": verl_F.masked_mean(lower, mask),
            "actor/dac/upper_bound_mean": verl_F.masked_mean(upper, mask),
            "actor/dac/upper_bound_capped_frac": verl_F.masked_mean((upper >= cap).float(), mask),
            **ratio_statistics(inputs),  # the ratio's extremes per advantage sign, as every loss here
        }
    metrics = policy_loss_statistics("dac", inputs, log_prob, statistics, pg_losses)  # one host sync
    pg_loss = aggregate_policy_loss(pg_losses, inputs, loss_agg_mode, config, metrics.pop("num_valid"))
    return pg_loss.to(log_prob.dtype), metrics

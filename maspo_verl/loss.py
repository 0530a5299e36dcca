"""The MASPO policy loss, registered in verl as `loss_mode="maspo"`.

Reads top to bottom as the algorithm (arXiv 2602.17550, method section):
  1. ratio r = exp(clamp(log pi_theta - log pi_old, -20, 20)), p_old = exp(log pi_old);
  2. mass-adaptive limiter m = clamp(sigma_base / p_old**alpha, sigma_base, sigma_high);
  3. asymmetric risk controller k_pos, k_neg; sigma_pos = m*k_pos, sigma_neg = m*k_neg;
  4. soft Gaussian gate w where the update pushes r outward; per-token loss -A * w * r;
  5. reduction by verl's `agg_loss` with verl's global batch info.
The tensor math lives in `maspo_verl.gate`; this module adds verl's conventions (config,
masking, rollout importance weights, aggregation, metrics).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from verl.trainer.ppo.core_algos import agg_loss, register_policy_loss

from maspo_verl.config import MaspoConfig
from maspo_verl.config_blocks import resolve_config_block
from maspo_verl.conventions import LOG_RATIO_LIMIT, dual_clip_bound, raise_on_non_finite
from maspo_verl.gate import (
    dual_clipped_surrogate,
    gaussian_gate_weight,
    hard_clip_bounds,
    outward_regions,
    trust_region_widths,
)

__all__ = [
    "LOG_RATIO_LIMIT",
    "METRIC_KEYS",
    "RATIO_PERCENTILE",
    "compute_policy_loss_maspo",
    "masked_upper_statistics",
    "resolve_maspo_config",
]

METRIC_KEYS = (
    "actor/pg_clipfrac",
    "actor/ppo_kl",
    "actor/pg_clipfrac_lower",
    "actor/maspo/gated_frac_pos",
    "actor/maspo/gated_frac_neg",
    "actor/maspo/gate_weight_mean",
    "actor/maspo/sigma_pos_mean",
    "actor/maspo/sigma_neg_mean",
    "actor/maspo/unbounded_frac_neg",
    "actor/maspo/ratio_max_pos",
    "actor/maspo/ratio_p99_pos",
    "actor/maspo/ratio_min_neg",
    "actor/maspo/ratio_max_neg",
    "actor/maspo/ratio_p99_neg",
)
# The high percentile of the ratio reported beside its maximum, per advantage sign.
RATIO_PERCENTILE = 99


def resolve_maspo_config(config: Any) -> MaspoConfig:
    """The `MaspoConfig` of a verl actor config.

    `config.policy_loss` is `MaspoPolicyLossConfig` (our Hydra `_target_`), a legacy DictConfig
    with a `maspo` block, or verl's plain `PolicyLossConfig`: the last one cannot carry MASPO
    keys, so the paper's defaults are used and the log says so once per process.
    """
    return resolve_config_block(config, "maspo", MaspoConfig, "maspo")


class _SurrogateWithSavedGradient(torch.autograd.Function):
    """loss = coefficient * ratio as a function of log_prob, saving one float per token.

    d(coefficient * exp(log_ratio)) / d log_prob = coefficient * ratio inside verl's
    [-20, 20] clamp of log_ratio and 0 outside, so the backward needs only that product.
    autograd's own graph would keep the ratio, the clamp input and the coefficient.
    """

    @staticmethod
    def forward(ctx, log_prob, ratio, ratio_in_range, coefficient):
        loss = coefficient * ratio
        ctx.save_for_backward(torch.where(ratio_in_range, loss, 0.0))
        ctx.log_prob_dtype = log_prob.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        (gradient_coefficient,) = ctx.saved_tensors
        return (grad_output * gradient_coefficient).to(ctx.log_prob_dtype), None, None, None


@register_policy_loss("maspo")
def compute_policy_loss_maspo(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Optional[Any] = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """MASPO policy loss (Mass-Adaptive Soft Policy Optimization, arXiv 2602.17550).

    Args:
        old_log_prob: log-probs under the old (rollout-time) policy, shape (bs, response_length).
        log_prob: log-probs under the current policy (carries the gradient), shape (bs, response_length).
        advantages: per-token advantages A, shape (bs, response_length).
        response_mask: valid response tokens, bool, shape (bs, response_length).
        loss_agg_mode: verl's aggregation mode ("token-mean", "seq-mean-token-mean", ...).
        config: verl's `ActorConfig`; `config.policy_loss.maspo` holds the MASPO keys,
            `config.clip_ratio_low/high` and `config.clip_ratio_c` are used by `gate=hard`.
        rollout_is_weights: optional rollout-correction weights, shape (bs, response_length).

    Returns:
        (loss, metrics): the scalar loss, in log_prob's dtype, and scalar metrics (METRIC_KEYS).
    """
    maspo = resolve_maspo_config(config)
    response_mask = response_mask.bool()

    # All math in at least float32 (bf16 would round ratios near 1 to exactly 1). Padding is
    # zeroed first, so NaN/inf in padded positions can reach neither the loss nor the gradient,
    # and A = 0 there keeps padding out of every A > 0 / A < 0 region below.
    compute_dtype = torch.promote_types(log_prob.dtype, torch.float32)
    old_log_prob = torch.where(response_mask, old_log_prob.to(compute_dtype), 0.0)
    advantages = torch.where(response_mask, advantages.to(compute_dtype), 0.0)
    with torch.no_grad():
        raw_log_ratio = torch.where(response_mask, log_prob.detach().to(compute_dtype) - old_log_prob, 0.0)
        log_ratio = raw_log_ratio.clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
        ratio = torch.exp(log_ratio)
        # Mass-adaptive limiter x asymmetric risk controller (paper: sigma_pos, sigma_neg).
        sigma_pos, sigma_neg = trust_region_widths(
            old_log_prob,
            advantages,
            sigma_base=maspo.sigma_base,
            alpha=maspo.alpha,
            beta_pos=maspo.beta_pos,
            beta_neg=maspo.beta_neg,
            sigma_high=maspo.sigma_high,
            adv_low=maspo.adv_low,
            adv_high=maspo.adv_high,
            mass_adaptive=maspo.mass_adaptive,
            risk_control=maspo.risk_control,
        )
        regions = outward_regions(ratio, advantages)
        outward = regions[0] | regions[1]

    if maspo.gate == "gaussian":
        with torch.no_grad():
            # Soft Gaussian gate (paper: w = exp(-(r-1)^2 / (2 sigma^2)) on outward updates).
            gradient_weight = gaussian_gate_weight(ratio, advantages, sigma_pos, sigma_neg, regions)
            coefficient = -advantages * gradient_weight  # 0 on padding, where A = 0
            ratio_in_range = raw_log_ratio.abs() <= LOG_RATIO_LIMIT
        # Per-token loss -A * w.detach() * r: the gradient through r survives, attenuated.
        pg_losses = _SurrogateWithSavedGradient.apply(log_prob, ratio, ratio_in_range, coefficient)
        clipped_count = outward.sum()  # every outward token is attenuated by the gate
        # sum of w over outward tokens, in one pass: 1 - w is 0 on every other position (and summing
        # the small 1 - w keeps float32 exact where summing w over millions of tokens would not)
        outward_weight_sum = clipped_count - (1.0 - gradient_weight).sum()
        dual_clipped_count = torch.zeros((), dtype=torch.long, device=ratio.device)  # no dual clip here
    else:
        pg_losses, gradient_weight, clipped_count, dual_clipped_count = _hard_clip_losses(
            log_prob, old_log_prob, advantages, response_mask, sigma_pos, sigma_neg, maspo, config
        )
        with torch.no_grad():
            outward_weight_sum = (gradient_weight * outward).sum()

    if rollout_is_weights is not None:  # weights on padding are not verl's promise: zero them too
        rollout_is_weights = torch.where(response_mask, rollout_is_weights, 0.0)
        pg_losses = pg_losses * rollout_is_weights

    # One host sync for the input check, the empty-mask case and every metric. Sums of the
    # padding-zeroed inputs are finite exactly when no valid token holds NaN/inf (barring overflow,
    # which the named check below then reports as "a product of them").
    with torch.no_grad():
        outward_count = outward.sum()
        # A < 0 with r > 1: the side MASPO leaves unbounded (no gate, no clip, no dual clip), as the
        # authors' code does; only these metrics show how far ratios went there.
        unbounded_neg = (advantages < 0) & (ratio > 1.0)
        ratio_pos = masked_upper_statistics(ratio, advantages > 0, RATIO_PERCENTILE)
        ratio_neg = masked_upper_statistics(ratio, advantages < 0, RATIO_PERCENTILE)
        ratio_min_neg = torch.where(advantages < 0, ratio, torch.inf).min()
        statistics = torch.stack(
            [
                response_mask.sum().to(compute_dtype),
                old_log_prob.sum() + advantages.sum() + raw_log_ratio.sum()
                + (rollout_is_weights.sum() if rollout_is_weights is not None else 0.0),
                clipped_count.to(compute_dtype),
                -log_ratio.sum(),
                dual_clipped_count.to(compute_dtype),
                regions[0].sum().to(compute_dtype),
                regions[1].sum().to(compute_dtype),
                outward_weight_sum.to(compute_dtype),
                outward_count.to(compute_dtype),
                torch.where(regions[0], sigma_pos, 0.0).sum(),
                torch.where(regions[1], sigma_neg, 0.0).sum(),
                unbounded_neg.sum().to(compute_dtype),
                *ratio_pos.to(compute_dtype),
                *ratio_neg.to(compute_dtype),
                ratio_min_neg.to(compute_dtype),
            ]
        ).tolist()
    (num_valid, input_sum, clipped, negative_log_ratio, dual_clipped, gated_pos, gated_neg,
     weight_sum, num_outward, sigma_pos_sum, sigma_neg_sum, unbounded, ratio_max_pos, ratio_p99_pos,
     ratio_max_neg, ratio_p99_neg, ratio_min_neg) = statistics
    if not math.isfinite(input_sum):
        checked = dict(old_log_prob=old_log_prob, log_prob=log_prob.detach(), advantages=advantages)
        if rollout_is_weights is not None:
            checked["rollout_is_weights"] = rollout_is_weights
        raise_on_non_finite("maspo", response_mask, **checked)

    if num_valid == 0:
        # verl's token-mean divides by the valid-token count: 0/0. No valid token, no update.
        pg_loss = torch.where(response_mask, pg_losses, 0.0).sum()  # 0, and 0 gradient everywhere
        num_valid = 1.0  # metrics of an empty micro-batch: 0 fractions, no attenuation
    else:
        global_batch_info = getattr(config, "global_batch_info", None) or {}
        pg_loss = agg_loss(
            loss_mat=pg_losses, loss_mask=response_mask, loss_agg_mode=loss_agg_mode, **global_batch_info
        )

    metrics = {
        "actor/pg_clipfrac": clipped / num_valid,
        "actor/ppo_kl": negative_log_ratio / num_valid,
        "actor/pg_clipfrac_lower": dual_clipped / num_valid,
        "actor/maspo/gated_frac_pos": gated_pos / num_valid,
        "actor/maspo/gated_frac_neg": gated_neg / num_valid,
        "actor/maspo/gate_weight_mean": weight_sum / num_outward if num_outward else 1.0,
        # each width averaged over the tokens it acts on (sigma_base when the side has none)
        "actor/maspo/sigma_pos_mean": sigma_pos_sum / gated_pos if gated_pos else maspo.sigma_base,
        "actor/maspo/sigma_neg_mean": sigma_neg_sum / gated_neg if gated_neg else maspo.sigma_base,
        "actor/maspo/unbounded_frac_neg": unbounded / num_valid,
        "actor/maspo/ratio_max_pos": ratio_max_pos,
        "actor/maspo/ratio_p99_pos": ratio_p99_pos,
        "actor/maspo/ratio_min_neg": ratio_min_neg if math.isfinite(ratio_min_neg) else 1.0,
        "actor/maspo/ratio_max_neg": ratio_max_neg,
        "actor/maspo/ratio_p99_neg": ratio_p99_neg,
    }
    return pg_loss.to(log_prob.dtype), metrics


def _hard_clip_losses(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    sigma_pos: torch.Tensor,
    sigma_neg: torch.Tensor,
    maspo: MaspoConfig,
    config: Any,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`gate=hard` ablation: verl's vanilla clipped surrogate (with dual clip) whose bounds are
    1 - clip_ratio_low * sigma_neg/sigma_base and 1 + clip_ratio_high * sigma_pos/sigma_base.

    Tensors are (bs, response_length); old_log_prob and advantages already in the compute dtype
    and zero on padding; log_prob carries the gradient.

    Returns per-token losses, the gradient weight per token (0 where a clip cuts the gradient,
    1 elsewhere), and the counts of valid tokens cut by the clip and by the dual clip.
    """
    clip_ratio = config.get("clip_ratio", 0.2)
    clip_ratio_low = config.get("clip_ratio_low", None)
    clip_ratio_high = config.get("clip_ratio_high", None)
    clip_ratio_low = clip_ratio if clip_ratio_low is None else clip_ratio_low
    clip_ratio_high = clip_ratio if clip_ratio_high is None else clip_ratio_high
    clip_ratio_c = dual_clip_bound(config, "maspo (gate=hard)")

    lower, upper = hard_clip_bounds(sigma_pos, sigma_neg, maspo.sigma_base, clip_ratio_low, clip_ratio_high)
    log_ratio = torch.where(response_mask, log_prob.to(old_log_prob.dtype) - old_log_prob, 0.0)
    ratio = torch.exp(log_ratio.clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT))

    pg_losses, clip_active, dual_active = dual_clipped_surrogate(ratio, advantages, lower, upper, clip_ratio_c)
    with torch.no_grad():
        clip_active &= response_mask
        gradient_weight = (~(clip_active | dual_active)).to(old_log_prob.dtype)
    return pg_losses, gradient_weight, clip_active.sum(), dual_active.sum()


def masked_upper_statistics(values: torch.Tensor, mask: torch.Tensor, percentile: int) -> torch.Tensor:
    """(max, percentile-th percentile) of values[mask]; both 1 (a ratio that did not move) when
    mask selects nothing.

    The percentile is the nearest-rank one, the ceil(q * n)-th smallest of the n selected values,
    i.e. the (floor((1 - q) * n) + 1)-th largest. It is taken from one `topk` of the top
    (1 - q) share of all positions, on the device (no host sync; cheaper than sorting).

    Args:
        values: finite values, shape (bs, response_length).
        mask: bool, shape (bs, response_length).
        percentile: integer in [1, 100).

    Returns:
        shape (2,), in values' dtype.
    """
    flat = torch.where(mask, values, -torch.inf).view(-1)
    largest = flat.topk(min(flat.numel(), flat.numel() * (100 - percentile) // 100 + 1)).values
    count = mask.sum()
    rank_from_top = torch.stack([torch.zeros_like(count), count * (100 - percentile) // 100])
    picked = largest.gather(0, rank_from_top.clamp(max=largest.numel() - 1))
    return torch.where(count > 0, picked, torch.ones_like(picked))

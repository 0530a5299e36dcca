"""The MASPO policy loss (Mass-Adaptive Soft Policy Optimization, arXiv 2602.17550), registered in
verl as `loss_mode="maspo"`.

Per token, with ratio r = pi_theta / pi_old, old probability p_old and advantage A, the paper's
method section combines three mechanisms (numbered equations were not available to us; the
formulas are the paper's as the authors' README and verl fork state them, see `maspo_verl.gate`):

    mass-adaptive limiter        m = clamp(sigma_base / p_old^alpha, sigma_base, sigma_high)
    asymmetric risk controller   k_pos = clamp(1 + beta_pos A, adv_low, adv_high)
                                 k_neg = clamp(1 / (1 - beta_neg A), adv_low, adv_high)
                                 sigma_pos = m k_pos,  sigma_neg = m k_neg
    soft Gaussian gating         w = exp(-(r - 1)^2 / (2 sigma^2)) where the update pushes r away
                                 from 1 (A > 0, r > 1: sigma_pos; A < 0, r < 1: sigma_neg), else 1
    per-token loss               -A * w * r, with w held constant (no gradient through the gate)

so the gradient through r is attenuated smoothly where PPO's clip would cut it. A < 0 with r > 1
stays unbounded (no gate, no clip, no dual clip), as in the authors' code.

`compute_policy_loss_maspo` reads as these steps. The tensor math is in `maspo_verl.gate`; verl's
conventions (inputs, statistics in one host sync, rollout importance weights, aggregation) are
`maspo_verl.conventions`, shared with the baselines.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from verl.trainer.ppo.core_algos import register_policy_loss

from maspo_verl.config import MaspoConfig
from maspo_verl.config import resolve_config_block
from maspo_verl.conventions import (
    LOG_RATIO_LIMIT,
    PolicyLossInputs,
    aggregate_policy_loss,
    clip_ratio_bounds,
    dual_clip_bound,
    policy_loss_statistics,
    prepare_policy_loss_inputs,
)
from maspo_verl.gate import (
    gaussian_gate_weight,
    hard_clip_bounds,
    hard_gate_surrogate,
    outward_regions,
    trust_region_widths,
)

__all__ = [
    "LOG_RATIO_LIMIT",
    "METRIC_KEYS",
    "RATIO_PERCENTILE",
    "compute_policy_loss_maspo",
    "hard_gate_token_losses",
    "masked_upper_statistics",
    "maspo_metrics",
    "resolve_maspo_config",
    "soft_gate_token_losses",
    "width_and_ratio_statistics",
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

    `config.policy_loss` is `MaspoPolicyLossConfig` (or a subclass: our Hydra `_target_`), a legacy
    DictConfig with a `maspo` block, or verl's plain `PolicyLossConfig`: the last one cannot carry
    MASPO keys, so the paper's defaults are used and the log says so once per process.
    """
    return resolve_config_block(config, "maspo", MaspoConfig, "maspo", "maspo_verl.MaspoPolicyLossConfig")


@register_policy_loss("maspo")
def compute_policy_loss_maspo(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any | None = None,
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
    hard_gate = maspo.gate == "hard"
    # r = exp(clamp(log pi_theta - log pi_old, -20, 20)), computed once, in at least float32, zero
    # log-ratio on padding. The soft gate routes the gradient itself, so only the hard gate needs
    # autograd through r.
    inputs = prepare_policy_loss_inputs(
        old_log_prob, log_prob, advantages, response_mask, rollout_is_weights, ratio_requires_grad=hard_gate
    )
    with torch.no_grad():
        ratio = inputs.ratio.detach()
        # sigma_pos = m * k_pos, sigma_neg = m * k_neg: limiter times risk controller (paper, method).
        sigma_pos, sigma_neg = trust_region_widths(
            inputs.old_log_prob,
            inputs.advantages,
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
        # (A > 0, r > 1) and (A < 0, r < 1): where the update pushes r away from 1. A = 0 on padding.
        regions = outward_regions(ratio, inputs.advantages)
        outward = regions[0] | regions[1]

    if hard_gate:
        pg_losses, gate_statistics = hard_gate_token_losses(
            inputs, outward, sigma_pos, sigma_neg, maspo.sigma_base, config
        )
    else:
        pg_losses, gate_statistics = soft_gate_token_losses(log_prob, inputs, regions, outward, sigma_pos, sigma_neg)

    statistics = {**gate_statistics, **width_and_ratio_statistics(inputs, regions, outward, sigma_pos, sigma_neg)}
    statistics = policy_loss_statistics("maspo", inputs, log_prob, statistics)  # one host sync
    pg_loss = aggregate_policy_loss(pg_losses, inputs, loss_agg_mode, config, statistics["num_valid"])
    return pg_loss.to(log_prob.dtype), maspo_metrics(statistics, maspo.sigma_base)


class _GatedSurrogate(torch.autograd.Function):
    """loss = c * r, with d loss / d log_prob = c * r where |log r| <= 20 and 0 outside (c constant).

    c = -A * w is the soft gate's constant coefficient and r = exp(clamp(log_prob - log pi_old,
    -20, 20)), so the backward needs one float per token, c * r, saved here; autograd's own graph
    would keep the ratio, the clamp's input and the coefficient.
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


def soft_gate_token_losses(
    log_prob: torch.Tensor,
    inputs: PolicyLossInputs,
    regions: tuple[torch.Tensor, torch.Tensor],
    outward: torch.Tensor,
    sigma_pos: torch.Tensor,
    sigma_neg: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MASPO's per-token loss -A * w * r with the soft Gaussian gate w held constant (arXiv
    2602.17550, soft Gaussian gating): the gradient through r survives, attenuated by w.

    Args:
        log_prob: log pi_theta, (bs, response_length), carries the gradient.
        inputs: the micro-batch from `prepare_policy_loss_inputs` (ratio without autograd history).
        regions: `outward_regions(r, A)`, two bool (bs, response_length) tensors.
        outward: their union, bool (bs, response_length).
        sigma_pos, sigma_neg: trust-region widths, (bs, response_length).

    Returns:
        per-token losses (bs, response_length) and the gate's statistics: "clipped" (tokens whose
        gradient the gate changes: every outward token), "dual_clipped" (0: no dual clip) and
        "outward_weight_sum" (sum of w over outward tokens).
    """
    with torch.no_grad():
        # w = exp(-(r - 1)^2 / (2 sigma^2)) on outward tokens, 1 elsewhere (paper: soft Gaussian gating)
        gradient_weight = gaussian_gate_weight(inputs.ratio, inputs.advantages, sigma_pos, sigma_neg, regions)
        coefficient = -inputs.advantages * gradient_weight  # 0 on padding, where A = 0
        ratio_in_range = inputs.log_ratio.abs() <= LOG_RATIO_LIMIT
    pg_losses = _GatedSurrogate.apply(log_prob, inputs.ratio, ratio_in_range, coefficient)
    with torch.no_grad():
        outward_count = outward.sum()
        statistics = {
            "clipped": outward_count,
            "dual_clipped": torch.zeros((), dtype=torch.long, device=inputs.ratio.device),
            # 1 - w is 0 off the outward tokens, so this is the sum of w over them in one pass (and
            # summing the small 1 - w stays exact in float32 where summing w over millions would not)
            "outward_weight_sum": outward_count - (1.0 - gradient_weight).sum(),
        }
    return pg_losses, statistics


def hard_gate_token_losses(
    inputs: PolicyLossInputs,
    outward: torch.Tensor,
    sigma_pos: torch.Tensor,
    sigma_neg: torch.Tensor,
    sigma_base: float,
    config: Any,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`gate=hard` ablation: verl's vanilla clipped surrogate with dual clip whose bounds are
    1 - clip_ratio_low * sigma_neg/sigma_base and 1 + clip_ratio_high * sigma_pos/sigma_base
    (maspo-verl's design; the paper's ablation code is not public).

    Args:
        inputs: the micro-batch from `prepare_policy_loss_inputs`, its ratio carrying the gradient.
        outward: bool, where the update pushes r away from 1 (the union of `outward_regions(r, A)`);
        sigma_pos, sigma_neg: widths; all (bs, response_length).
        sigma_base: MASPO's base width; config: verl's actor config (clip ratios, dual clip bound).

    Returns:
        per-token losses (bs, response_length) and the statistics "clipped" / "dual_clipped" (valid
        tokens whose gradient the clip / dual clip cuts) and "outward_weight_sum" (outward tokens
        the clip leaves uncut: the hard gate's weight is 0 or 1).
    """
    clip_ratio_low, clip_ratio_high = clip_ratio_bounds(config)
    clip_ratio_c = dual_clip_bound(config, "maspo (gate=hard)")
    lower, upper = hard_clip_bounds(sigma_pos, sigma_neg, sigma_base, clip_ratio_low, clip_ratio_high)
    pg_losses, clip_active, dual_clip_active = hard_gate_surrogate(
        inputs.ratio, inputs.advantages, lower, upper, clip_ratio_c
    )
    with torch.no_grad():
        clip_active &= inputs.response_mask
        gradient_weight = (~(clip_active | dual_clip_active)).to(inputs.compute_dtype)
        statistics = {
            "clipped": clip_active.sum(),
            "dual_clipped": dual_clip_active.sum(),
            "outward_weight_sum": (gradient_weight * outward).sum(),
        }
    return pg_losses, statistics


def width_and_ratio_statistics(
    inputs: PolicyLossInputs,
    regions: tuple[torch.Tensor, torch.Tensor],
    outward: torch.Tensor,
    sigma_pos: torch.Tensor,
    sigma_neg: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Device-side statistics of MASPO's metrics that do not depend on the gate, all 0-d tensors:
    the mean log-ratio's sum, the outward token counts and widths, the unbounded side (A < 0,
    r > 1) and the ratio's extremes per advantage sign."""
    with torch.no_grad():
        ratio, advantages = inputs.ratio.detach(), inputs.advantages
        ratio_pos = masked_upper_statistics(ratio, advantages > 0, RATIO_PERCENTILE)
        ratio_neg = masked_upper_statistics(ratio, advantages < 0, RATIO_PERCENTILE)
        return {
            "negative_log_ratio": -inputs.clamped_log_ratio.sum(),
            "gated_pos": regions[0].sum(),
            "gated_neg": regions[1].sum(),
            "outward": outward.sum(),
            "sigma_pos_sum": torch.where(regions[0], sigma_pos, 0.0).sum(),
            "sigma_neg_sum": torch.where(regions[1], sigma_neg, 0.0).sum(),
            # A < 0 with r > 1: the side MASPO leaves unbounded, as the authors' code does; only these
            # metrics show how far ratios went there.
            "unbounded_neg": ((advantages < 0) & (ratio > 1.0)).sum(),
            "ratio_max_pos": ratio_pos[0],
            "ratio_p99_pos": ratio_pos[1],
            "ratio_max_neg": ratio_neg[0],
            "ratio_p99_neg": ratio_neg[1],
            "ratio_min_neg": torch.where(advantages < 0, ratio, torch.inf).min(),
        }


def maspo_metrics(statistics: dict[str, float], sigma_base: float) -> dict[str, float]:
    """MASPO's metrics (METRIC_KEYS) from the host statistics of one micro-batch.

    Fractions are over valid tokens (an empty micro-batch reports 0 fractions, no attenuation);
    each width is averaged over the tokens it acts on (sigma_base when its side has none).
    """
    num_valid = statistics["num_valid"] or 1.0
    gated_pos, gated_neg = statistics["gated_pos"], statistics["gated_neg"]
    ratio_min_neg = statistics["ratio_min_neg"]
    return {
        "actor/pg_clipfrac": statistics["clipped"] / num_valid,
        "actor/ppo_kl": statistics["negative_log_ratio"] / num_valid,
        "actor/pg_clipfrac_lower": statistics["dual_clipped"] / num_valid,
        "actor/maspo/gated_frac_pos": gated_pos / num_valid,
        "actor/maspo/gated_frac_neg": gated_neg / num_valid,
        "actor/maspo/gate_weight_mean": (
            statistics["outward_weight_sum"] / statistics["outward"] if statistics["outward"] else 1.0
        ),
        "actor/maspo/sigma_pos_mean": statistics["sigma_pos_sum"] / gated_pos if gated_pos else sigma_base,
        "actor/maspo/sigma_neg_mean": statistics["sigma_neg_sum"] / gated_neg if gated_neg else sigma_base,
        "actor/maspo/unbounded_frac_neg": statistics["unbounded_neg"] / num_valid,
        "actor/maspo/ratio_max_pos": statistics["ratio_max_pos"],
        "actor/maspo/ratio_p99_pos": statistics["ratio_p99_pos"],
        "actor/maspo/ratio_min_neg": ratio_min_neg if math.isfinite(ratio_min_neg) else 1.0,
        "actor/maspo/ratio_max_neg": statistics["ratio_max_neg"],
        "actor/maspo/ratio_p99_neg": statistics["ratio_p99_neg"],
    }


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

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
stays unbounded (no gate, no clip, no dual clip), as in the authors' code, unless the opt-in
`maspo.clip_ratio_c` (maspo-verl's extension, not the paper's) bounds it as verl's dual clip does:
there, A < 0 and r > c, the per-token loss is the constant -A * c.

`compute_policy_loss_maspo` reads as these steps. The tensor math is in `maspo_verl.gate`; verl's
conventions (inputs, statistics in one host sync, rollout importance weights, aggregation) are
`maspo_verl.conventions`, shared with the baselines.
"""

from __future__ import annotations

from typing import Any

import torch
from verl.trainer.ppo.core_algos import register_policy_loss

from maspo_verl.config import MaspoConfig, resolve_config_block
from maspo_verl.conventions import (
    LOG_RATIO_LIMIT,
    RATIO_METRIC_KEYS,
    PolicyLossInputs,
    aggregate_policy_loss,
    clip_ratio_bounds,
    dual_clip_bound,
    policy_loss_statistics,
    prepare_policy_loss_inputs,
    ratio_statistics,
)
from maspo_verl.gate import (
    dual_clip_region,
    gaussian_gate_weight,
    hard_clip_bounds,
    hard_gate_surrogate,
    outward_regions,
    trust_region_widths,
)

__all__ = [
    "LOG_RATIO_LIMIT",
    "METRIC_KEYS",
    "compute_policy_loss_maspo",
    "hard_gate_token_losses",
    "maspo_metrics",
    "resolve_maspo_config",
    "soft_gate_token_losses",
    "width_statistics",
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
    *RATIO_METRIC_KEYS,
)


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
        # A = 0 on padding: these select valid tokens only.
        positive, negative = inputs.advantages > 0, inputs.advantages < 0
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
        # (A > 0, r > 1) and (A < 0, r < 1): where the update pushes r away from 1.
        regions = outward_regions(ratio, inputs.advantages, positive, negative)
        outward = regions[0] | regions[1]

    if hard_gate:
        # The hard gate always has verl's dual clip: maspo.clip_ratio_c when set, else actor.clip_ratio_c.
        clip_ratio_c = maspo.clip_ratio_c or dual_clip_bound(config, "maspo (gate=hard)")
        pg_losses, gate_statistics = hard_gate_token_losses(
            inputs, outward, sigma_pos, sigma_neg, maspo.sigma_base, config, clip_ratio_c
        )
    else:
        pg_losses, gate_statistics = soft_gate_token_losses(
            log_prob, inputs, regions, outward, sigma_pos, sigma_neg, maspo.clip_ratio_c, positive, negative
        )

    statistics = {
        **gate_statistics,
        **width_statistics(inputs, regions, outward, sigma_pos, sigma_neg, negative),
        **ratio_statistics(inputs, positive, negative),
    }
    statistics = policy_loss_statistics("maspo", inputs, log_prob, statistics, pg_losses)  # one host sync
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
    clip_ratio_c: float | None = None,
    positive: torch.Tensor | None = None,
    negative: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MASPO's per-token loss -A * w * r with the soft Gaussian gate w held constant (arXiv
    2602.17550, soft Gaussian gating): the gradient through r survives, attenuated by w.

    With `clip_ratio_c` = c (`maspo.clip_ratio_c`, maspo-verl's extension, not the paper's) the side the
    gate leaves open is bounded as verl's dual clip bounds it: where A < 0 and r > c the per-token loss is
    the constant -A * c (no gradient). None (default, the paper and the authors' code): unbounded.

    Args:
        log_prob: log pi_theta, (bs, response_length), carries the gradient.
        inputs: the micro-batch from `prepare_policy_loss_inputs` (ratio without autograd history).
        regions: `outward_regions(r, A)`, two bool (bs, response_length) tensors.
        outward: their union, bool (bs, response_length).
        sigma_pos, sigma_neg: trust-region widths, (bs, response_length).
        clip_ratio_c: the dual-clip bound c > 1, or None for none.
        positive, negative: `A > 0` and `A < 0` when the caller already has them.

    Returns:
        per-token losses (bs, response_length) and the gate's statistics: "clipped" (tokens whose
        gradient the gate changes: every outward token), "dual_clipped" (A < 0, r > c; 0 without c) and
        "outward_weight_sum" (sum of w over outward tokens).
    """
    ratio = inputs.ratio
    with torch.no_grad():
        # w = exp(-(r - 1)^2 / (2 sigma^2)) on outward tokens, 1 elsewhere (paper: soft Gaussian gating)
        gradient_weight = gaussian_gate_weight(
            ratio, inputs.advantages, sigma_pos, sigma_neg, regions, outward, positive
        )
        outward_count = torch.count_nonzero(outward)
        # 1 - w is 0 off the outward tokens, so this is the sum of w over them in one pass (and summing
        # the small 1 - w stays exact in float32 where summing w over millions would not)
        outward_weight_sum = outward_count - (1.0 - gradient_weight).sum()
        coefficient = gradient_weight.mul_(inputs.advantages).neg_()  # -A * w, 0 on padding where A = 0
        # |log r| <= 20: where verl's clamp passes the gradient
        ratio_in_range = inputs.clamped_log_ratio == inputs.log_ratio
        if clip_ratio_c is None:
            dual_clipped = torch.zeros((), dtype=torch.long, device=ratio.device)
        else:
            dual = dual_clip_region(ratio, inputs.advantages, clip_ratio_c, negative)
            dual_clipped = torch.count_nonzero(dual)
            ratio = torch.where(dual, clip_ratio_c, ratio)  # loss -A * c there (w = 1 on A < 0, r > 1)
            ratio_in_range &= ~dual  # and no gradient
    pg_losses = _GatedSurrogate.apply(log_prob, ratio, ratio_in_range, coefficient)
    statistics = {"clipped": outward_count, "dual_clipped": dual_clipped, "outward_weight_sum": outward_weight_sum}
    return pg_losses, statistics


def hard_gate_token_losses(
    inputs: PolicyLossInputs,
    outward: torch.Tensor,
    sigma_pos: torch.Tensor,
    sigma_neg: torch.Tensor,
    sigma_base: float,
    config: Any,
    clip_ratio_c: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`gate=hard` ablation: verl's vanilla clipped surrogate with dual clip whose bounds are
    1 - clip_ratio_low * sigma_neg/sigma_base and 1 + clip_ratio_high * sigma_pos/sigma_base
    (maspo-verl's design; the paper's ablation code is not public), dual clip at `clip_ratio_c`.

    Args:
        inputs: the micro-batch from `prepare_policy_loss_inputs`, its ratio carrying the gradient.
        outward: bool, where the update pushes r away from 1 (the union of `outward_regions(r, A)`);
        sigma_pos, sigma_neg: widths; all (bs, response_length).
        sigma_base: MASPO's base width; config: verl's actor config (clip ratios);
        clip_ratio_c: the dual-clip bound c > 1.

    Returns:
        per-token losses (bs, response_length) and the statistics "clipped" / "dual_clipped" (valid
        tokens whose gradient the clip / dual clip cuts) and "outward_weight_sum" (outward tokens
        the clip leaves uncut: the hard gate's weight is 0 or 1).
    """
    clip_ratio_low, clip_ratio_high = clip_ratio_bounds(config)
    lower, upper = hard_clip_bounds(sigma_pos, sigma_neg, sigma_base, clip_ratio_low, clip_ratio_high)
    pg_losses, clip_active, dual_clip_active = hard_gate_surrogate(
        inputs.ratio, inputs.advantages, lower, upper, clip_ratio_c
    )
    with torch.no_grad():
        clip_active &= inputs.response_mask
        gradient_weight = (~(clip_active | dual_clip_active)).to(inputs.compute_dtype)
        statistics = {
            "clipped": torch.count_nonzero(clip_active),
            "dual_clipped": torch.count_nonzero(dual_clip_active),
            "outward_weight_sum": (gradient_weight * outward).sum(),
        }
    return pg_losses, statistics


def width_statistics(
    inputs: PolicyLossInputs,
    regions: tuple[torch.Tensor, torch.Tensor],
    outward: torch.Tensor,
    sigma_pos: torch.Tensor,
    sigma_neg: torch.Tensor,
    negative: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Device-side statistics of MASPO's metrics that depend neither on the gate nor only on the ratio,
    all 0-d tensors: the mean log-ratio's sum, the outward token counts and widths and the side MASPO
    leaves unbounded (A < 0, r > 1). `negative` is `A < 0` when the caller already has it."""
    with torch.no_grad():
        ratio, advantages = inputs.ratio.detach(), inputs.advantages
        negative = advantages < 0 if negative is None else negative
        return {
            "negative_log_ratio": -inputs.clamped_log_ratio.sum(),
            "gated_pos": torch.count_nonzero(regions[0]),
            "gated_neg": torch.count_nonzero(regions[1]),
            "outward": torch.count_nonzero(outward),
            # products with the masks, not selects: a select on a mask that changes token by token is slow
            "sigma_pos_sum": (sigma_pos * regions[0]).sum(),
            "sigma_neg_sum": (sigma_neg * regions[1]).sum(),
            # A < 0 with r > 1: the side MASPO leaves unbounded, as the authors' code does (unless
            # maspo.clip_ratio_c is set); the ratio metrics show how far ratios went there.
            "unbounded_neg": torch.count_nonzero(negative & (ratio > 1.0)),
        }


def maspo_metrics(statistics: dict[str, float], sigma_base: float) -> dict[str, float]:
    """MASPO's metrics (METRIC_KEYS) from the host statistics of one micro-batch.

    Fractions are over valid tokens (an empty micro-batch reports 0 fractions, no attenuation);
    each width is averaged over the tokens it acts on (sigma_base when its side has none); the ratio's
    extremes are `maspo_verl.conventions.ratio_statistics`, as every loss of this package reports them.
    """
    num_valid = statistics["num_valid"] or 1.0
    gated_pos, gated_neg = statistics["gated_pos"], statistics["gated_neg"]
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
        **{key: statistics[key] for key in RATIO_METRIC_KEYS},
    }

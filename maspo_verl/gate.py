"""MASPO's gate math (arXiv 2602.17550): pure tensor functions, no verl, no config objects.

Every tensor is padded (batch_size, response_length) and float32; the verl loss in
`maspo_verl.loss` casts its inputs before calling these. Names follow the paper's method
section (soft Gaussian gating; the mass-adaptive limiter and the asymmetric risk controller,
which the authors' README combines as the "dual-variable adaptive variance"
sigma = sigma_base / p_old**alpha * (1 + beta*A)^(+-1)). Equation numbers are not cited: the
paper's numbered equations were not available to us; the formulas were checked against the
authors' README and their verl fork. The clamps sigma_high, adv_low and adv_high come from the
authors' code and config (maspo_sigma_high etc.), not from the paper's formula.
"""

from __future__ import annotations

import torch

__all__ = [
    "dual_clip_region",
    "gaussian_gate_weight",
    "hard_clip_bounds",
    "hard_gate_surrogate",
    "mass_adaptive_limiter",
    "outward_regions",
    "risk_factors",
    "trust_region_widths",
]


def mass_adaptive_limiter(
    old_log_prob: torch.Tensor, sigma_base: float, alpha: float, sigma_high: float
) -> torch.Tensor:
    """Mass-adaptive limiter: m = clamp(sigma_base / p_old**alpha, sigma_base, sigma_high).

    Tail tokens (small old probability p_old) get a wider trust region, head tokens stay at
    sigma_base. Computed in log space, sigma_base * exp(-alpha * log p_old), so p_old -> 0 gives
    sigma_high instead of inf/NaN (also for alpha = 0 with log p_old = -inf).

    Args:
        old_log_prob: log pi_old(token), shape (bs, response_length).
        sigma_base, alpha, sigma_high: MASPO hyper-parameters (sigma_base > 0, alpha >= 0).

    Returns:
        m: shape (bs, response_length), in [sigma_base, sigma_high].
    """
    if alpha == 0:
        return torch.full_like(old_log_prob, sigma_base)
    width = old_log_prob * -alpha  # log(1 / p_old**alpha) >= 0; +inf for p_old = 0
    return width.exp_().mul_(sigma_base).clamp_(min=sigma_base, max=sigma_high)


def risk_factors(
    advantages: torch.Tensor, beta_pos: float, beta_neg: float, adv_low: float, adv_high: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric risk controller: k_pos = clamp(1 + beta_pos*A, adv_low, adv_high),
    k_neg = clamp(1 / (1 - beta_neg*A), adv_low, adv_high).

    A confident positive signal (large A > 0) widens the region for ratios above 1; a strong
    negative signal (A << 0) narrows the region below 1. k_neg is only used where A < 0, where
    1 - beta_neg*A >= 1; elsewhere the denominator can reach 0 (A >= 1/beta_neg), so it is floored
    at 1/adv_high, which returns the same clamped value (adv_high) without dividing by zero. (The
    authors' code divides there and its sign flip clamps to adv_low; neither the loss nor any metric
    reads k_neg where A >= 0, so nothing differs.)

    Args:
        advantages: A, shape (bs, response_length).

    Returns:
        (k_pos, k_neg): each shape (bs, response_length), in [adv_low, adv_high].
    """
    k_pos = (advantages * beta_pos).add_(1.0).clamp_(min=adv_low, max=adv_high)
    denominator = (advantages * -beta_neg).add_(1.0).clamp_(min=1.0 / adv_high)
    k_neg = denominator.reciprocal_().clamp_(min=adv_low, max=adv_high)
    return k_pos, k_neg


def trust_region_widths(
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    *,
    sigma_base: float,
    alpha: float,
    beta_pos: float,
    beta_neg: float,
    sigma_high: float,
    adv_low: float,
    adv_high: float,
    mass_adaptive: bool = True,
    risk_control: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """sigma_pos = m * k_pos and sigma_neg = m * k_neg (limiter times risk controller).

    `mass_adaptive=False` uses m = sigma_base; `risk_control=False` uses k_pos = k_neg = 1.

    Returns:
        (sigma_pos, sigma_neg): each shape (bs, response_length).
    """
    if mass_adaptive:
        mass_factor = mass_adaptive_limiter(old_log_prob, sigma_base, alpha, sigma_high)
    else:
        mass_factor = torch.full_like(old_log_prob, sigma_base)
    if not risk_control:
        return mass_factor, mass_factor
    k_pos, k_neg = risk_factors(advantages, beta_pos, beta_neg, adv_low, adv_high)
    return k_pos.mul_(mass_factor), k_neg.mul_(mass_factor)


def outward_regions(
    ratio: torch.Tensor,
    advantages: torch.Tensor,
    positive: torch.Tensor | None = None,
    negative: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the update pushes the ratio away from 1: (A > 0 and r > 1), (A < 0 and r < 1).

    Args:
        ratio: r, (bs, response_length); advantages: A, (bs, response_length).
        positive, negative: `advantages > 0` and `advantages < 0` when the caller already has them.

    Returns:
        (outward_pos, outward_neg): bool tensors, shape (bs, response_length).
    """
    positive = advantages > 0 if positive is None else positive
    negative = advantages < 0 if negative is None else negative
    return positive & (ratio > 1.0), negative & (ratio < 1.0)


def gaussian_gate_weight(
    ratio: torch.Tensor,
    advantages: torch.Tensor,
    sigma_pos: torch.Tensor,
    sigma_neg: torch.Tensor,
    regions: tuple[torch.Tensor, torch.Tensor] | None = None,
    outward: torch.Tensor | None = None,
    positive: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft Gaussian gate: w = exp(-(r - 1)^2 / (2 sigma^2)) where the update pushes r outward,
    with sigma = sigma_pos for (A > 0, r > 1) and sigma_neg for (A < 0, r < 1); w = 1 elsewhere.

    The caller uses w as a constant (no gradient): the per-token loss is -A * w * r, so the
    gradient through r is attenuated smoothly instead of being cut to zero by a hard clip.

    Args:
        ratio: r = pi_theta / pi_old, shape (bs, response_length); detached by the caller.
        advantages: A, shape (bs, response_length).
        sigma_pos, sigma_neg: trust-region widths, shape (bs, response_length).
        regions: `outward_regions(ratio, advantages)` when the caller already has them;
        outward: their union; positive: `advantages > 0` (all bool, (bs, response_length)).

    Returns:
        w: shape (bs, response_length), in (0, 1].
    """
    if outward is None:
        outward_pos, outward_neg = regions if regions is not None else outward_regions(ratio, advantages)
        outward = outward_pos | outward_neg
    # On an outward token A > 0 exactly where it is gated with sigma_pos, so the sign of A picks the width
    # (a select on a mask that is constant along a GRPO response, cheaper than one on the region masks).
    sigma = torch.where(advantages > 0 if positive is None else positive, sigma_pos, sigma_neg)
    exponent = (ratio - 1.0).div_(sigma).square_().mul_(-0.5)
    return exponent.mul_(outward).exp_()  # exp(0) = 1 off the outward tokens


def dual_clip_region(
    ratio: torch.Tensor, advantages: torch.Tensor, clip_ratio_c: float, negative: torch.Tensor | None = None
) -> torch.Tensor:
    """Where a dual clip with bound c > 1 sets the loss (Ye et al. 2020, arXiv 1912.09729, as verl's vanilla
    loss applies it): A < 0 and r > c. There PPO's dual-clipped per-token loss is the constant -A * c,
    with no gradient.

    Args:
        ratio: r, (bs, response_length); advantages: A, (bs, response_length); clip_ratio_c: c > 1;
        negative: `advantages < 0` when the caller already has it.

    Returns:
        bool, shape (bs, response_length).
    """
    return (advantages < 0 if negative is None else negative) & (ratio > clip_ratio_c)


def hard_clip_bounds(
    sigma_pos: torch.Tensor,
    sigma_neg: torch.Tensor,
    sigma_base: float,
    clip_ratio_low: float,
    clip_ratio_high: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds of the hard-clip ablation (`gate=hard`): PPO's clip with MASPO's adaptive widths,
    lower = 1 - clip_ratio_low * sigma_neg / sigma_base, upper = 1 + clip_ratio_high * sigma_pos / sigma_base.

    With the limiter and risk controller off both scales are 1 and this is verl's vanilla clip.
    This ablation is maspo-verl's design (the paper's ablation code is not public).

    Returns:
        (lower, upper): each shape (bs, response_length).
    """
    lower = 1.0 - clip_ratio_low * (sigma_neg / sigma_base)
    upper = 1.0 + clip_ratio_high * (sigma_pos / sigma_base)
    return lower, upper


def hard_gate_surrogate(
    ratio: torch.Tensor,
    advantages: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    clip_ratio_c: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token loss of the hard-gate ablation (`gate=hard`): PPO's clipped surrogate on MASPO's
    bounds `hard_clip_bounds`, max(-A r, -A clip(r, lower, upper)), and for A < 0 verl's dual clip
    min(that, -A c) (Ye et al. 2020, arXiv 1912.09729).

    It is verl's vanilla per-token loss with adaptive bounds; the baselines use it as
    `maspo_verl.baselines.common.dual_clipped_surrogate` (the core does not import the baselines, so it lives here).

    Args:
        ratio: r, (bs, response_length), carries the gradient.
        advantages: A, (bs, response_length).
        lower, upper: ratio bounds, (bs, response_length).
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

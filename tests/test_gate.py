"""maspo_verl.gate: each mechanism against values computed here from the paper's formulas; the
hard-gate ablation's surrogate (the baselines' dual-clipped PPO surrogate too) against PPO's
dual-clipped surrogate written out token by token from its definition."""

import math

import pytest
import torch

from maspo_verl.baselines.common import dual_clipped_surrogate
from maspo_verl.gate import (
    dual_clip_region,
    gaussian_gate_weight,
    hard_clip_bounds,
    hard_gate_surrogate,
    mass_adaptive_limiter,
    risk_factors,
    trust_region_widths,
)

pytestmark = pytest.mark.kind("unit")


@pytest.mark.parametrize(
    "p_old, alpha, expected",
    [
        (1.0, 0.3, 1.0),  # head token: sigma_base
        (0.1, 0.3, 0.1**-0.3),  # 1.995...
        (0.01, 0.5, 10.0),  # 0.01^-0.5 = 10 -> exactly sigma_high
        (1e-6, 0.5, 10.0),  # 1000 -> capped at sigma_high
        (0.5, 0.0, 1.0),  # alpha = 0 switches the limiter off
    ],
)
def test_mass_adaptive_limiter_values(p_old, alpha, expected):
    old_log_prob = torch.tensor([[math.log(p_old)]], dtype=torch.float64)
    m = mass_adaptive_limiter(old_log_prob, sigma_base=1.0, alpha=alpha, sigma_high=10.0)
    assert m.item() == pytest.approx(expected, rel=1e-12)


def test_mass_adaptive_limiter_scales_with_sigma_base_and_survives_zero_probability():
    old_log_prob = torch.tensor([0.0, math.log(0.2), -float("inf")])
    m = mass_adaptive_limiter(old_log_prob, sigma_base=0.5, alpha=0.3, sigma_high=4.0)
    assert m.tolist() == pytest.approx([0.5, min(max(0.5 / 0.2**0.3, 0.5), 4.0), 4.0])
    m_off = mass_adaptive_limiter(old_log_prob, sigma_base=0.5, alpha=0.0, sigma_high=4.0)
    assert m_off.tolist() == [0.5, 0.5, 0.5]  # no 0 * inf = NaN for alpha = 0


def test_risk_factors_values():
    advantages = torch.tensor([2.0, -2.0, 0.0, -100.0, 100.0], dtype=torch.float64)
    k_pos, k_neg = risk_factors(advantages, beta_pos=0.03, beta_neg=0.05, adv_low=0.1, adv_high=10.0)
    expected_pos = [min(max(1 + 0.03 * a, 0.1), 10.0) for a in advantages.tolist()]
    assert k_pos.tolist() == pytest.approx(expected_pos)
    assert k_neg[0].item() == pytest.approx(1 / (1 - 0.1))  # A > 0: only defined below A = 1/beta
    assert k_neg[1].item() == pytest.approx(1 / 1.1)  # A < 0 narrows the negative region
    assert k_neg[2].item() == 1.0
    assert k_neg[3].item() == pytest.approx(max(1 / 6.0, 0.1))
    assert k_neg[4].item() == 10.0  # 1 - 0.05 * 100 = -4: floored, clamped to adv_high, no sign flip


def test_risk_factor_division_never_produces_inf_or_nan():
    beta = 0.03
    advantages = torch.tensor([1 / beta, 1 / beta - 1e-6, 1 / beta + 1e-6, 1e30, -1e30])
    k_pos, k_neg = risk_factors(advantages, beta_pos=beta, beta_neg=beta, adv_low=0.1, adv_high=10.0)
    for tensor in (k_pos, k_neg):
        assert torch.isfinite(tensor).all()
        assert ((tensor >= 0.1) & (tensor <= 10.0)).all()


def test_trust_region_widths_combine_limiter_and_risk_controller():
    old_log_prob = torch.tensor([math.log(0.1), math.log(0.9)])
    advantages = torch.tensor([1.5, -1.5])
    keys = dict(sigma_base=1.0, alpha=0.3, beta_pos=0.03, beta_neg=0.03, sigma_high=10.0, adv_low=0.1, adv_high=10.0)
    sigma_pos, sigma_neg = trust_region_widths(old_log_prob, advantages, **keys)
    m = [0.1**-0.3, 0.9**-0.3]
    assert sigma_pos.tolist() == pytest.approx([m[0] * (1 + 0.045), m[1] * (1 - 0.045)], rel=1e-6)
    assert sigma_neg.tolist() == pytest.approx([m[0] / (1 - 0.045), m[1] / (1 + 0.045)], rel=1e-6)
    sigma_pos, sigma_neg = trust_region_widths(old_log_prob, advantages, **keys, mass_adaptive=False)
    assert sigma_pos.tolist() == pytest.approx([1.045, 0.955], rel=1e-6)
    sigma_pos, sigma_neg = trust_region_widths(old_log_prob, advantages, **keys, risk_control=False)
    assert sigma_pos.tolist() == pytest.approx(m, rel=1e-6) and sigma_neg.tolist() == pytest.approx(m, rel=1e-6)


@pytest.mark.parametrize(
    "ratio, advantage, sigma_pos, sigma_neg, expected",
    [
        (1.5, 1.0, 0.5, 9.0, math.exp(-(0.5**2) / (2 * 0.5**2))),  # A>0, r>1: sigma_pos
        (0.5, -1.0, 9.0, 0.25, math.exp(-(0.5**2) / (2 * 0.25**2))),  # A<0, r<1: sigma_neg
        (0.5, 1.0, 0.1, 0.1, 1.0),  # A>0, r<1: the update pulls r back to 1, no gate
        (1.5, -1.0, 0.1, 0.1, 1.0),  # A<0, r>1: pulls back, no gate
        (3.0, 0.0, 0.1, 0.1, 1.0),  # A = 0: nothing pushes
        (1.0, 1.0, 0.1, 0.1, 1.0),  # on policy
    ],
)
def test_gaussian_gate_weight_regions(ratio, advantage, sigma_pos, sigma_neg, expected):
    w = gaussian_gate_weight(
        torch.tensor([ratio], dtype=torch.float64),
        torch.tensor([advantage], dtype=torch.float64),
        torch.tensor([sigma_pos], dtype=torch.float64),
        torch.tensor([sigma_neg], dtype=torch.float64),
    )
    assert w.item() == pytest.approx(expected, rel=1e-12)


def test_hard_clip_bounds_scale_with_relative_widths():
    lower, upper = hard_clip_bounds(torch.tensor([2.0]), torch.tensor([0.5]), 1.0, 0.2, 0.28)
    assert lower.item() == pytest.approx(1 - 0.2 * 0.5) and upper.item() == pytest.approx(1 + 0.28 * 2.0)
    lower, upper = hard_clip_bounds(torch.tensor([2.0]), torch.tensor([2.0]), 2.0, 0.2, 0.2)
    assert (lower.item(), upper.item()) == pytest.approx((0.8, 1.2))


def ppo_dual_clipped_token_loss(
    r: float, a: float, lower: float, upper: float, c: float
) -> tuple[float, float, bool, bool]:
    """PPO's clipped surrogate with the dual clip of Ye et al. 2020 (arXiv 1912.09729), from its
    definition, for one token in float64: L = max(-A r, -A clip(r, lower, upper)), and for A < 0
    min(L, -A c). Returns (loss, d loss / d log r, clipped, dual_clipped), where "clipped" means the
    clipped term is strictly larger and "dual_clipped" that -A c is strictly smaller than L."""
    unclipped, clipped = -a * r, -a * min(max(r, lower), upper)
    loss = max(unclipped, clipped)
    # d/d log r of -A r is -A r; the clipped term has that gradient only where r is inside [lower, upper]
    gradient = -a * r if unclipped >= clipped or lower <= r <= upper else 0.0
    dual = a < 0 and loss > -a * c
    if dual:
        loss, gradient = -a * c, 0.0
    return loss, gradient, clipped > unclipped, dual


@pytest.mark.parametrize("surrogate", [hard_gate_surrogate, dual_clipped_surrogate])
def test_hard_gate_surrogate_is_ppos_dual_clipped_surrogate(surrogate):
    """Random ratios, both advantage signs, per-token bounds: values, gradients and both masks equal
    the definition above (float64); `dual_clipped_surrogate` of the baselines is checked the same way."""
    generator = torch.Generator().manual_seed(0)
    log_ratio = torch.randn(32, 17, generator=generator, dtype=torch.float64) * 0.8
    advantages = (torch.randn(32, 1, generator=generator, dtype=torch.float64) * 2).expand(32, 17)
    sigma_pos, sigma_neg = (torch.rand(32, 17, generator=generator, dtype=torch.float64) * 3 + 1 for _ in range(2))
    lower, upper = hard_clip_bounds(sigma_pos, sigma_neg, 1.0, 0.2, 0.28)
    log_prob = log_ratio.clone().requires_grad_(True)
    losses, clip_active, dual_clip_active = surrogate(torch.exp(log_prob), advantages, lower, upper, 3.0)
    (gradient,) = torch.autograd.grad(losses.sum(), log_prob)
    expected = [
        ppo_dual_clipped_token_loss(math.exp(lr), a, lo, up, 3.0)
        for lr, a, lo, up in zip(
            log_ratio.flatten().tolist(),
            advantages.flatten().tolist(),
            lower.flatten().tolist(),
            upper.flatten().tolist(),
            strict=True,
        )
    ]
    loss_values, gradients, clipped, dual = (
        torch.tensor(column, dtype=dtype).view(32, 17)
        for column, dtype in zip(
            zip(*expected, strict=True), (torch.float64, torch.float64, torch.bool, torch.bool), strict=True
        )
    )
    torch.testing.assert_close(losses.detach(), loss_values, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gradient, gradients, rtol=1e-12, atol=1e-12)
    assert torch.equal(clip_active, clipped) and torch.equal(dual_clip_active, dual)
    assert clipped.any() and dual.any() and not (clipped | dual).all()  # each branch exercised


def test_dual_clip_region_is_negative_advantage_above_c():
    ratio = torch.tensor([4.0, 3.0, 2.0, 4.0, 0.5])
    advantages = torch.tensor([-1.0, -1.0, -1.0, 1.0, -1.0])
    assert dual_clip_region(ratio, advantages, 3.0).tolist() == [True, False, False, False, False]
    negative = torch.tensor([False, True, True, True, True])  # a caller's mask is used as given
    assert dual_clip_region(ratio, advantages, 3.0, negative).tolist() == [False, False, False, True, False]

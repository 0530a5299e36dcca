"""loss_mode=dac (DCPO's dynamic adaptive clipping, arXiv 2509.02333): the bounds against the
paper's closed form and the constraint they solve, the q = 1 identity with verl's vanilla loss,
values and gradients against an element-by-element reference, verl's real ppo_loss, the upper
bound's cap against DCPO's own formula max(clip_ratio_c, 10) at clip_ratio_c = 20, bad input."""

import dataclasses
import math
from dataclasses import dataclass, field

import pytest
import torch
from helpers import LossInputs, actor_config, random_loss_inputs, run_verl_ppo_loss
from verl.trainer.ppo.core_algos import agg_loss, compute_policy_loss_vanilla, get_policy_loss_fn
from verl.workers.config import PolicyLossConfig

from maspo_verl.baselines.dac import (
    METRIC_KEYS,
    DacConfig,
    compute_policy_loss_dac,
    dac_ratio_bounds,
    dcpo_upper_bound_cap,
)
from maspo_verl.config import config_block_from

pytestmark = pytest.mark.kind("unit")

AGG_MODES = ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]


@dataclass
class PolicyLossWithDac(PolicyLossConfig):
    dac: DacConfig = field(default_factory=DacConfig)


def dac_actor_config(loss_agg_mode="token-mean", clip_ratio_c=3.0, **dac_keys):
    base = actor_config(loss_mode="dac", loss_agg_mode=loss_agg_mode, plain=True, clip_ratio_c=clip_ratio_c)
    return dataclasses.replace(base, policy_loss=PolicyLossWithDac(loss_mode="dac", dac=DacConfig(**dac_keys)))


def reference_bounds(q, eps_low, eps_high, cap):
    lower = 0.5 + 0.5 * math.sqrt(max(1 - 4 * eps_low / q, 0.0))
    upper = min(0.5 + 0.5 * math.sqrt(1 + 4 * eps_high / q), cap)
    return lower, upper


def reference_token_losses(old_log_prob, log_prob, advantages, eps_low, eps_high, cap, clip_c):
    """DCPO's per-token dynamic-clip loss with verl's dual clip, element by element in float64."""
    rows, cols = advantages.shape
    losses = torch.zeros(rows, cols, dtype=torch.float64)
    for i in range(rows):
        for t in range(cols):
            a = float(advantages[i, t])
            lower, upper = reference_bounds(math.exp(float(old_log_prob[i, t])), eps_low, eps_high, cap)
            r = torch.exp(torch.clamp(log_prob[i, t].double() - float(old_log_prob[i, t]), -20.0, 20.0))
            surrogate = torch.maximum(-a * r, -a * torch.clamp(r, lower, upper))
            if a < 0:
                surrogate = torch.minimum(surrogate, torch.tensor(-a * clip_c, dtype=torch.float64))
            losses[i, t] = surrogate
    return losses


def test_bounds_are_the_closed_form_and_solve_dcpos_constraint():
    eps_low, eps_high, cap = 0.2, 0.28, 10.0
    q = torch.tensor([1.0, 0.9, 0.8001, 0.5, 0.3, 0.05, 0.01, 1e-4], dtype=torch.float64)
    lower, upper = dac_ratio_bounds(q.log().float(), eps_low, eps_high, cap)
    for k, q_value in enumerate(q.tolist()):
        expected_lower, expected_upper = reference_bounds(q_value, eps_low, eps_high, cap)
        assert lower[k].item() == pytest.approx(expected_lower, rel=1e-5)
        assert upper[k].item() == pytest.approx(expected_upper, rel=1e-5)
        # The bounds are where the probability change q * r * |r - 1| reaches eps.
        if expected_upper < cap:
            assert q_value * expected_upper * (expected_upper - 1) == pytest.approx(eps_high, rel=1e-9)
        if 1 - 4 * eps_low / q_value >= 0:
            assert q_value * expected_lower * (1 - expected_lower) == pytest.approx(eps_low, rel=1e-9)
    # Tail tokens get wider bounds than head tokens, down to (0.5, cap).
    assert torch.all(lower[1:] <= lower[:-1]) and torch.all(upper[1:] >= upper[:-1])
    assert lower[-1].item() == 0.5 and upper[-1].item() == cap


def test_bounds_at_vanishing_old_probability_are_the_limits_not_nan():
    old_log_prob = torch.tensor([-float("inf"), -1e4, -200.0, -90.0])
    for eps_low in (0.0, 0.2):
        lower, upper = dac_ratio_bounds(old_log_prob, eps_low, 0.28, 7.5)
        assert torch.isfinite(lower).all() and torch.isfinite(upper).all()
        assert torch.equal(lower, torch.full_like(lower, 1.0 if eps_low == 0.0 else 0.5))
        assert torch.equal(upper, torch.full_like(upper, 7.5))


def test_bounds_at_q_one_are_vanilla_clip_to_first_order():
    for eps in (1e-3, 1e-2):
        lower, upper = dac_ratio_bounds(torch.zeros(1), eps, eps, 10.0)
        assert abs(lower.item() - (1 - eps)) < 2 * eps**2
        assert abs(upper.item() - (1 + eps)) < 2 * eps**2


@pytest.mark.parametrize("loss_agg_mode", ["token-mean", "seq-mean-token-mean"])
def test_identity_with_verl_vanilla_when_every_old_probability_is_one(loss_agg_mode):
    """q = 1 everywhere: DAC is verl's vanilla clip with eps = 1 - lower(1) and upper(1) - 1."""
    inputs = random_loss_inputs(seed=3)
    old_log_prob = torch.zeros_like(inputs.old_log_prob)
    log_prob = (inputs.log_prob.detach() - inputs.old_log_prob).requires_grad_(True)
    lower, upper = reference_bounds(1.0, 0.2, 0.28, 10.0)
    dac_config = dac_actor_config(loss_agg_mode=loss_agg_mode)
    vanilla_config = actor_config(
        loss_mode="vanilla",
        loss_agg_mode=loss_agg_mode,
        plain=True,
        clip_ratio_low=1 - lower,
        clip_ratio_high=upper - 1,
    )
    args = (old_log_prob, log_prob, inputs.advantages, inputs.response_mask, loss_agg_mode)
    dac_loss, dac_metrics = compute_policy_loss_dac(*args, config=dac_config)
    (dac_grad,) = torch.autograd.grad(dac_loss, log_prob)
    vanilla_loss, vanilla_metrics = compute_policy_loss_vanilla(*args, config=vanilla_config)
    (vanilla_grad,) = torch.autograd.grad(vanilla_loss, log_prob)
    torch.testing.assert_close(dac_loss, vanilla_loss)
    torch.testing.assert_close(dac_grad, vanilla_grad)
    for key in ("actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower"):
        assert dac_metrics[key] == pytest.approx(vanilla_metrics[key], abs=1e-6)
    assert dac_metrics["actor/pg_clipfrac"] > 0  # the identity covers clipped tokens


@pytest.mark.parametrize("loss_agg_mode", AGG_MODES)
def test_value_and_gradient_match_reference(loss_agg_mode):
    inputs = random_loss_inputs(seed=5, ratio_spread=0.8, with_rollout_is_weights=True)
    settings = dict(eps_low=0.16, eps_high=0.2, upper_bound_cap=2.5)
    config = dac_actor_config(loss_agg_mode=loss_agg_mode, clip_ratio_c=2.0, **settings)
    loss, metrics = compute_policy_loss_dac(
        inputs.old_log_prob,
        inputs.log_prob,
        inputs.advantages,
        inputs.response_mask,
        loss_agg_mode,
        config=config,
        rollout_is_weights=inputs.rollout_is_weights,
    )
    (grad,) = torch.autograd.grad(loss, inputs.log_prob)

    log_prob = inputs.log_prob.detach().double().requires_grad_(True)
    token_losses = reference_token_losses(
        inputs.old_log_prob,
        log_prob,
        inputs.advantages,
        settings["eps_low"],
        settings["eps_high"],
        settings["upper_bound_cap"],
        2.0,
    )
    reference = agg_loss(
        loss_mat=token_losses * inputs.rollout_is_weights.double(),
        loss_mask=inputs.response_mask,
        loss_agg_mode=loss_agg_mode,
    )
    (reference_grad,) = torch.autograd.grad(reference, log_prob)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5, abs=1e-6)
    torch.testing.assert_close(grad.double(), reference_grad, rtol=1e-4, atol=1e-6)
    assert set(metrics) == set(METRIC_KEYS)
    assert 0 < metrics["actor/pg_clipfrac"] < 1
    assert 0 < metrics["actor/dac/upper_bound_capped_frac"] < 1  # cap 2.5 binds on the tail tokens only


def test_through_verls_ppo_loss():
    """verl's real ppo_loss dispatches loss_mode=dac to our loss with its global batch info."""
    inputs = random_loss_inputs(seed=7, ratio_spread=0.6)
    config = dac_actor_config(eps_low=0.2, eps_high=0.28)
    assert get_policy_loss_fn("dac") is compute_policy_loss_dac
    loss, metrics = run_verl_ppo_loss(config, inputs)
    (grad,) = torch.autograd.grad(loss, inputs.log_prob)

    direct_config = dac_actor_config(eps_low=0.2, eps_high=0.28)
    direct_loss, direct_metrics = compute_policy_loss_dac(
        inputs.old_log_prob,
        inputs.log_prob,
        inputs.advantages,
        inputs.response_mask,
        "token-mean",
        config=direct_config,
    )
    (direct_grad,) = torch.autograd.grad(direct_loss, inputs.log_prob)
    torch.testing.assert_close(loss, direct_loss)
    torch.testing.assert_close(grad, direct_grad)
    for key in METRIC_KEYS:
        assert metrics[key].aggregate() == pytest.approx(direct_metrics[key], abs=1e-6)


def test_metrics_keep_their_keys_and_an_empty_micro_batch_gives_zero():
    inputs = random_loss_inputs(seed=1)
    config = dac_actor_config()
    empty_mask = torch.zeros_like(inputs.response_mask)
    loss, metrics = compute_policy_loss_dac(
        inputs.old_log_prob, inputs.log_prob, inputs.advantages, empty_mask, "token-mean", config=config
    )
    assert loss.item() == 0.0 and tuple(metrics) == METRIC_KEYS
    assert all(math.isfinite(value) for value in metrics.values())
    loss.backward()
    assert torch.count_nonzero(inputs.log_prob.grad) == 0


def test_plain_verl_policy_loss_config_uses_the_defaults():
    inputs = random_loss_inputs(seed=2)
    plain = actor_config(loss_mode="dac", plain=True)
    loss, _ = compute_policy_loss_dac(
        inputs.old_log_prob, inputs.log_prob, inputs.advantages, inputs.response_mask, config=plain
    )
    configured, _ = compute_policy_loss_dac(
        inputs.old_log_prob, inputs.log_prob, inputs.advantages, inputs.response_mask, config=dac_actor_config()
    )
    torch.testing.assert_close(loss, configured)


@pytest.mark.parametrize(
    "keys, message",
    [
        (dict(eps_low=-0.1), "policy_loss.dac.eps_low"),
        (dict(eps_high=float("nan")), "policy_loss.dac.eps_high"),
        (dict(upper_bound_cap=1.0), "policy_loss.dac.upper_bound_cap"),
        (dict(eps_high="0.2"), "policy_loss.dac.eps_high"),
    ],
)
def test_bad_config_names_the_key(keys, message):
    with pytest.raises(ValueError, match=message):
        DacConfig(**keys)


def test_unknown_key_and_bad_dual_clip_and_nan_input_are_named():
    with pytest.raises(ValueError, match=r"policy_loss.dac has unknown key\(s\) \['eps_hgh'\]"):
        config_block_from({"eps_hgh": 0.3}, DacConfig, "dac")
    inputs = random_loss_inputs(seed=4)
    args = (inputs.old_log_prob, inputs.log_prob, inputs.advantages, inputs.response_mask)
    with pytest.raises(ValueError, match="clip_ratio_c"):
        compute_policy_loss_dac(*args, config=dac_actor_config(clip_ratio_c=1.0))
    old_log_prob = inputs.old_log_prob.clone()
    old_log_prob[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"old_log_prob \(1 token"):
        compute_policy_loss_dac(old_log_prob, *args[1:], config=dac_actor_config())


def dcpo_get_clip_low_high(q, low_clip, high_clip, clip_ratio_c):
    """DCPO's bounds as its released code computes them (lime-RL/DCPO verl/trainer/ppo/core_algos.py
    `get_clip_low_high`, lines 978-991), rewritten per token in float64: the upper bound is
    clamped at max(clip_ratio_c, 10)."""
    low = (1 + math.sqrt(max(1 - 4 * low_clip / q, 0.0))) / 2
    high = (1 + math.sqrt(1 + 4 * high_clip / q)) / 2
    return low, min(high, max(clip_ratio_c, 10))


def dcpo_reference_loss(old_log_prob, log_prob, advantages, response_mask, clip_ratio_c, bounds):
    """DCPO's clip_type=dynamic loss (core_algos.py lines 1049-1075) with verl's log-ratio clamp,
    token-mean; `bounds(q)` gives the (lower, upper) pair of a token."""
    log_prob = log_prob.detach().double().requires_grad_(True)
    losses = torch.zeros_like(log_prob)
    for i, t in response_mask.nonzero().tolist():
        a = float(advantages[i, t])
        lower, upper = bounds(math.exp(float(old_log_prob[i, t])))
        r = torch.exp(torch.clamp(log_prob[i, t] - float(old_log_prob[i, t]), -20.0, 20.0))
        surrogate = torch.maximum(-a * r, -a * torch.clamp(r, lower, upper))
        if a < 0:
            surrogate = torch.minimum(surrogate, torch.tensor(-a * clip_ratio_c, dtype=torch.float64))
        losses[i, t] = surrogate
    loss = losses[response_mask].sum() / response_mask.sum()
    (grad,) = torch.autograd.grad(loss, log_prob)
    return loss, grad


def tail_token_inputs():
    """Tail tokens whose DCPO upper bound lies between 10 and 20 (q = 1e-3: 17.24) or above 20
    (q = 1e-4: 53.4, capped), with ratios beyond 10, so the cap decides the loss."""
    q = torch.tensor([[1e-3, 1e-3, 1e-4, 1e-4, 0.5, 0.9], [1e-3, 1e-4, 0.02, 0.3, 1.0, 1.0]], dtype=torch.float64)
    ratio = torch.tensor([[15.0, 30.0, 25.0, 12.0, 1.5, 0.6], [18.0, 40.0, 3.0, 0.45, 1.1, 1.0]], dtype=torch.float64)
    advantages = torch.tensor([[1.0] * 6, [-0.5] * 6])
    old_log_prob = q.log().float()
    log_prob = (q * ratio).log().float().requires_grad_(True)
    mask = torch.tensor([[True] * 6, [True] * 5 + [False]])
    return LossInputs(old_log_prob, log_prob, advantages, mask)


def test_cap_follows_dcpo_at_clip_ratio_c_20_through_verls_ppo_loss():
    """DCPO caps the upper bound at max(clip_ratio_c, 10): 20 here, where a fixed cap of 10 would
    clip the ratios 15 and 18 (q = 1e-3, DCPO bound 17.2407) and cap the q = 1e-4 tokens at 10."""
    inputs = tail_token_inputs()
    config = dac_actor_config(clip_ratio_c=20.0)  # upper_bound_cap left at its default: DCPO's
    loss, metrics = run_verl_ppo_loss(config, inputs)
    (grad,) = torch.autograd.grad(loss, inputs.log_prob)

    expected_loss, expected_grad = dcpo_reference_loss(
        inputs.old_log_prob,
        inputs.log_prob,
        inputs.advantages,
        inputs.response_mask,
        20.0,
        lambda q: dcpo_get_clip_low_high(q, 0.2, 0.28, 20.0),
    )
    assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-5)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-4, atol=1e-7)
    # 3 of the 11 valid tokens have q = 1e-4: their bound (53.4) is capped at 20.
    assert metrics["actor/dac/upper_bound_capped_frac"].aggregate() == pytest.approx(3 / 11, abs=1e-6)
    assert dcpo_get_clip_low_high(1e-3, 0.2, 0.28, 20.0)[1] == pytest.approx(17.2407, abs=1e-4)

    # The explicit option: a fixed cap of 10 is not DCPO's at clip_ratio_c = 20, and says so in the loss.
    fixed, _ = run_verl_ppo_loss(dac_actor_config(clip_ratio_c=20.0, upper_bound_cap=10.0), inputs)
    fixed_reference, _ = dcpo_reference_loss(
        inputs.old_log_prob,
        inputs.log_prob,
        inputs.advantages,
        inputs.response_mask,
        20.0,
        lambda q: (
            dcpo_get_clip_low_high(q, 0.2, 0.28, 20.0)[0],
            min(dcpo_get_clip_low_high(q, 0.2, 0.28, 20.0)[1], 10.0),
        ),
    )
    assert fixed.item() == pytest.approx(fixed_reference.item(), rel=1e-5)
    assert abs(fixed.item() - loss.item()) > 0.5


@pytest.mark.parametrize("clip_ratio_c, cap", [(3.0, 10.0), (10.0, 10.0), (20.0, 20.0), (35.5, 35.5)])
def test_default_cap_is_dcpos_max_of_clip_ratio_c_and_10(clip_ratio_c, cap):
    old_log_prob = torch.full((1, 3), -20.0)  # q = e^-20: the uncapped bound is far above any cap here
    log_prob = (old_log_prob + 1.0).requires_grad_(True)
    _, metrics = compute_policy_loss_dac(
        old_log_prob,
        log_prob,
        torch.ones(1, 3),
        torch.ones(1, 3, dtype=torch.bool),
        config=dac_actor_config(clip_ratio_c=clip_ratio_c),
    )
    assert metrics["actor/dac/upper_bound_mean"] == pytest.approx(cap, rel=1e-6)
    assert metrics["actor/dac/upper_bound_capped_frac"] == 1.0
    assert dcpo_upper_bound_cap(None, clip_ratio_c) == cap and dcpo_upper_bound_cap(4.0, clip_ratio_c) == 4.0

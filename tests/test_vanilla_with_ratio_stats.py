"""loss_mode=vanilla_with_ratio_stats: verl's own vanilla loss, bit for bit (value and gradient, every
aggregation, with and without rollout importance weights, through verl's ppo_loss), its metrics plus the
ratio's extremes per advantage sign, checked against the values themselves."""

import math

import pytest
import torch
from helpers import actor_config, random_loss_inputs, run_verl_ppo_loss
from verl.trainer.ppo.core_algos import compute_policy_loss_vanilla, get_policy_loss_fn

from maspo_verl.baselines import BASELINE_LOSSES, register_baselines
from maspo_verl.baselines.vanilla_with_ratio_stats import METRIC_KEYS, compute_policy_loss_vanilla_with_ratio_stats
from maspo_verl.conventions import RATIO_METRIC_KEYS

pytestmark = pytest.mark.kind("unit")

AGG_MODES = ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
VANILLA_KEYS = ("actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower")


def _config(mode="token-mean"):
    return actor_config(
        loss_mode="vanilla_with_ratio_stats",
        loss_agg_mode=mode,
        plain=True,
        clip_ratio_low=0.2,
        clip_ratio_high=0.28,
        clip_ratio_c=2.0,
    )


def _run(loss_fn, inputs, mode, weights):
    log_prob = inputs.log_prob.detach().clone().requires_grad_(True)
    loss, metrics = loss_fn(
        inputs.old_log_prob, log_prob, inputs.advantages, inputs.response_mask, mode, _config(mode), weights
    )
    (grad,) = torch.autograd.grad(loss, log_prob)
    return loss.detach(), grad, metrics


def _nearest_rank_from_top(values, percentile):
    """The ceil(percentile/100 * n)-th smallest of a list, in integer arithmetic."""
    ordered = sorted(values)
    return ordered[-(-percentile * len(ordered) // 100) - 1]


def test_registered_by_register_baselines():
    assert "vanilla_with_ratio_stats" in register_baselines()
    assert BASELINE_LOSSES["vanilla_with_ratio_stats"] is compute_policy_loss_vanilla_with_ratio_stats
    assert get_policy_loss_fn("vanilla_with_ratio_stats") is compute_policy_loss_vanilla_with_ratio_stats


@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("use_weights", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_loss_and_gradient_are_verls_vanilla_bit_for_bit(mode, use_weights, dtype):
    inputs = random_loss_inputs(
        batch_size=16, response_length=40, seed=3, dtype=dtype, ratio_spread=1.0, with_rollout_is_weights=True
    )
    weights = inputs.rollout_is_weights if use_weights else None
    loss, grad, metrics = _run(compute_policy_loss_vanilla_with_ratio_stats, inputs, mode, weights)
    vanilla_loss, vanilla_grad, vanilla_metrics = _run(compute_policy_loss_vanilla, inputs, mode, weights)
    assert loss.dtype == vanilla_loss.dtype and torch.equal(loss, vanilla_loss)
    assert torch.equal(grad, vanilla_grad)
    assert tuple(metrics) == METRIC_KEYS == (*vanilla_metrics, *RATIO_METRIC_KEYS)
    for key, value in vanilla_metrics.items():
        assert metrics[key] == value, key  # verl's own numbers, untouched
    assert 0 < metrics["actor/pg_clipfrac"] and 0 < metrics["actor/pg_clipfrac_lower"]  # both clips fire


def test_ratio_statistics_are_the_ratios_extremes_per_advantage_sign():
    inputs = random_loss_inputs(batch_size=24, response_length=50, seed=4, ratio_spread=0.6)
    negative_row = int((inputs.advantages[:, 0] < 0).nonzero()[0])
    inputs.log_prob.data[negative_row, 0] = inputs.old_log_prob[negative_row, 0] + math.log(50.0)
    _, _, metrics = _run(compute_policy_loss_vanilla_with_ratio_stats, inputs, "token-mean", None)
    ratio = torch.exp(inputs.log_prob.detach() - inputs.old_log_prob)
    valid = inputs.response_mask
    pos = ratio[valid & (inputs.advantages > 0)].tolist()
    neg = ratio[valid & (inputs.advantages < 0)].tolist()
    assert len(pos) >= 200 and len(neg) >= 200  # the 99th percentile is not the maximum here
    assert metrics["actor/ratio/max_pos"] == pytest.approx(max(pos), rel=1e-6)
    assert metrics["actor/ratio/p99_pos"] == pytest.approx(_nearest_rank_from_top(pos, 99), rel=1e-6)
    assert metrics["actor/ratio/p99_pos"] < metrics["actor/ratio/max_pos"]
    assert metrics["actor/ratio/max_neg"] == pytest.approx(50.0, rel=1e-5)  # dual-clipped, still reported
    assert metrics["actor/ratio/p99_neg"] == pytest.approx(_nearest_rank_from_top(neg, 99), rel=1e-6)
    assert metrics["actor/ratio/min_neg"] == pytest.approx(min(neg), rel=1e-6)
    assert all(isinstance(value, float) for value in metrics.values())


def test_a_side_without_tokens_reports_one():
    inputs = random_loss_inputs(seed=5, ratio_spread=0.8)
    inputs.advantages = inputs.advantages.abs() + 0.5  # no A < 0 token
    _, _, metrics = _run(compute_policy_loss_vanilla_with_ratio_stats, inputs, "token-mean", None)
    assert metrics["actor/ratio/max_neg"] == metrics["actor/ratio/p99_neg"] == metrics["actor/ratio/min_neg"] == 1.0
    assert metrics["actor/ratio/max_pos"] > 1.0


def test_through_verls_ppo_loss_equals_vanilla_through_it():
    """verl's real ppo_loss dispatches the mode to our function: same loss and gradient as with
    loss_mode=vanilla, and the ratio metrics reach verl's metric objects."""
    inputs = random_loss_inputs(seed=6, ratio_spread=0.8, with_rollout_is_weights=True)
    loss, metrics = run_verl_ppo_loss(_config(), inputs)
    (grad,) = torch.autograd.grad(loss, inputs.log_prob)
    vanilla_config = actor_config(
        loss_mode="vanilla", plain=True, clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=2.0
    )
    vanilla_loss, vanilla_metrics = run_verl_ppo_loss(vanilla_config, inputs)
    (vanilla_grad,) = torch.autograd.grad(vanilla_loss, inputs.log_prob)
    assert torch.equal(loss, vanilla_loss) and torch.equal(grad, vanilla_grad)
    for key in VANILLA_KEYS:
        assert metrics[key].aggregate() == vanilla_metrics[key].aggregate(), key
    assert set(RATIO_METRIC_KEYS) <= set(metrics) and not set(RATIO_METRIC_KEYS) & set(vanilla_metrics)
    assert metrics["actor/ratio/max_pos"].aggregate() > 1.0

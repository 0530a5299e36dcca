"""maspo_verl.conventions: verl's policy-loss conventions, written once and followed alike by MASPO and
every baseline loss. (That MASPO's core imports no baseline: tests/test_layout.py.)"""

import math

import pytest
import torch
from helpers import actor_config, random_loss_inputs
from verl.trainer.ppo.core_algos import agg_loss, get_policy_loss_fn

import maspo_verl  # noqa: F401  (registers the losses)
from maspo_verl.conventions import (
    RATIO_METRIC_KEYS,
    PolicyLossInputs,
    aggregate_policy_loss,
    clip_ratio_bounds,
    dual_clip_bound,
    host_values,
    masked_upper_statistics,
    policy_loss_statistics,
    prepare_policy_loss_inputs,
    ratio_statistics,
    upper_statistics,
)

pytestmark = pytest.mark.kind("unit")

OUR_LOSSES = ("maspo", "dac", "bapo")


def test_inputs_are_at_least_float32_zero_on_padding_with_one_ratio():
    inputs = random_loss_inputs(seed=0, dtype=torch.bfloat16, with_rollout_is_weights=True)
    mask = inputs.response_mask
    old_log_prob = torch.where(mask, inputs.old_log_prob, torch.nan)
    weights = torch.where(mask, inputs.rollout_is_weights, torch.inf)
    prepared = prepare_policy_loss_inputs(old_log_prob, inputs.log_prob, inputs.advantages, mask, weights)
    assert prepared.compute_dtype == torch.float32 and prepared.old_log_prob.dtype == torch.float32
    for tensor in (prepared.old_log_prob, prepared.advantages, prepared.log_ratio, prepared.rollout_is_weights):
        assert torch.equal(tensor[~mask], torch.zeros_like(tensor[~mask]))
    assert torch.equal(prepared.ratio[~mask], torch.ones_like(prepared.ratio[~mask]))
    expected = torch.exp((inputs.log_prob.float() - inputs.old_log_prob.float()).clamp(-20, 20))
    assert torch.equal(prepared.ratio[mask], expected[mask].detach())
    assert prepared.ratio.requires_grad  # the baselines' (and the hard gate's) ratio carries the gradient
    detached = prepare_policy_loss_inputs(
        old_log_prob, inputs.log_prob, inputs.advantages, mask, ratio_requires_grad=False
    )
    assert not detached.ratio.requires_grad and torch.equal(detached.ratio, prepared.ratio.detach())
    wide = prepare_policy_loss_inputs(old_log_prob.double(), inputs.log_prob.double(), inputs.advantages, mask)
    assert wide.compute_dtype == torch.float64 and wide.ratio.dtype == torch.float64


def test_clamp_is_verls_and_the_raw_log_ratio_is_kept():
    mask = torch.ones(1, 3, dtype=torch.bool)
    prepared = prepare_policy_loss_inputs(torch.zeros(1, 3), torch.tensor([[-30.0, 0.5, 30.0]]), torch.ones(1, 3), mask)
    assert prepared.log_ratio.tolist() == [[-30.0, 0.5, 30.0]]
    assert prepared.clamped_log_ratio.tolist() == [[-20.0, 0.5, 20.0]]


def test_statistics_are_named_and_come_back_in_one_sync():
    values = host_values({"b": torch.tensor(2), "a": 0.8, "c": torch.tensor([3.5])}, torch.float32, torch.device("cpu"))
    assert list(values) == ["b", "a", "c"]
    assert values == {"b": 2.0, "a": float(torch.tensor(0.8)), "c": 3.5}  # a Python number reads as on the device


@pytest.mark.parametrize("bad", ["old_log_prob", "advantages", "log_prob", "rollout_is_weights"])
def test_nan_on_a_valid_token_raises_naming_the_tensor(bad):
    inputs = random_loss_inputs(seed=1, with_rollout_is_weights=True)
    tensors = dict(
        old_log_prob=inputs.old_log_prob,
        log_prob=inputs.log_prob.detach(),
        advantages=inputs.advantages,
        rollout_is_weights=inputs.rollout_is_weights,
    )
    tensors[bad] = tensors[bad].clone()
    tensors[bad][0, 0] = torch.nan
    prepared = prepare_policy_loss_inputs(
        tensors["old_log_prob"],
        tensors["log_prob"],
        tensors["advantages"],
        inputs.response_mask,
        tensors["rollout_is_weights"],
    )
    with pytest.raises(ValueError, match=rf"loss_mode=x got NaN/inf on valid response tokens in: .*{bad} \(1 token"):
        policy_loss_statistics("x", prepared, tensors["log_prob"], {"s": torch.tensor(1.0)})


def test_aggregation_multiplies_the_weights_and_passes_verls_global_batch_info():
    inputs = random_loss_inputs(seed=2, with_rollout_is_weights=True)
    prepared = prepare_policy_loss_inputs(
        inputs.old_log_prob, inputs.log_prob, inputs.advantages, inputs.response_mask, inputs.rollout_is_weights
    )
    config = actor_config(loss_mode="vanilla", plain=True)
    losses = -prepared.advantages * prepared.ratio
    info = dict(dp_size=2, batch_num_tokens=77, global_batch_size=9)
    config.global_batch_info.update(info)
    for mode in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"):
        loss = aggregate_policy_loss(losses, prepared, mode, config, num_valid=1.0)
        assert torch.equal(loss, agg_loss(losses * prepared.rollout_is_weights, prepared.response_mask, mode, **info))


def test_an_empty_micro_batch_gives_zero_loss_and_zero_gradient():
    inputs = random_loss_inputs(seed=3)
    mask = torch.zeros_like(inputs.response_mask)
    prepared = prepare_policy_loss_inputs(inputs.old_log_prob, inputs.log_prob, inputs.advantages, mask)
    assert isinstance(prepared, PolicyLossInputs)
    statistics = policy_loss_statistics("x", prepared, inputs.log_prob, {})
    assert statistics == {"num_valid": 0.0}
    loss = aggregate_policy_loss(-prepared.advantages * prepared.ratio, prepared, "token-mean", None, 0.0)
    (gradient,) = torch.autograd.grad(loss, inputs.log_prob)
    assert loss.item() == 0.0 and torch.equal(gradient, torch.zeros_like(gradient))


def test_verls_clip_keys():
    config = actor_config(loss_mode="vanilla", plain=True, clip_ratio_low=0.1, clip_ratio_high=0.28)
    assert clip_ratio_bounds(config) == (0.1, 0.28)
    assert clip_ratio_bounds({"clip_ratio": 0.3, "clip_ratio_low": None}) == (0.3, 0.3)
    assert dual_clip_bound(config, "x") == 3.0
    with pytest.raises(ValueError, match="clip_ratio_c .* must be > 1.0 for loss_mode=x"):
        dual_clip_bound({"clip_ratio_c": 1.0}, "x")


def run_loss(loss_mode, inputs, **actor_keys):
    log_prob = inputs.log_prob.detach().clone().requires_grad_(True)
    loss, metrics = get_policy_loss_fn(loss_mode)(
        old_log_prob=inputs.old_log_prob,
        log_prob=log_prob,
        advantages=inputs.advantages,
        response_mask=inputs.response_mask,
        loss_agg_mode="token-mean",
        config=actor_config(loss_mode=loss_mode, **actor_keys),
        rollout_is_weights=inputs.rollout_is_weights,
    )
    (gradient,) = torch.autograd.grad(loss, log_prob)
    return loss, gradient, metrics


@pytest.mark.parametrize("loss_mode", OUR_LOSSES)
def test_every_loss_follows_the_same_conventions(loss_mode):
    """dtype, padding, the NaN check (rollout weights included), the empty micro-batch and the
    metric shape behave alike for MASPO and each baseline: they share one implementation."""
    for dtype in (torch.bfloat16, torch.float64):
        inputs = random_loss_inputs(seed=4, dtype=dtype, with_rollout_is_weights=True)
        loss, gradient, metrics = run_loss(loss_mode, inputs)
        assert loss.dtype == dtype and gradient.dtype == dtype and torch.isfinite(loss)
        assert all(type(value) is float for value in metrics.values())
        _, _, again = run_loss(loss_mode, random_loss_inputs(seed=5, dtype=dtype))
        assert list(again) == list(metrics)

    inputs = random_loss_inputs(seed=6, with_rollout_is_weights=True)
    padding = ~inputs.response_mask
    inputs.old_log_prob[padding] = torch.nan
    inputs.rollout_is_weights[padding] = torch.inf
    loss, gradient, _ = run_loss(loss_mode, inputs)
    assert torch.isfinite(loss) and torch.isfinite(gradient).all() and not gradient[padding].any()

    inputs.rollout_is_weights[0, 0] = torch.nan  # a valid token
    with pytest.raises(ValueError, match=rf"loss_mode={loss_mode} got NaN/inf .* rollout_is_weights \(1 token"):
        run_loss(loss_mode, inputs)

    inputs = random_loss_inputs(seed=7)
    inputs.response_mask[:] = False
    loss, gradient, metrics = run_loss(loss_mode, inputs)
    assert loss.item() == 0.0 and not gradient.any() and all(map(math.isfinite, metrics.values()))


def test_every_loss_reports_the_same_ratio_statistics():
    """The ratio's extremes come from one function: MASPO (both gates), DAC, BAPO and verl's vanilla with
    them report the same numbers for the same micro-batch, whatever their loss does with the ratio."""
    inputs = random_loss_inputs(batch_size=12, response_length=30, seed=8, ratio_spread=0.9)
    reported = {}
    for loss_mode, actor_keys in [*((mode, {}) for mode in OUR_LOSSES), ("maspo", {"gate": "hard"})]:
        reported[loss_mode + str(actor_keys)] = [
            run_loss(loss_mode, inputs, **actor_keys)[2][key] for key in RATIO_METRIC_KEYS
        ]
    reported["vanilla_with_ratio_stats"] = [
        run_loss("vanilla_with_ratio_stats", inputs)[2][key] for key in RATIO_METRIC_KEYS
    ]
    first = next(iter(reported.values()))
    assert all(values == first for values in reported.values()), reported
    ratio = torch.exp(inputs.log_prob.detach() - inputs.old_log_prob)[inputs.response_mask]
    advantages = inputs.advantages[inputs.response_mask]
    assert first[0] == pytest.approx(ratio[advantages > 0].max().item(), rel=1e-6)
    assert first[4] == pytest.approx(ratio[advantages < 0].min().item(), rel=1e-6)


@pytest.mark.parametrize("count", [0, 1, 2, 99, 100, 101, 250, 1000])
def test_ratio_statistics_are_exact_on_the_cpu_and_on_the_device_path(count):
    """The CPU path (compact, then topk of the top share) and the accelerator path (topk over every
    position, rank picked on the device) give the same values, bit for bit, including ties and an empty
    side; the percentile is the nearest-rank one."""
    generator = torch.Generator().manual_seed(count)
    values = torch.exp(torch.randn(40, 37, generator=generator) * 0.5)
    values.view(-1)[:50] = 1.25  # ties
    mask = torch.zeros(40 * 37, dtype=torch.bool)
    mask[torch.randperm(40 * 37, generator=generator)[:count]] = True
    mask = mask.view(40, 37)
    on_cpu = upper_statistics(values[mask], 99)
    on_device = masked_upper_statistics(values, mask, 99)
    assert all(torch.equal(a, b) for a, b in zip(on_cpu, on_device, strict=True)), (on_cpu, on_device)
    selected = sorted(values[mask].tolist())
    if count:
        p99 = selected[-(-99 * count // 100) - 1]  # the ceil(0.99 n)-th smallest
        assert [x.item() for x in on_cpu] == [selected[-1], p99, selected[0]]
    else:
        assert [x.item() for x in on_cpu] == [1.0, 1.0, 1.0]


def test_ratio_statistics_by_hand():
    inputs = prepare_policy_loss_inputs(
        torch.zeros(1, 4),
        torch.log(torch.tensor([[2.0, 0.5, 3.0, 0.25]])),
        torch.tensor([[1.0, 1.0, -1.0, -1.0]]),
        torch.ones(1, 4, dtype=torch.bool),
    )
    statistics = {key: value.item() for key, value in ratio_statistics(inputs).items()}
    assert statistics == dict(zip(RATIO_METRIC_KEYS, [2.0, 2.0, 3.0, 3.0, 0.25], strict=True))

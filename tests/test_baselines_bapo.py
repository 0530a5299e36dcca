"""loss_mode=bapo (BAPO's adaptive clipping, arXiv 2510.18927): the bound search against the
algorithm written out in the test, the identity with verl's vanilla loss when the search is off,
values and gradients, the data-parallel search on two gloo ranks, verl's real ppo_loss, bad input."""

import dataclasses
import json
import math
from dataclasses import dataclass, field

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing
from helpers import actor_config, random_loss_inputs, run_verl_ppo_loss
from verl.trainer.ppo.core_algos import agg_loss, compute_policy_loss_vanilla, get_policy_loss_fn
from verl.workers.config import PolicyLossConfig

from maspo_verl.baselines.bapo import METRIC_KEYS, BapoConfig, bound_candidates, compute_policy_loss_bapo


@dataclass
class PolicyLossWithBapo(PolicyLossConfig):
    bapo: BapoConfig = field(default_factory=BapoConfig)


def bapo_actor_config(loss_agg_mode="token-mean", clip_ratio_c=3.0, **bapo_keys):
    base = actor_config(loss_mode="bapo", loss_agg_mode=loss_agg_mode, plain=True, clip_ratio_c=clip_ratio_c)
    return dataclasses.replace(base, policy_loss=PolicyLossWithBapo(loss_mode="bapo", bapo=BapoConfig(**bapo_keys)))


def reference_share(inputs):
    """BAPO's positive share of the policy-gradient loss, token by token in float64: positive
    tokens count A r while r <= c_high, negative ones |A| r while r >= c_low."""
    tokens = [
        (math.exp(min(max(float(lp) - float(old), -20.0), 20.0)), float(a))
        for lp, old, a, valid in zip(
            inputs.log_prob.detach().flatten(), inputs.old_log_prob.flatten(), inputs.advantages.flatten(),
            inputs.response_mask.flatten(), strict=True,
        )
        if valid
    ]

    def share(low, high):
        positive = sum(a * r for r, a in tokens if a > 0 and r <= high)
        negative = sum(-a * r for r, a in tokens if a < 0 and r >= low)
        return positive / (positive + negative) if positive + negative > 0 else 1.0

    return share


def reference_search(share, settings: BapoConfig):
    """BAPO's bound search as the paper describes it: raise c_low while the positive share is
    below rho_0, then c_high. Returns (c_low, c_high, the share there, the pairs visited)."""
    low, high = settings.lower_bound_start, settings.upper_bound_start
    visited = [(low, high)]
    while share(low, high) < settings.positive_share_target and low < settings.lower_bound_max:
        low = min(low + settings.lower_bound_step, settings.lower_bound_max)
        visited.append((low, high))
    while share(low, high) < settings.positive_share_target and high < settings.upper_bound_max:
        high = min(high + settings.upper_bound_step, settings.upper_bound_max)
        visited.append((low, high))
    return low, high, share(low, high), visited


def target_stopping_in(phase, share):
    """A rho_0 halfway between two successive shares of the full search path, so the search stops
    at the start, in the lower-bound phase, in the upper-bound phase, or runs to the end."""
    _, _, _, path = reference_search(share, BapoConfig(positive_share_target=1.0))
    shares = [share(*pair) for pair in path]
    if phase == "start":
        return shares[0] - 0.01
    if phase == "end":
        return 1.0
    lower_phase_length = len(bound_candidates(0.6, 0.9, 0.05))
    steps = range(1, lower_phase_length) if phase == "lower" else range(lower_phase_length, len(shares))
    step = next(k for k in steps if shares[k] > shares[k - 1] + 1e-3)
    return (shares[step - 1] + shares[step]) / 2


def reference_loss(inputs, low, high, clip_c, loss_agg_mode, weights=None):
    """PPO clip to [low, high] with verl's dual clip, per token in float64, times the rollout
    weights, reduced by verl's agg_loss. Returns the loss and its gradient in log_prob."""
    log_prob = inputs.log_prob.detach().double().requires_grad_(True)
    rows, cols = inputs.advantages.shape
    losses = torch.zeros(rows, cols, dtype=torch.float64)
    for i in range(rows):
        for t in range(cols):
            a = float(inputs.advantages[i, t])
            r = torch.exp(torch.clamp(log_prob[i, t] - float(inputs.old_log_prob[i, t]), -20.0, 20.0))
            surrogate = torch.maximum(-a * r, -a * torch.clamp(r, low, high))
            if a < 0:
                surrogate = torch.minimum(surrogate, torch.tensor(-a * clip_c, dtype=torch.float64))
            losses[i, t] = surrogate
    if weights is not None:
        losses = losses * weights.double()
    loss = agg_loss(loss_mat=losses, loss_mask=inputs.response_mask, loss_agg_mode=loss_agg_mode)
    (grad,) = torch.autograd.grad(loss, log_prob)
    return loss, grad


def test_bound_candidates_step_to_the_maximum():
    assert bound_candidates(0.6, 0.9, 0.05) == pytest.approx([0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9])
    assert bound_candidates(0.6, 0.9, 0.07) == pytest.approx([0.6, 0.67, 0.74, 0.81, 0.88, 0.9])
    assert bound_candidates(1.2, 3.0, 0.1)[-2:] == pytest.approx([2.9, 3.0]) and len(bound_candidates(1.2, 3.0, 0.1)) == 19
    assert bound_candidates(0.8, 0.8, 0.05) == [0.8]


@pytest.mark.parametrize("seed, phase", [(0, "start"), (1, "lower"), (2, "lower"), (1, "upper"), (3, "upper"), (2, "end")])
def test_search_value_and_gradient_match_the_algorithm(seed, phase):
    inputs = random_loss_inputs(batch_size=8, seed=seed, ratio_spread=0.8, with_rollout_is_weights=True)
    share = reference_share(inputs)
    settings = BapoConfig(positive_share_target=target_stopping_in(phase, share), search_scope="micro_batch")
    config = bapo_actor_config(loss_agg_mode="seq-mean-token-mean", **dataclasses.asdict(settings))
    loss, metrics = compute_policy_loss_bapo(
        inputs.old_log_prob, inputs.log_prob, inputs.advantages, inputs.response_mask, "seq-mean-token-mean",
        config=config, rollout_is_weights=inputs.rollout_is_weights,
    )
    (grad,) = torch.autograd.grad(loss, inputs.log_prob)

    low, high, expected_share, path = reference_search(share, settings)
    assert metrics["actor/bapo/lower_bound"] == pytest.approx(low, abs=1e-6)
    assert metrics["actor/bapo/upper_bound"] == pytest.approx(high, abs=1e-6)
    assert metrics["actor/bapo/positive_share"] == pytest.approx(expected_share, abs=1e-5)
    assert metrics["actor/bapo/search_steps"] == len(path) - 1
    in_upper_phase = len(path) > len(bound_candidates(0.6, 0.9, 0.05))
    assert {"start": len(path) == 1, "lower": 1 < len(path) and not in_upper_phase, "upper": in_upper_phase,
            "end": (low, high) == (0.9, 3.0)}[phase]
    expected_loss, expected_grad = reference_loss(inputs, low, high, 3.0, "seq-mean-token-mean", inputs.rollout_is_weights)
    assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-5, abs=1e-6)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-4, atol=1e-6)
    assert set(metrics) == set(METRIC_KEYS) and metrics["actor/bapo/search_ranks"] == 1


def test_the_search_moves_both_bounds_when_negatives_dominate():
    """Negative tokens pushed below 1 and positive tokens pushed above 1: the share only reaches
    rho_0 once c_low has clipped the negatives out and c_high has let the positives in."""
    ratio = torch.tensor([[0.62, 0.7, 0.8, 1.0], [1.5, 2.05, 1.0, 1.0]])
    advantages = torch.tensor([[-1.0, -1.0, -1.0, -1.0], [1.0, 1.0, 0.0, 0.0]])
    mask = torch.ones_like(ratio, dtype=torch.bool)
    log_prob = ratio.log().requires_grad_(True)
    old_log_prob = torch.zeros_like(ratio)
    _, metrics = compute_policy_loss_bapo(
        old_log_prob, log_prob, advantages, mask,
        config=bapo_actor_config(search_scope="micro_batch", positive_share_target=0.7),
    )
    # Start (0.6, 1.2): P = 0, share 0. c_low -> 0.9 leaves N = 1.0; at c_high 1.5 the share is
    # 1.5 / 2.5 = 0.6 < 0.7, at 2.1 (admitting r = 2.05) it is 3.55 / 4.55.
    assert metrics["actor/bapo/positive_share_at_start"] == 0.0
    assert metrics["actor/bapo/lower_bound"] == pytest.approx(0.9)
    assert metrics["actor/bapo/upper_bound"] == pytest.approx(2.1)
    assert metrics["actor/bapo/positive_share"] == pytest.approx(3.55 / 4.55, rel=1e-5)
    assert metrics["actor/bapo/search_steps"] == 6 + 9


@pytest.mark.parametrize("loss_agg_mode", ["token-mean", "seq-mean-token-sum"])
def test_identity_with_verl_vanilla_when_the_search_is_off(loss_agg_mode):
    inputs = random_loss_inputs(seed=6, ratio_spread=0.6)
    config = bapo_actor_config(
        loss_agg_mode=loss_agg_mode, lower_bound_start=0.8, lower_bound_max=0.8, upper_bound_start=1.28,
        upper_bound_max=1.28, positive_share_target=1.0,
    )
    vanilla = actor_config(
        loss_mode="vanilla", loss_agg_mode=loss_agg_mode, plain=True, clip_ratio_low=0.2, clip_ratio_high=0.28
    )
    args = (inputs.old_log_prob, inputs.log_prob, inputs.advantages, inputs.response_mask, loss_agg_mode)
    loss, metrics = compute_policy_loss_bapo(*args, config=config)
    (grad,) = torch.autograd.grad(loss, inputs.log_prob)
    vanilla_loss, vanilla_metrics = compute_policy_loss_vanilla(*args, config=vanilla)
    (vanilla_grad,) = torch.autograd.grad(vanilla_loss, inputs.log_prob)
    torch.testing.assert_close(loss, vanilla_loss)
    torch.testing.assert_close(grad, vanilla_grad)
    for key in ("actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower"):
        assert metrics[key] == pytest.approx(vanilla_metrics[key], abs=1e-6)
    assert metrics["actor/pg_clipfrac"] > 0 and metrics["actor/bapo/search_steps"] == 0


def test_through_verls_ppo_loss():
    inputs = random_loss_inputs(seed=8, ratio_spread=0.7)
    config = bapo_actor_config()
    assert get_policy_loss_fn("bapo") is compute_policy_loss_bapo
    loss, metrics = run_verl_ppo_loss(config, inputs)
    (grad,) = torch.autograd.grad(loss, inputs.log_prob)
    direct_loss, direct_metrics = compute_policy_loss_bapo(
        inputs.old_log_prob, inputs.log_prob, inputs.advantages, inputs.response_mask, config=bapo_actor_config()
    )
    (direct_grad,) = torch.autograd.grad(direct_loss, inputs.log_prob)
    torch.testing.assert_close(loss, direct_loss)
    torch.testing.assert_close(grad, direct_grad)
    for key in METRIC_KEYS:
        assert metrics[key].aggregate() == pytest.approx(direct_metrics[key], abs=1e-6)


def test_metrics_keep_their_keys_and_an_empty_micro_batch_gives_zero():
    inputs = random_loss_inputs(seed=9)
    loss, metrics = compute_policy_loss_bapo(
        inputs.old_log_prob, inputs.log_prob, inputs.advantages, torch.zeros_like(inputs.response_mask),
        config=bapo_actor_config(),
    )
    assert loss.item() == 0.0 and tuple(metrics) == METRIC_KEYS
    assert metrics["actor/bapo/positive_share"] == 1.0 and metrics["actor/bapo/search_steps"] == 0


@pytest.mark.parametrize(
    "keys, message",
    [
        (dict(positive_share_target=1.5), "policy_loss.bapo.positive_share_target"),
        (dict(lower_bound_start=0.0), "policy_loss.bapo.lower_bound_start"),
        (dict(lower_bound_max=0.5), "policy_loss.bapo.lower_bound_max"),
        (dict(upper_bound_start=0.9), "policy_loss.bapo.upper_bound_start"),
        (dict(upper_bound_max=1.1), "policy_loss.bapo.upper_bound_max"),
        (dict(upper_bound_step=0.0), "policy_loss.bapo.upper_bound_step"),
        (dict(search_scope="global"), "policy_loss.bapo.search_scope"),
        (dict(lower_bound_step=None), "policy_loss.bapo.lower_bound_step"),
    ],
)
def test_bad_config_names_the_key(keys, message):
    with pytest.raises(ValueError, match=message):
        BapoConfig(**keys)


def two_rank_inputs(rank):
    """Rank 0: negatives dominate; rank 1: positives dominate. Same response width."""
    inputs = random_loss_inputs(batch_size=4, seed=20 + rank, ratio_spread=0.8)
    sign = -1.0 if rank == 0 else 1.0
    return dataclasses.replace(inputs, advantages=inputs.advantages.abs() * sign + 0.1 * inputs.advantages)


def _bapo_rank(rank, world_size, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        inputs = two_rank_inputs(rank)
        results = {}
        for scope in ("data_parallel", "micro_batch"):
            _, metrics = compute_policy_loss_bapo(
                inputs.old_log_prob, inputs.log_prob, inputs.advantages, inputs.response_mask,
                config=bapo_actor_config(search_scope=scope, positive_share_target=0.55),
            )
            results[scope] = metrics
        pipeline = {"policy_loss": {"bapo": {"search_scope": "data_parallel"}}, "engine": {"pipeline_model_parallel_size": 2}}
        try:
            compute_policy_loss_bapo(
                inputs.old_log_prob, inputs.log_prob, inputs.advantages, inputs.response_mask, config=pipeline
            )
        except ValueError as error:
            results["pipeline_error"] = str(error)
        with open(f"{out_dir}/rank{rank}.json", "w") as handle:
            json.dump(results, handle)
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_data_parallel_search_sees_every_ranks_micro_batch(tmp_path):
    torch.multiprocessing.spawn(_bapo_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]

    both = [two_rank_inputs(rank) for rank in range(2)]
    combined = dataclasses.replace(
        both[0], **{name: torch.cat([getattr(both[0], name), getattr(both[1], name)]) for name in
                    ("old_log_prob", "log_prob", "advantages", "response_mask")}
    )
    _, expected = compute_policy_loss_bapo(
        combined.old_log_prob, combined.log_prob, combined.advantages, combined.response_mask,
        config=bapo_actor_config(search_scope="micro_batch", positive_share_target=0.55),
    )
    for result in ranks:
        for key in ("actor/bapo/lower_bound", "actor/bapo/upper_bound", "actor/bapo/positive_share"):
            assert result["data_parallel"][key] == pytest.approx(expected[key], abs=1e-5)
        assert result["data_parallel"]["actor/bapo/search_ranks"] == 2
        assert result["micro_batch"]["actor/bapo/search_ranks"] == 1
        assert "search_scope=micro_batch" in result["pipeline_error"]
    # Searching alone, the two ranks would have chosen different bounds.
    assert ranks[0]["micro_batch"]["actor/bapo/search_steps"] != ranks[1]["micro_batch"]["actor/bapo/search_steps"]

"""loss_mode=bapo (BAPO's adaptive clipping, arXiv 2510.18927), both variants: hand-computed cases
from each source through verl's real ppo_loss, the search against each source's algorithm written
out in the test (the recipe's while loops, the paper's Algorithm 1), the identity with verl's
vanilla loss when the search is off, the data-parallel search on two gloo ranks, bad input.

Sources: recipe = github WooooDyy/BAPO recipe/bapo/policy_loss.py and run_bapo_example.sh (HEAD
7287044); paper = paper.pdf of the same repository (commit 602d517), Eq. 8, Algorithm 1, Sec. 5.1.
"""

import dataclasses
import json
import math
from dataclasses import dataclass, field

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing
from helpers import LossInputs, actor_config, random_loss_inputs, run_verl_ppo_loss
from verl.trainer.ppo.core_algos import agg_loss, compute_policy_loss_vanilla, get_policy_loss_fn
from verl.workers.config import PolicyLossConfig

from maspo_verl.baselines.bapo import (
    METRIC_KEYS,
    VARIANT_DEFAULTS,
    BapoConfig,
    compute_policy_loss_bapo,
    paper_bound_grid,
    paper_search_path,
    recipe_bound_candidates,
    recipe_search_path,
)
from maspo_verl.config import config_block_from

pytestmark = pytest.mark.kind("unit")


@dataclass
class PolicyLossWithBapo(PolicyLossConfig):
    bapo: BapoConfig = field(default_factory=BapoConfig)


def bapo_actor_config(loss_agg_mode="token-mean", clip_ratio_c=3.0, **bapo_keys):
    base = actor_config(loss_mode="bapo", loss_agg_mode=loss_agg_mode, plain=True, clip_ratio_c=clip_ratio_c)
    return dataclasses.replace(base, policy_loss=PolicyLossWithBapo(loss_mode="bapo", bapo=BapoConfig(**bapo_keys)))


# ---------------------------------------------------------------------------------------------
# Hand-computed cases: one micro-batch of 8 tokens where the two variants choose different bounds.
#   row 0, A = +0.8: r = 1.6, 1.9, 0.7, 1.0    old probability q = 0.5, 0.2, 0.5, 1.0
#   row 1, A = -1.0: r = 0.5, 0.9, 1.0, 4.0    q = 0.5, 1.0, 0.25, 0.35
# r = 4.0 > clip_ratio_c = 3 is a dual-clipped negative: both sources count it in N at |A| * r.

HAND_RATIO = [[1.6, 1.9, 0.7, 1.0], [0.5, 0.9, 1.0, 4.0]]
HAND_OLD_PROB = [[0.5, 0.2, 0.5, 1.0], [0.5, 1.0, 0.25, 0.35]]


def hand_inputs():
    q = torch.tensor(HAND_OLD_PROB, dtype=torch.float64)
    ratio = torch.tensor(HAND_RATIO, dtype=torch.float64)
    return LossInputs(
        old_log_prob=q.log().float(),
        log_prob=(q * ratio).log().float().requires_grad_(True),
        advantages=torch.tensor([[0.8] * 4, [-1.0] * 4]),
        response_mask=torch.ones(2, 4, dtype=torch.bool),
    )


def test_recipe_hand_computed_through_verls_ppo_loss():
    """Recipe defaults (run_bapo_example.sh): P / (N + eps) >= 0.5, c_low 0.8 -> 0.95 by 0.05
    first, then c_high 1.2 -> 2.0 by 0.1; P = sum A min(r, c_high), N = sum |A| max(r, c_low).

    start (0.8, 1.2): P = 0.8 (1.2 + 1.2 + 0.7 + 1.0) = 3.28, N = 0.8 + 0.9 + 1.0 + 4.0 = 6.7: 0.4896
    c_low 0.85, 0.9, 0.95: N = 6.75, 6.8, 6.9 (the share only falls)
    (0.95, 1.3): P = 0.8 * 4.3 = 3.44: 0.4986;  (0.95, 1.4): P = 0.8 * 4.5 = 3.6: 0.5217 -> stop, 5 steps.
    Loss at (0.95, 1.4) with the dual clip c = 3, token-mean over 8 tokens:
      A > 0: -0.8 * (1.4 + 1.4 + 0.7 + 1.0) = -3.6;  A < 0: 0.95 + 0.95 + 1.0 + min(4.0, 3) = 5.9
      loss = 2.3 / 8 = 0.2875; gradient in log pi (= per-token loss where unclipped, / 8):
      r = 0.7: -0.56 / 8, r = 1.0 (A > 0): -0.8 / 8, r = 1.0 (A < 0): 1 / 8, every other token 0.
    """
    inputs = hand_inputs()
    assert get_policy_loss_fn("bapo") is compute_policy_loss_bapo
    loss, metrics = run_verl_ppo_loss(bapo_actor_config(), inputs)
    (grad,) = torch.autograd.grad(loss, inputs.log_prob)
    values = {key: metric.aggregate() for key, metric in metrics.items()}

    assert values["actor/bapo/lower_bound"] == pytest.approx(0.95)
    assert values["actor/bapo/upper_bound"] == pytest.approx(1.4)
    assert values["actor/bapo/search_steps"] == 5
    assert values["actor/bapo/positive_share"] == pytest.approx(3.6 / (3.6 + 6.9), rel=1e-5)
    assert values["actor/bapo/positive_share_at_start"] == pytest.approx(3.28 / (3.28 + 6.7), rel=1e-5)
    assert loss.item() == pytest.approx(0.2875, rel=1e-5)
    expected_grad = torch.tensor([[0.0, 0.0, -0.56, -0.8], [0.0, 0.0, 1.0, 0.0]]) / 8
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)
    assert values["actor/pg_clipfrac"] == pytest.approx(4 / 8)  # r = 1.6, 1.9 above c_high; 0.5, 0.9 below c_low
    assert values["actor/pg_clipfrac_lower"] == pytest.approx(1 / 8)  # r = 4.0


def test_paper_hand_computed_through_verls_ppo_loss():
    """Paper defaults (Sec. 5.1): rho_0 = 0.4, c_high 1.2 -> 3.0 by 0.05 first, then c_low
    0.6 -> 0.9 by 0.02 (Algorithm 1); Eq. 8 weights each token by q = pi_rollout(y_t):
    P = sum q A min(r, c_high), N = sum q |A| max(r, c_low), share P / (P + N).

    N(0.6) = 0.5 * 0.6 + 1.0 * 0.9 + 0.25 * 1.0 + 0.35 * 4.0 = 2.85
    P(c) = 0.8 (0.5 min(1.6, c) + 0.2 min(1.9, c) + 0.35 + 1.0)
    c_high 1.2: P = 1.752, share 0.3807;  1.45: P = 1.892, 0.39899;  1.5: P = 1.92, 0.40252 -> stop, 6 steps.
    Loss at (0.6, 1.5), Algorithm 1 line 19 (no dual clip), token-mean over 8 tokens:
      A > 0: -0.8 * (1.5 + 1.5 + 0.7 + 1.0) = -3.76;  A < 0: 0.6 + 0.9 + 1.0 + 4.0 = 6.5
      loss = 2.74 / 8 = 0.3425; gradient: r = 0.7: -0.56 / 8, r = 1.0 (A > 0): -0.8 / 8,
      A < 0: r = 0.9, 1.0, 4.0 unclipped: 0.9 / 8, 1 / 8, 4 / 8; r = 1.6, 1.9, 0.5 clipped: 0.
    """
    inputs = hand_inputs()
    loss, metrics = run_verl_ppo_loss(bapo_actor_config(variant="paper"), inputs)
    (grad,) = torch.autograd.grad(loss, inputs.log_prob)
    values = {key: metric.aggregate() for key, metric in metrics.items()}

    assert values["actor/bapo/lower_bound"] == pytest.approx(0.6)
    assert values["actor/bapo/upper_bound"] == pytest.approx(1.5)
    assert values["actor/bapo/search_steps"] == 6
    assert values["actor/bapo/positive_share"] == pytest.approx(1.92 / (1.92 + 2.85), rel=1e-5)
    assert values["actor/bapo/positive_share_at_start"] == pytest.approx(1.752 / (1.752 + 2.85), rel=1e-5)
    assert loss.item() == pytest.approx(0.3425, rel=1e-5)
    expected_grad = torch.tensor([[0.0, 0.0, -0.56, -0.8], [0.0, 0.9, 1.0, 4.0]]) / 8
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)
    assert values["actor/pg_clipfrac"] == pytest.approx(3 / 8)
    assert values["actor/pg_clipfrac_lower"] == 0.0


def test_dual_clipped_negative_counts_toward_n_in_the_recipe():
    """Without the r = 4.0 token's |A| r = 4 in N, the recipe's start pair would already meet the
    target (3.28 / 2.7 = 1.21 >= 0.5): the hand case above searches only because it counts."""
    inputs = hand_inputs()
    without = dataclasses.replace(inputs, response_mask=torch.tensor([[True] * 4, [True] * 3 + [False]]))
    _, metrics = compute_policy_loss_bapo(
        without.old_log_prob, without.log_prob, without.advantages, without.response_mask, config=bapo_actor_config()
    )
    assert metrics["actor/bapo/search_steps"] == 0
    assert metrics["actor/bapo/positive_share"] == pytest.approx(3.28 / (3.28 + 2.7), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Each source's search written out as the source writes it, on random inputs.


def valid_tokens(inputs):
    """(r, A, q) of every valid token, in float64, r from verl's clamped log-ratio."""
    return [
        (math.exp(min(max(float(lp) - float(old), -20.0), 20.0)), float(a), math.exp(float(old)))
        for lp, old, a, valid in zip(
            inputs.log_prob.detach().flatten(),
            inputs.old_log_prob.flatten(),
            inputs.advantages.flatten(),
            inputs.response_mask.flatten(),
            strict=True,
        )
        if valid
    ]


def recipe_reference(tokens, bapo: BapoConfig):
    """recipe/bapo/policy_loss.py lines 100-152: c_low first, then c_high, each step
    min(c + step, max), criterion P / (N + eps) (inf when N <= 0). Returns (c_low, c_high, visited)."""

    def criterion(low, high):
        positive = sum(a * min(r, high) for r, a, _ in tokens if a >= 0)
        negative = sum(-a * max(r, low) for r, a, _ in tokens if a < 0)
        return math.inf if negative <= 0 else positive / (negative + bapo.eps)

    low, high = bapo.lower_bound_start, bapo.upper_bound_start
    visited = [(low, high)]
    value = criterion(low, high)
    while value < bapo.positive_to_negative_target and low < bapo.lower_bound_max:
        low = min(low + bapo.lower_bound_step, bapo.lower_bound_max)
        visited.append((low, high))
        value = criterion(low, high)
    while value < bapo.positive_to_negative_target and high < bapo.upper_bound_max:
        high = min(high + bapo.upper_bound_step, bapo.upper_bound_max)
        visited.append((low, high))
        value = criterion(low, high)
    return low, high, visited


def paper_reference(tokens, bapo: BapoConfig):
    """Algorithm 1 lines 9-17 with Eq. 8's share (q-weighted, bars per token). The <= tests get a
    1e-9 slack so float accumulation (0.6 + 15 * 0.02 = 0.9000000000000004) does not drop b^-."""

    def share(low, high):
        positive = sum(q * a * min(r, high) for r, a, q in tokens if a > 0)
        negative = sum(-q * a * max(r, low) for r, a, q in tokens if a < 0)
        return positive / (positive + negative) if positive + negative > 0 else 1.0

    low, high = bapo.lower_bound_start, bapo.upper_bound_start
    visited = [(low, high)]
    while share(low, high) < bapo.positive_share_target and low + bapo.lower_bound_step <= bapo.lower_bound_max + 1e-9:
        if high + bapo.upper_bound_step <= bapo.upper_bound_max + 1e-9:
            high += bapo.upper_bound_step
        else:
            low += bapo.lower_bound_step
        visited.append((low, high))
    return low, high, visited


def reference_loss(inputs, low, high, clip_c, loss_agg_mode, weights=None):
    """PPO clip to [low, high], with verl's dual clip when clip_c is given, per token in float64,
    times the rollout weights, reduced by verl's agg_loss. Returns the loss and its gradient."""
    log_prob = inputs.log_prob.detach().double().requires_grad_(True)
    rows, cols = inputs.advantages.shape
    losses = torch.zeros(rows, cols, dtype=torch.float64)
    for i in range(rows):
        for t in range(cols):
            a = float(inputs.advantages[i, t])
            r = torch.exp(torch.clamp(log_prob[i, t] - float(inputs.old_log_prob[i, t]), -20.0, 20.0))
            surrogate = torch.maximum(-a * r, -a * torch.clamp(r, low, high))
            if a < 0 and clip_c is not None:
                surrogate = torch.minimum(surrogate, torch.tensor(-a * clip_c, dtype=torch.float64))
            losses[i, t] = surrogate
    if weights is not None:
        losses = losses * weights.double()
    loss = agg_loss(loss_mat=losses, loss_mask=inputs.response_mask, loss_agg_mode=loss_agg_mode)
    (grad,) = torch.autograd.grad(loss, log_prob)
    return loss, grad


def criterion_at(variant, tokens, low, high):
    """The value each source compares with its target at one bound pair."""
    weight = (lambda q: q) if variant == "paper" else (lambda q: 1.0)
    positive = sum(weight(q) * a * min(r, high) for r, a, q in tokens if a > 0)
    negative = sum(-weight(q) * a * max(r, low) for r, a, q in tokens if a < 0)
    return positive / (positive + negative) if variant == "paper" else positive / (negative + 1e-8)


def target_stopping_at(variant, tokens, fraction):
    """A target the search first meets at a step where the criterion rises to a new maximum along
    the full search path, at `fraction` of those steps, so it stops early, midway or late (None:
    a target never met, so it runs to the end)."""
    key = "positive_share_target" if variant == "paper" else "positive_to_negative_target"
    reference = paper_reference if variant == "paper" else recipe_reference
    unreachable = 1.0 if variant == "paper" else 1e9
    if fraction is None:  # the search runs to its last pair
        return key, unreachable
    _, _, path = reference(tokens, BapoConfig(variant=variant, **{key: unreachable}))
    values = [criterion_at(variant, tokens, low, high) for low, high in path]
    # k where the criterion first exceeds everything before it: a target just below values[k]
    # is met first at path[k] (in the recipe the c_low phase lowers the criterion).
    rises = [k for k in range(1, len(values)) if values[k] > max(values[:k]) * (1 + 1e-3)]
    step = rises[min(int(fraction * len(rises)), len(rises) - 1)]
    return key, (max(values[:step]) + values[step]) / 2


@pytest.mark.parametrize("variant", ["recipe", "paper"])
@pytest.mark.parametrize("seed, fraction", [(0, 0.0), (1, 0.5), (2, 0.9), (5, 0.3), (7, None)])
def test_search_value_and_gradient_match_the_source_algorithm(variant, seed, fraction):
    inputs = random_loss_inputs(batch_size=8, seed=seed, ratio_spread=0.8, with_rollout_is_weights=True)
    # Negatives pulled below 1 so the start pair misses and the search has to move.
    inputs = dataclasses.replace(inputs, advantages=inputs.advantages - 0.3)
    tokens = valid_tokens(inputs)
    key, target = target_stopping_at(variant, tokens, fraction)
    settings = BapoConfig(variant=variant, search_scope="micro_batch", **{key: target})
    config = bapo_actor_config(
        loss_agg_mode="seq-mean-token-mean", variant=variant, search_scope="micro_batch", **{key: target}
    )
    loss, metrics = compute_policy_loss_bapo(
        inputs.old_log_prob,
        inputs.log_prob,
        inputs.advantages,
        inputs.response_mask,
        "seq-mean-token-mean",
        config=config,
        rollout_is_weights=inputs.rollout_is_weights,
    )
    (grad,) = torch.autograd.grad(loss, inputs.log_prob)

    reference = paper_reference if variant == "paper" else recipe_reference
    low, high, path = reference(tokens, settings)
    assert len(path) > 1  # the search moved
    if fraction is None:
        assert (low, high) == pytest.approx((settings.lower_bound_max, settings.upper_bound_max))
    assert metrics["actor/bapo/lower_bound"] == pytest.approx(low, abs=1e-6)
    assert metrics["actor/bapo/upper_bound"] == pytest.approx(high, abs=1e-6)
    assert metrics["actor/bapo/search_steps"] == len(path) - 1
    clip_c = 3.0 if variant == "recipe" else None
    expected_loss, expected_grad = reference_loss(
        inputs, low, high, clip_c, "seq-mean-token-mean", inputs.rollout_is_weights
    )
    assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-5, abs=1e-6)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-4, atol=1e-6)
    assert set(metrics) == set(METRIC_KEYS) and metrics["actor/bapo/search_ranks"] == 1


def test_the_two_orders_of_the_sources():
    # recipe: c_low to its end first, then c_high; paper: c_high to its end first, then c_low.
    assert recipe_search_path(3, 3) == [(0, 0), (1, 0), (2, 0), (2, 1), (2, 2)]
    assert paper_search_path(3, 3) == [(0, 0), (0, 1), (0, 2), (1, 2), (2, 2)]
    # Algorithm 1's loop needs c_low + delta_2 <= b^-: with one c_low value it never starts.
    assert paper_search_path(1, 5) == [(0, 0)]
    assert recipe_search_path(1, 3) == [(0, 0), (0, 1), (0, 2)]


def test_bound_values_of_each_source():
    # recipe: min(c + step, max), so the last value is max.
    assert recipe_bound_candidates(0.8, 0.95, 0.05) == pytest.approx([0.8, 0.85, 0.9, 0.95])
    assert recipe_bound_candidates(0.6, 0.9, 0.07) == pytest.approx([0.6, 0.67, 0.74, 0.81, 0.88, 0.9])
    upper = recipe_bound_candidates(1.2, 2.0, 0.1)
    assert upper[-2:] == pytest.approx([1.9, 2.0]) and len(upper) == 9
    assert recipe_bound_candidates(0.8, 0.8, 0.05) == [0.8]
    # paper: start + k * step <= max, so 0.07 never reaches 0.9.
    assert paper_bound_grid(0.6, 0.9, 0.07) == pytest.approx([0.6, 0.67, 0.74, 0.81, 0.88])
    assert len(paper_bound_grid(0.6, 0.9, 0.02)) == 16 and paper_bound_grid(0.6, 0.9, 0.02)[-1] == pytest.approx(0.9)
    assert len(paper_bound_grid(1.2, 3.0, 0.05)) == 37 and paper_bound_grid(1.2, 3.0, 0.05)[-1] == pytest.approx(3.0)


def test_defaults_are_each_sources():
    recipe = BapoConfig()
    assert recipe.variant == "recipe"
    assert (recipe.positive_to_negative_target, recipe.eps, recipe.positive_share_target) == (0.5, 1e-8, None)
    assert (recipe.lower_bound_start, recipe.lower_bound_max, recipe.lower_bound_step) == (0.8, 0.95, 0.05)
    assert (recipe.upper_bound_start, recipe.upper_bound_max, recipe.upper_bound_step) == (1.2, 2.0, 0.1)
    paper = BapoConfig(variant="paper")
    assert (paper.positive_share_target, paper.positive_to_negative_target, paper.eps) == (0.4, None, None)
    assert (paper.lower_bound_start, paper.lower_bound_max, paper.lower_bound_step) == (0.6, 0.9, 0.02)
    assert (paper.upper_bound_start, paper.upper_bound_max, paper.upper_bound_step) == (1.2, 3.0, 0.05)
    assert set(VARIANT_DEFAULTS) == {"recipe", "paper"}
    # A block as Hydra hands it over (nulls = the variant's defaults), and a key set explicitly.
    block = config_block_from(
        {"variant": "paper", "upper_bound_max": 2.5, "lower_bound_step": None}, BapoConfig, "bapo"
    )
    assert (block.upper_bound_max, block.lower_bound_step, block.positive_share_target) == (2.5, 0.02, 0.4)


@pytest.mark.parametrize("variant, clip_c", [("recipe", 3.0), ("paper", 1e9)])
@pytest.mark.parametrize("loss_agg_mode", ["token-mean", "seq-mean-token-sum"])
def test_identity_with_verl_vanilla_when_the_search_is_off(variant, clip_c, loss_agg_mode):
    """One bound pair: the recipe is verl's vanilla loss (dual clip 3 included); the paper has no
    dual clip, i.e. vanilla with a dual-clip bound no ratio reaches."""
    inputs = random_loss_inputs(seed=6, ratio_spread=1.2)
    config = bapo_actor_config(
        loss_agg_mode=loss_agg_mode,
        variant=variant,
        lower_bound_start=0.8,
        lower_bound_max=0.8,
        upper_bound_start=1.28,
        upper_bound_max=1.28,
    )
    vanilla = actor_config(
        loss_mode="vanilla",
        loss_agg_mode=loss_agg_mode,
        plain=True,
        clip_ratio_low=0.2,
        clip_ratio_high=0.28,
        clip_ratio_c=clip_c,
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
    if variant == "recipe":
        assert metrics["actor/pg_clipfrac_lower"] > 0  # the dual clip binds on these inputs


def test_metrics_keep_their_keys_and_an_empty_micro_batch_gives_zero():
    inputs = random_loss_inputs(seed=9)
    for variant in ("recipe", "paper"):
        loss, metrics = compute_policy_loss_bapo(
            inputs.old_log_prob,
            inputs.log_prob,
            inputs.advantages,
            torch.zeros_like(inputs.response_mask),
            config=bapo_actor_config(variant=variant),
        )
        assert loss.item() == 0.0 and tuple(metrics) == METRIC_KEYS
        assert metrics["actor/bapo/positive_share"] == 1.0 and metrics["actor/bapo/search_steps"] == 0


@pytest.mark.parametrize(
    "keys, message",
    [
        (dict(variant="ours"), "policy_loss.bapo.variant"),
        (dict(positive_share_target=0.4), "policy_loss.bapo.positive_share_target belongs to variant=paper"),
        (
            dict(variant="paper", positive_to_negative_target=1.0),
            "policy_loss.bapo.positive_to_negative_target belongs",
        ),
        (dict(variant="paper", eps=1e-6), "policy_loss.bapo.eps belongs to variant=recipe"),
        (dict(variant="paper", positive_share_target=1.5), "policy_loss.bapo.positive_share_target"),
        (dict(positive_to_negative_target=-1.0), "policy_loss.bapo.positive_to_negative_target"),
        (dict(lower_bound_start=0.0), "policy_loss.bapo.lower_bound_start"),
        (dict(lower_bound_max=0.5), "policy_loss.bapo.lower_bound_max"),
        (dict(upper_bound_start=0.9), "policy_loss.bapo.upper_bound_start"),
        (dict(upper_bound_max=1.1), "policy_loss.bapo.upper_bound_max"),
        (dict(upper_bound_step=0.0), "policy_loss.bapo.upper_bound_step"),
        (dict(search_scope="global"), "policy_loss.bapo.search_scope"),
        (dict(lower_bound_step="0.05"), "policy_loss.bapo.lower_bound_step"),
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


TWO_RANK_SETTINGS = {
    "recipe": dict(positive_to_negative_target=1.2),
    "paper": dict(variant="paper", positive_share_target=0.55),
}


def _bapo_rank(rank, world_size, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        inputs = two_rank_inputs(rank)
        results = {}
        for variant, settings in TWO_RANK_SETTINGS.items():
            for scope in ("data_parallel", "micro_batch"):
                _, metrics = compute_policy_loss_bapo(
                    inputs.old_log_prob,
                    inputs.log_prob,
                    inputs.advantages,
                    inputs.response_mask,
                    config=bapo_actor_config(search_scope=scope, **settings),
                )
                results[f"{variant}/{scope}"] = metrics
        pipeline = {
            "policy_loss": {"bapo": {"search_scope": "data_parallel"}},
            "engine": {"pipeline_model_parallel_size": 2},
        }
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


@pytest.mark.verl
@pytest.mark.timeout(300)  # two spawned interpreters import torch and verl: slow on a loaded 2-core box
def test_data_parallel_search_sees_every_ranks_micro_batch(tmp_path):
    torch.multiprocessing.spawn(_bapo_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]

    both = [two_rank_inputs(rank) for rank in range(2)]
    combined = dataclasses.replace(
        both[0],
        **{
            name: torch.cat([getattr(both[0], name), getattr(both[1], name)])
            for name in ("old_log_prob", "log_prob", "advantages", "response_mask")
        },
    )
    for variant, settings in TWO_RANK_SETTINGS.items():
        _, expected = compute_policy_loss_bapo(
            combined.old_log_prob,
            combined.log_prob,
            combined.advantages,
            combined.response_mask,
            config=bapo_actor_config(search_scope="micro_batch", **settings),
        )
        for result in ranks:
            for key in ("actor/bapo/lower_bound", "actor/bapo/upper_bound", "actor/bapo/positive_share"):
                assert result[f"{variant}/data_parallel"][key] == pytest.approx(expected[key], abs=1e-5)
            assert result[f"{variant}/data_parallel"]["actor/bapo/search_ranks"] == 2
            assert result[f"{variant}/micro_batch"]["actor/bapo/search_ranks"] == 1
        # Searching alone, the two ranks would have chosen different bounds.
        alone = [result[f"{variant}/micro_batch"]["actor/bapo/search_steps"] for result in ranks]
        assert alone[0] != alone[1], variant
    for result in ranks:
        assert "search_scope=micro_batch" in result["pipeline_error"]


@pytest.mark.verl
@pytest.mark.timeout(120)
@pytest.mark.parametrize("variant", ["recipe", "paper"])
def test_our_yaml_leaves_the_defaults_to_the_variant(variant):
    """configs/policy_loss/baselines.yaml (over configs/maspo.yaml) holds nulls, so `bapo.variant=paper`
    alone gives the paper's values once verl builds the actor config."""
    from pathlib import Path

    from verl.utils.config import omega_conf_to_dataclass

    from maspo_verl.experiments.dry_run import compose_config

    config = compose_config(
        str(Path(__file__).resolve().parents[1] / "configs"),
        "maspo",
        [
            "+experiment=r1_distill_7b",
            "+policy_loss=baselines",  # the baselines' config class and blocks
            "actor_rollout_ref.actor.policy_loss.loss_mode=bapo",
            f"actor_rollout_ref.actor.policy_loss.bapo.variant={variant}",
        ],
    )
    bapo = omega_conf_to_dataclass(config.actor_rollout_ref.actor).policy_loss.bapo
    assert bapo == BapoConfig(variant=variant)
    assert bapo.upper_bound_max == VARIANT_DEFAULTS[variant]["upper_bound_max"]

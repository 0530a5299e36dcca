"""maspo_verl.evaluation.statistics: t-intervals over seeds, the paired seeds x problems intervals of Avg@n and
Pass@k differences, the minimum detectable difference and the sizing helper, checked on simulated experiments
whose true difference is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from maspo_verl.evaluation.pass_at_k import pass_at_k
from maspo_verl.evaluation.statistics import (
    crossed_standard_error,
    expected_half_width,
    expected_standard_error,
    mean_ci,
    minimum_detectable_difference,
    paired_difference,
    per_problem_pass_at_k,
    pilot_estimates,
    smallest_design,
    stack_runs,
)

SHARED_SEED_SD = 0.02  # a seed moves both methods alike: a lucky start, which pairing cancels


def uniform_effects(rng, sd, shape):
    """Zero-mean bounded effects with standard deviation `sd` (bounded so no accuracy leaves [0, 1])."""
    return rng.uniform(-1.0, 1.0, shape) * sd * math.sqrt(3.0)


def simulate_accuracies(rng, seeds, problems, delta, seed_sd=0.0, problem_sd=0.0, interaction_sd=0.0):
    """True accuracies (method, baseline), shape (seeds, problems), of the sizing model; true difference delta."""
    difficulty = rng.uniform(0.2, 0.7, problems)
    baseline = difficulty[None, :] + uniform_effects(rng, SHARED_SEED_SD, seeds)[:, None]
    method = (
        baseline
        + delta
        + uniform_effects(rng, seed_sd, seeds)[:, None]
        + uniform_effects(rng, problem_sd, problems)[None, :]
        + uniform_effects(rng, interaction_sd, (seeds, problems))
    )
    assert method.min() > 0.0 and method.max() < 1.0
    return method, baseline


def simulate(rng, seeds, problems, samples, delta, **effects):
    """0/1 validation scores (method, baseline) of shape (seeds, problems, samples)."""
    method, baseline = simulate_accuracies(rng, seeds, problems, delta, **effects)
    draw = lambda accuracy: rng.random((seeds, problems, samples)) < accuracy[..., None]  # noqa: E731
    return draw(method), draw(baseline)


def true_pass_at_k_difference(k, delta, **effects):
    """E[1 - (1 - a_method)^k] - E[1 - (1 - a_baseline)^k] over the simulated population, by Monte Carlo."""
    method, baseline = simulate_accuracies(np.random.default_rng(12345), 1000, 1000, delta, **effects)
    return float(np.mean((1 - baseline) ** k - (1 - method) ** k))


# ---------------------------------------------------------------------------------------------- mean_ci


def test_mean_ci_is_the_student_t_interval():
    values = [0.10, 0.20, 0.30, 0.60]
    result = mean_ci(values)
    std = math.sqrt(sum((v - 0.3) ** 2 for v in values) / 3)
    half_width = stats.t.ppf(0.975, 3) * std / 2
    assert result.mean == pytest.approx(0.3)
    assert result.std == pytest.approx(std)
    assert (result.low, result.high) == pytest.approx((0.3 - half_width, 0.3 + half_width))
    assert result.count == 4
    assert mean_ci(values, confidence=0.5).half_width < result.half_width


def test_mean_ci_of_one_value_has_no_interval():
    result = mean_ci([0.4])
    assert result.mean == 0.4 and result.count == 1
    assert math.isnan(result.low) and math.isnan(result.high) and math.isnan(result.half_width)
    assert result.as_dict()["low"] is None and result.as_dict()["mean"] == 0.4


def test_mean_ci_covers_the_true_mean_about_95_percent():
    rng = np.random.default_rng(0)
    covered = [
        (interval.low <= 0.5 <= interval.high)
        for interval in (mean_ci(rng.normal(0.5, 0.1, size=3)) for _ in range(400))
    ]
    assert 0.92 <= np.mean(covered) <= 0.98


@pytest.mark.parametrize(
    ("values", "confidence", "message"),
    [
        ([], 0.95, "values"),
        ([[0.1, 0.2]], 0.95, "values"),
        ([0.1, math.nan], 0.95, "values"),
        ([0.1, 0.2], 1.0, "confidence"),
    ],
)
def test_mean_ci_rejects_bad_input(values, confidence, message):
    with pytest.raises(ValueError, match=message):
        mean_ci(values, confidence)


# ---------------------------------------------------------------------------------------------- paired_difference


def test_identical_runs_differ_by_nothing():
    method, _ = simulate(np.random.default_rng(1), 3, 30, 4, delta=0.0)
    result = paired_difference(method, method.copy(), k=2)
    for estimate in (result.accuracy, result.pass_at_k):
        assert estimate.difference == 0.0
        assert (estimate.low, estimate.high) == (0.0, 0.0)
        assert estimate.verdict == "no detectable difference"
    assert result.accuracy.method == result.accuracy.baseline == pytest.approx(method.mean())


def test_a_large_planted_effect_has_the_right_sign_and_verdict():
    rng = np.random.default_rng(2)
    strong = rng.random((3, 40, 4)) < 0.8
    weak = rng.random((3, 40, 4)) < 0.2
    better = paired_difference(strong, weak, k=2)
    assert better.accuracy.verdict == better.pass_at_k.verdict == "better"
    assert 0.5 < better.accuracy.low <= better.accuracy.difference <= better.accuracy.high
    worse = paired_difference(weak, strong, k=2)
    assert worse.accuracy.verdict == worse.pass_at_k.verdict == "worse"
    assert worse.accuracy.difference == pytest.approx(-better.accuracy.difference)
    assert worse.accuracy.high < -0.5


def test_pass_at_k_and_avg_hand_computed():
    # one seed, two problems, four samples
    method = np.array([[[1, 1, 0, 0], [1, 0, 0, 0]]])
    baseline = np.array([[[0, 0, 0, 0], [1, 1, 1, 1]]])
    # 1 - C(2,2)/C(4,2) and 1 - C(3,2)/C(4,2)
    assert per_problem_pass_at_k(method, 2)[0].tolist() == pytest.approx([1 - 1 / 6, 1 - 3 / 6])
    result = paired_difference(method, baseline, k=2)
    assert result.pass_at_k.metric == "pass@2" and result.accuracy.metric == "avg@4"
    assert result.pass_at_k.method == pytest.approx((5 / 6 + 1 / 2) / 2)
    assert result.pass_at_k.baseline == pytest.approx(0.5)
    assert result.pass_at_k.difference == pytest.approx(1 / 6)
    assert result.accuracy.difference == pytest.approx(3 / 8 - 4 / 8)
    # the table reuses the package's one estimator
    assert per_problem_pass_at_k(method, 3)[0, 0] == pytest.approx(pass_at_k(4, 2, 3))
    assert not result.covers_training_randomness


def test_seed_level_differences_give_the_paired_t_test_over_seeds():
    # every problem of a seed moves by the same amount: only training randomness, no problem term
    correct_per_seed = [3, 1, 4, 2]
    method = np.zeros((4, 30, 8))
    for seed, correct in enumerate(correct_per_seed):
        method[seed, :, :correct] = 1.0
    baseline = np.zeros_like(method)
    baseline[:, :, :2] = 1.0
    seed_differences = (np.array(correct_per_seed) - 2) / 8
    expected = stats.ttest_1samp(seed_differences, 0.0).confidence_interval(0.95)
    accuracy = paired_difference(method, baseline, k=1).accuracy
    assert (accuracy.low, accuracy.high) == pytest.approx((expected.low, expected.high))
    assert accuracy.degrees_of_freedom == pytest.approx(3)
    assert accuracy.difference == pytest.approx(seed_differences.mean())


def test_one_seed_gives_the_t_interval_over_problems():
    method, baseline = simulate(np.random.default_rng(3), 1, 50, 4, delta=0.05)
    problem_differences = (method.mean(axis=2) - baseline.mean(axis=2))[0]
    expected = stats.ttest_1samp(problem_differences, 0.0).confidence_interval(0.9)
    result = paired_difference(method, baseline, k=2, confidence=0.9)
    assert (result.accuracy.low, result.accuracy.high) == pytest.approx((expected.low, expected.high))
    assert not result.covers_training_randomness and result.as_dict()["covers_training_randomness"] is False
    assert crossed_standard_error(problem_differences[None, :]) == pytest.approx((result.accuracy.standard_error, 49))


def coverage(regime, experiments=200):
    """Share of simulated experiments whose 95% intervals cover the true Avg@n and Pass@2 differences."""
    seeds, problems, samples, delta, effects = regime
    true_pass = true_pass_at_k_difference(2, delta, **effects)
    rng = np.random.default_rng(4)
    covered_accuracy, covered_pass = [], []
    for _ in range(experiments):
        method, baseline = simulate(rng, seeds, problems, samples, delta, **effects)
        result = paired_difference(method, baseline, k=2)
        covered_accuracy.append(result.accuracy.low <= delta <= result.accuracy.high)
        covered_pass.append(result.pass_at_k.low <= true_pass <= result.pass_at_k.high)
    return np.mean(covered_accuracy), np.mean(covered_pass)


@pytest.mark.parametrize(
    "regime",
    [
        # training, problem and evaluation randomness all present, at the comparison's scale
        (3, 60, 4, 0.03, dict(seed_sd=0.01, problem_sd=0.03, interaction_sd=0.02)),
        # the method's effect differs by problem, the same way in every seed: what the problem term is for
        (5, 40, 32, 0.0, dict(problem_sd=0.08)),
        # training randomness dominates and there are only 3 seeds: what the t quantile with S - 1 dof is for
        (3, 100, 16, 0.0, dict(seed_sd=0.04)),
    ],
    ids=["mixed", "problem-dominated", "seed-dominated"],
)
def test_the_95_percent_interval_covers_the_true_difference(regime):
    # measured over 5 simulation seeds: 0.89-0.97 in these regimes; 0.85 leaves 3 binomial sd at 200 experiments
    covered_accuracy, covered_pass = coverage(regime)
    assert 0.85 <= covered_accuracy <= 0.99
    assert 0.85 <= covered_pass <= 0.99


def test_pairing_narrows_the_interval_when_problems_share_their_difficulty():
    # problems range from 20% to 70% accuracy for both methods; 32 samples keep the sampling noise small beside that
    method, baseline = simulate(np.random.default_rng(5), 5, 100, 32, delta=0.02)
    paired = paired_difference(method, baseline, k=2)
    unpaired = paired_difference(method, baseline, k=2, paired=False)
    assert unpaired.accuracy.difference == paired.accuracy.difference
    assert unpaired.accuracy.high - unpaired.accuracy.low > 1.5 * (paired.accuracy.high - paired.accuracy.low)
    assert unpaired.accuracy.standard_error > 1.5 * paired.accuracy.standard_error


@pytest.mark.parametrize(
    ("method", "baseline", "k", "message"),
    [
        (np.zeros((3, 4)), np.zeros((3, 4, 2)), 1, "method_correct"),
        (np.zeros((3, 4, 2)), np.zeros((3, 5, 2)), 1, "baseline_correct"),
        (np.zeros((2, 4, 2)), np.zeros((3, 4, 2)), 1, "baseline_correct"),
        (np.full((3, 4, 2), 2.0), np.zeros((3, 4, 2)), 1, "method_correct"),
        (np.zeros((3, 4, 2)), np.full((3, 4, 2), math.nan), 1, "baseline_correct"),
        (np.zeros((3, 1, 2)), np.zeros((3, 1, 2)), 1, "problems"),
        (np.zeros((3, 4, 2)), np.zeros((3, 4, 2)), 3, "k must be"),
        (np.zeros((3, 4, 2)), np.zeros((3, 4, 2)), 0, "k must be"),
    ],
)
def test_bad_shapes_and_values_name_the_argument(method, baseline, k, message):
    with pytest.raises(ValueError, match=message):
        paired_difference(method, baseline, k=k)


# ---------------------------------------------------------------------------------------------- MDD and sizing


def test_minimum_detectable_difference_is_z_975_plus_z_80_standard_errors():
    assert minimum_detectable_difference(0.01) == pytest.approx(0.01 * (1.959964 + 0.841621), rel=1e-6)
    assert minimum_detectable_difference(0.01, power=0.5) == pytest.approx(0.01 * 1.959964, rel=1e-6)
    method, baseline = simulate(np.random.default_rng(6), 3, 40, 4, delta=0.0)
    accuracy = paired_difference(method, baseline, k=1).accuracy
    assert accuracy.minimum_detectable_difference == pytest.approx(
        minimum_detectable_difference(accuracy.standard_error, degrees_of_freedom=accuracy.degrees_of_freedom)
    )
    # few degrees of freedom: Student-t quantiles, 5.36 standard errors with 2
    with_two_dof = minimum_detectable_difference(0.01, degrees_of_freedom=2)
    assert with_two_dof == pytest.approx(0.01 * (4.302653 + 1.060660), rel=1e-6)
    with pytest.raises(ValueError, match="standard_error"):
        minimum_detectable_difference(-1.0)


MIXED = dict(seed_sd=0.015, problem_sd=0.03, interaction_sd=0.02)


def test_expected_standard_error_predicts_the_interval():
    seeds, problems, samples = 4, 80, 4
    rng = np.random.default_rng(7)
    variances, half_widths, accuracies = [], [], []
    for _ in range(100):
        method, baseline = simulate(rng, seeds, problems, samples, delta=0.02, **MIXED)
        accuracy = paired_difference(method, baseline, k=1).accuracy
        variances.append(accuracy.standard_error**2)
        half_widths.append((accuracy.high - accuracy.low) / 2)
        accuracies.append(np.concatenate([method, baseline]).mean())
    components = dict(
        mean_accuracy=float(np.mean(accuracies)), accuracy_spread=math.sqrt(0.5**2 / 12 + SHARED_SEED_SD**2),
        seed_variance=MIXED["seed_sd"] ** 2, problem_variance=MIXED["problem_sd"] ** 2,
        interaction_variance=MIXED["interaction_sd"] ** 2,
    )
    standard_error, dof = expected_standard_error(problems, samples, seeds, **components)
    # the variance estimate is unbiased up to truncating the problem term at 0
    assert np.mean(variances) == pytest.approx(standard_error**2, rel=0.15)
    assert 3 <= dof < 10
    predicted_half_width = expected_half_width(problems, samples, seeds, **components)
    assert predicted_half_width == pytest.approx(stats.t.ppf(0.975, dof) * standard_error)
    assert np.median(half_widths) == pytest.approx(predicted_half_width, rel=0.2)


def test_pilot_estimates_recover_the_planted_components():
    # 32 samples a problem: the interaction is then large against the sampling noise it is told apart from
    planted = dict(seed_sd=0.02, problem_sd=0.03, interaction_sd=0.04)
    rng = np.random.default_rng(8)
    estimates = [pilot_estimates(*simulate(rng, 12, 150, 32, delta=0.02, **planted)) for _ in range(20)]
    mean_of = lambda name: np.mean([getattr(e, name) for e in estimates])  # noqa: E731
    assert mean_of("mean_accuracy") == pytest.approx(0.46, abs=0.02)
    assert mean_of("accuracy_spread") == pytest.approx(math.sqrt(0.5**2 / 12 + SHARED_SEED_SD**2), rel=0.1)
    assert mean_of("seed_variance") == pytest.approx(planted["seed_sd"] ** 2, rel=0.3)
    assert mean_of("problem_variance") == pytest.approx(planted["problem_sd"] ** 2, rel=0.2)
    assert mean_of("interaction_variance") == pytest.approx(planted["interaction_sd"] ** 2, rel=0.2)
    one_seed = pilot_estimates(*simulate(rng, 1, 50, 4, delta=0.0))
    assert math.isnan(one_seed.seed_variance) and one_seed.as_dict()["seed_variance"] is None
    with pytest.raises(ValueError, match="samples"):
        pilot_estimates(np.zeros((2, 5, 1)), np.zeros((2, 5, 1)))


PILOT = dict(mean_accuracy=0.15, accuracy_spread=0.2, seed_variance=1e-4, problem_variance=1e-4)


def test_smallest_design_is_the_cheapest_that_meets_the_target():
    target, max_problems, options = 0.04, 150, (2, 4, 8)
    design = smallest_design(target, **PILOT, max_problems=max_problems, samples_options=options)
    # brute force in the documented order: fewest seeds, then fewest responses, then fewest samples a problem
    feasible = [
        (seeds, problems * samples, samples, problems)
        for seeds in range(2, design.num_seeds + 1)  # any feasible design with fewer seeds would win
        for samples in options
        for problems in range(2, max_problems + 1)
        if expected_half_width(problems, samples, seeds, **PILOT) <= target
    ]
    seeds, _, samples, problems = min(feasible)
    assert (design.num_seeds, design.num_problems, design.samples_per_problem) == (seeds, problems, samples)
    assert design.expected_half_width == expected_half_width(problems, samples, seeds, **PILOT) <= target
    assert smallest_design(0.08, **PILOT).num_seeds <= design.num_seeds


def test_sizing_rejects_what_cannot_be_met_or_does_not_exist():
    with pytest.raises(ValueError, match="target_half_width"):
        smallest_design(0.001, **PILOT, max_seeds=4, max_problems=500)
    with pytest.raises(ValueError, match="accuracy_spread"):
        expected_half_width(100, 4, 3, mean_accuracy=0.1, accuracy_spread=0.4, seed_variance=0.0)
    with pytest.raises(ValueError, match="seed_variance"):
        expected_half_width(100, 4, 3, mean_accuracy=0.1, accuracy_spread=0.1, seed_variance=math.nan)


def test_one_seed_ignores_training_randomness_and_more_data_narrows():
    one_seed = [
        expected_standard_error(100, 4, 1, mean_accuracy=0.2, accuracy_spread=0.1, seed_variance=variance)
        for variance in (0.0, 0.01)
    ]
    assert one_seed[0] == one_seed[1] and one_seed[0][1] == 99
    base = dict(mean_accuracy=0.2, accuracy_spread=0.1, seed_variance=1e-4)
    assert expected_half_width(200, 4, 3, **base) < expected_half_width(100, 4, 3, **base)
    assert expected_half_width(100, 8, 3, **base) < expected_half_width(100, 4, 3, **base)
    assert expected_half_width(100, 4, 6, **base) < expected_half_width(100, 4, 3, **base)


# ---------------------------------------------------------------------------------------------- stack_runs


def test_stack_runs_aligns_problems_by_key_whatever_their_order():
    seed0 = {"1+2=": [1, 0], "3-1=": [0, 0], "2+2=": [1, 1]}
    seed1 = {"2+2=": [0, 1], "1+2=": [1, 1], "3-1=": [1, 0]}
    method, order = stack_runs([seed0, seed1])
    assert order == ["1+2=", "2+2=", "3-1="]
    assert method.tolist() == [[[1, 0], [1, 1], [0, 0]], [[1, 1], [0, 1], [1, 0]]]
    baseline, same_order = stack_runs([dict(reversed(list(seed1.items())))], problems=order)
    assert same_order == order and baseline[0].tolist() == method[1].tolist()


def test_stack_runs_names_the_run_that_does_not_line_up():
    with pytest.raises(ValueError, match=r"vanilla\[1\] does not hold the same problems: missing \['b'\]"):
        stack_runs([{"a": [1], "b": [0]}, {"a": [1], "c": [0]}], name="vanilla")
    with pytest.raises(ValueError, match=r"maspo\[1\] has 3 samples of problem 'b'"):
        stack_runs([{"a": [1, 0], "b": [0, 0]}, {"a": [1, 1], "b": [0, 1, 1]}], name="maspo")
    with pytest.raises(ValueError, match="0/1"):
        stack_runs([{"a": [1, 0.5]}])
    with pytest.raises(ValueError, match="at least one run"):
        stack_runs([])

"""maspo_verl.sandbox.statistics: seed-level intervals, the paired t over seeds, Holm's adjustment and the
planned minimum detectable difference, against scipy and hand-computed known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from maspo_verl.sandbox.statistics import (
    holm_adjust,
    interval_half_width,
    mean_ci,
    paired_seed_difference,
    paired_t_power,
    planned_minimum_detectable_difference,
    pooled_standard_deviation,
    problem_level_standard_error,
    seeds_for_half_width,
    verdict,
)

pytestmark = pytest.mark.kind("unit")


def test_mean_ci_is_the_student_t_interval():
    values = [0.2, 0.25, 0.3, 0.35]
    result = mean_ci(values)
    std = float(np.std(values, ddof=1))
    half_width = stats.t.ppf(0.975, 3) * std / 2
    assert result.mean == pytest.approx(0.275)
    assert (result.low, result.high) == pytest.approx((0.275 - half_width, 0.275 + half_width))
    assert result.count == 4 and result.std == pytest.approx(std)


def test_mean_ci_of_one_value_has_no_interval():
    result = mean_ci([0.4])
    assert result.mean == 0.4 and math.isnan(result.low) and math.isnan(result.high)
    assert result.as_dict()["low"] is None


@pytest.mark.parametrize(
    "values, confidence, message",
    [
        ([], 0.95, "non-empty"),
        ([[0.1, 0.2]], 0.95, "1-D"),
        ([0.1, float("nan")], 0.95, "finite"),
        ([0.1, 0.2], 1.0, "confidence"),
    ],
)
def test_mean_ci_rejects_bad_input(values, confidence, message):
    with pytest.raises(ValueError, match=message):
        mean_ci(values, confidence)


def test_paired_difference_is_scipys_paired_t_test():
    rng = np.random.default_rng(3)
    baseline = rng.uniform(0.3, 0.6, size=7)
    method = baseline + rng.normal(0.02, 0.03, size=7)
    result = paired_seed_difference(method, baseline, metric="acc")
    expected = stats.ttest_rel(method, baseline)
    low, high = expected.confidence_interval(0.95)
    assert result.p_value == pytest.approx(expected.pvalue)
    assert (result.low, result.high) == pytest.approx((low, high))
    assert result.difference == pytest.approx(float(np.mean(method - baseline)))
    assert result.degrees_of_freedom == 6 and result.seeds == 7 and result.metric == "acc"
    assert result.per_seed == pytest.approx(list(method - baseline))
    # the same as a one-sample t-test of the per-seed differences, by hand
    differences = method - baseline
    half_width = stats.t.ppf(0.975, 6) * differences.std(ddof=1) / math.sqrt(7)
    assert (result.low, result.high) == pytest.approx(
        (differences.mean() - half_width, differences.mean() + half_width)
    )


def test_known_answer_three_seeds():
    # differences 0.1, 0.2, 0.3: mean 0.2, sd 0.1, se 0.1/sqrt(3), t = 2 sqrt(3) = 3.4641 with 2 df
    result = paired_seed_difference([0.6, 0.7, 0.8], [0.5, 0.5, 0.5])
    assert result.difference == pytest.approx(0.2)
    assert result.standard_error == pytest.approx(0.1 / math.sqrt(3))
    assert result.p_value == pytest.approx(2 * stats.t.sf(2 * math.sqrt(3), 2))
    assert result.p_value == pytest.approx(0.07418, abs=1e-4)
    assert result.high - result.difference == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-5)


def test_one_seed_has_a_difference_but_no_interval_and_no_p():
    result = paired_seed_difference([0.6], [0.5])
    assert result.difference == pytest.approx(0.1)
    assert math.isnan(result.low) and math.isnan(result.p_value) and result.degrees_of_freedom == 0
    assert verdict(result.difference, result.p_value) == "no interval (1 seed)"
    assert result.as_dict()["p_value"] is None


def test_identical_differences_give_no_interval_no_p_and_no_verdict():
    """Two seeds that differ by the same amount estimate a standard error of 0 from 1 df of nothing: no test."""
    for method, baseline in (([0.6, 0.7], [0.5, 0.6]), ([0.5, 0.6], [0.5, 0.6]), ([0.3, 0.4, 0.5], [0.2, 0.3, 0.4])):
        result = paired_seed_difference(method, baseline)
        assert math.isnan(result.p_value) and math.isnan(result.low) and math.isnan(result.high)
        assert result.untested == "identical per-seed differences" and result.as_dict()["p_value"] is None
        assert verdict(result.difference, result.p_value, untested=result.untested) == (
            "no test (identical per-seed differences)"
        )
    assert paired_seed_difference([0.6, 0.71], [0.5, 0.6]).untested == "", "any spread: tested"


def test_paired_difference_rejects_unequal_seeds_naming_both():
    with pytest.raises(ValueError, match="method_values and baseline_values"):
        paired_seed_difference([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="baseline_values must be finite"):
        paired_seed_difference([0.1, 0.2], [0.1, float("inf")])


def test_holm_known_answer():
    # Holm 1979's step-down on four p-values; the same numbers as statsmodels' multipletests(method="holm")
    adjusted = holm_adjust({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005})
    assert adjusted == pytest.approx({"d": 0.02, "a": 0.03, "c": 0.06, "b": 0.06})


def test_holm_is_monotone_capped_and_skips_missing_tests():
    adjusted = holm_adjust({"a": 0.5, "b": 0.6, "c": float("nan"), "d": 0.001})
    assert adjusted["d"] == pytest.approx(0.003)  # a family of three: the NaN is no test
    assert adjusted["a"] == pytest.approx(1.0) and adjusted["b"] == pytest.approx(1.0)
    assert math.isnan(adjusted["c"])
    with pytest.raises(ValueError, match=r"p_values\['x'\]"):
        holm_adjust({"x": 1.5})


def test_holm_removes_a_verdict_the_raw_p_gives():
    raw = {"maspo": 0.03, "sapo": 0.2, "dac": 0.5}
    adjusted = holm_adjust(raw)
    assert verdict(-0.02, raw["maspo"]) == "worse"
    assert verdict(-0.02, adjusted["maspo"]) == "no detectable difference"


def test_verdict_follows_the_sign():
    assert verdict(0.1, 0.01) == "better" and verdict(-0.1, 0.01) == "worse"
    assert verdict(0.1, 0.2) == "no detectable difference"


def _power_by_integration(difference, sd, seeds, alpha):
    """The paired t-test's power without the noncentral t: T = (Z + delta) / sqrt(V / df) with Z standard normal and
    V chi-square(df) independent, so P(|T| > c) = E_V[Phi(-c s - delta) + 1 - Phi(c s - delta)], s = sqrt(V / df)."""
    from scipy import integrate

    dof = seeds - 1
    critical = stats.t.ppf(1 - alpha / 2, dof)
    delta = difference * math.sqrt(seeds) / sd

    def integrand(v):
        scale = math.sqrt(v / dof)
        rejected = stats.norm.cdf(-critical * scale - delta) + stats.norm.sf(critical * scale - delta)
        return rejected * stats.chi2.pdf(v, dof)

    return integrate.quad(integrand, 0, np.inf, limit=200)[0]


@pytest.mark.parametrize("seeds, comparisons", [(2, 1), (3, 6), (5, 1), (5, 2), (10, 9)])
def test_planned_mde_has_exactly_its_power_by_an_independent_computation(seeds, comparisons):
    mde = planned_minimum_detectable_difference(0.03, seeds, comparisons)
    assert _power_by_integration(mde, 0.03, seeds, 0.05 / comparisons) == pytest.approx(0.8, abs=1e-6)
    assert paired_t_power(mde, 0.03, seeds, comparisons) == pytest.approx(0.8, abs=1e-9)
    assert paired_t_power(-mde, 0.03, seeds, comparisons) == pytest.approx(0.8, abs=1e-9), "either sign"
    # the quantile-sum approximation it replaces is below the exact figure (optimistic) at few seeds
    approximation = (stats.t.ppf(1 - 0.05 / (2 * comparisons), seeds - 1) + stats.t.ppf(0.8, seeds - 1)) * 0.03
    assert approximation / math.sqrt(seeds) < mde


def test_power_known_answer_and_limits():
    # 5 seeds, sd 0.03, difference 0.06: delta = 2 sqrt(5) = 4.472, df 4, c = 2.776 -> power 0.857 (integration)
    assert paired_t_power(0.06, 0.03, 5) == pytest.approx(_power_by_integration(0.06, 0.03, 5, 0.05), abs=1e-7)
    assert paired_t_power(0.0, 0.03, 5) == pytest.approx(0.05, abs=1e-9), "no difference: the test's level"
    assert paired_t_power(1.0, 0.03, 5) == pytest.approx(1.0)
    assert planned_minimum_detectable_difference(0.0, 5) == 0.0
    assert planned_minimum_detectable_difference(0.05, 10, comparisons=9) > planned_minimum_detectable_difference(
        0.05, 10
    ), "more comparisons ask for a stricter level, so a larger effect"


def test_interval_half_width_is_t_times_the_standard_error():
    for sd, seeds in ((0.03, 7), (0.014, 10), (0.05, 2)):
        expected = stats.t.ppf(0.975, seeds - 1) * sd / math.sqrt(seeds)
        assert interval_half_width(sd, seeds) == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="seeds must be an integer >= 2"):
        interval_half_width(0.03, 1)


def test_seeds_for_half_width_is_the_fewest_whose_t_interval_is_narrow_enough():
    # sd 0.03, +-0.03: 6 seeds give 2.571 x 0.03 / sqrt(6) = 0.0315, 7 give 2.447 x 0.03 / sqrt(7) = 0.0277
    assert seeds_for_half_width(0.03, 0.03) == 7
    assert seeds_for_half_width(0.02, 0.03, minimum=5) == 5, "the minimum when fewer would do"
    assert seeds_for_half_width(0.0, 0.03) == 2
    for sd in (0.01, 0.025, 0.04, 0.05):
        seeds = seeds_for_half_width(sd, 0.03)
        assert stats.t.ppf(0.975, seeds - 1) * sd / math.sqrt(seeds) <= 0.03
        assert stats.t.ppf(0.975, seeds - 2) * sd / math.sqrt(seeds - 1) > 0.03 or seeds == 2
    # the same interval the analysis draws: a sample whose sd is the planned one has that half-width
    differences = np.array([-1.0, 1.0, -1.0, 1.0, -1.0, 1.0, 0.0])
    differences = 0.03 * differences / differences.std(ddof=1)
    low, high = stats.t.interval(0.95, 6, loc=differences.mean(), scale=stats.sem(differences))
    assert (high - low) / 2 <= 0.03 < stats.t.ppf(0.975, 5) * 0.03 / math.sqrt(6)


@pytest.mark.parametrize(
    "args, message",
    [
        ((float("nan"), 0.03), "seed_standard_deviation"),
        ((0.03, 0.0), "half_width"),
        ((0.03, 0.03, 1.5), "confidence"),
        ((0.03, 0.03, 0.95, 1), "minimum"),
        ((1.0, 0.001, 0.95, 2, 10), "maximum=10"),
    ],
)
def test_seeds_for_half_width_refuses_bad_input_naming_it(args, message):
    with pytest.raises(ValueError, match=message):
        seeds_for_half_width(*args)


def test_planned_mde_has_its_stated_power_in_simulation():
    # true difference = the MDE, normal per-seed differences with the planned sd: rejected ~80% of the time
    rng = np.random.default_rng(0)
    sd, seeds = 0.04, 8
    mde = planned_minimum_detectable_difference(sd, seeds)
    rejections = [stats.ttest_1samp(rng.normal(mde, sd, seeds), 0.0).pvalue < 0.05 for _ in range(4000)]
    assert 0.76 <= np.mean(rejections) <= 0.84


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(seed_standard_deviation=-1.0, seeds=3), "seed_standard_deviation"),
        (dict(seed_standard_deviation=0.1, seeds=1), "seeds"),
        (dict(seed_standard_deviation=0.1, seeds=3, comparisons=0), "comparisons"),
        (dict(seed_standard_deviation=0.1, seeds=3, power=1.5), "power"),
        (dict(seed_standard_deviation=float("nan"), seeds=3), "seed_standard_deviation"),
    ],
)
def test_planned_mde_rejects_bad_input_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        planned_minimum_detectable_difference(**kwargs)


def test_the_paired_interval_covers_the_truth_95_percent():
    rng = np.random.default_rng(1)
    covered = []
    for _ in range(2000):
        start = rng.uniform(0.2, 0.4, size=5)
        baseline = start + rng.normal(0.1, 0.05, size=5)
        method = start + rng.normal(0.13, 0.05, size=5)
        result = paired_seed_difference(method, baseline)
        covered.append(result.low <= 0.03 <= result.high)
    assert 0.935 <= np.mean(covered) <= 0.965


def test_pooled_standard_deviation_weights_by_degrees_of_freedom():
    groups = [[0.1, 0.3], [0.0, 0.1, 0.2, 0.3]]
    expected = math.sqrt((0.02 + 0.05) / (1 + 3))
    assert pooled_standard_deviation(groups) == pytest.approx(expected)
    with pytest.raises(ValueError, match=r"groups\[1\] needs at least 2"):
        pooled_standard_deviation([[0.1, 0.2], [0.3]])


def test_problem_level_standard_error_is_the_sd_of_problem_differences_over_sqrt_p():
    method = {"a": 0.75, "b": 0.5, "c": 0.25, "d": 1.0}
    baseline = {"a": 0.5, "b": 0.5, "c": 0.5, "d": 0.5}
    differences = np.array([0.25, 0.0, -0.25, 0.5])
    assert problem_level_standard_error(method, baseline) == pytest.approx(differences.std(ddof=1) / 2)
    assert problem_level_standard_error(baseline, baseline) == 0.0
    with pytest.raises(ValueError, match="same problems"):
        problem_level_standard_error({"a": 0.5, "b": 0.5}, {"a": 0.5, "z": 0.5})
    with pytest.raises(ValueError, match="at least 2 problems"):
        problem_level_standard_error({"a": 0.5}, {"a": 0.25})

"""Statistics of a comparison of RL methods at the level of its replication unit, the training seed.

The comparison (`maspo_verl.sandbox.compare`) trains every arm once per seed; all arms of a seed start from the same
model, see the same data in the same order and validate on the same held-out problems with the same sampling
seeds. One run gives one number per metric (e.g. its final held-out accuracy), so an arm is a sample of S
numbers and an arm against its baseline a sample of S paired differences. Training randomness, the seed, is
what a rerun changes; the held-out problems are the whole population the outcome is defined on, not a sample of
it, so they add no variance term of their own (their sampling noise is inside each seed's number).

- `mean_ci`: an arm's mean over seeds with a Student-t interval (S - 1 degrees of freedom).
- `paired_seed_difference`: method - baseline per seed; the paired t-test over seeds (`scipy.stats.ttest_rel`),
  its interval and two-sided p-value. With one seed, or with every per-seed difference the same (no spread to
  estimate a standard error from), the difference and no interval, no p.
- `holm_adjust`: Holm's step-down adjustment of the p-values of many arms against one baseline.
- `verdict`: "better" / "worse" when the adjusted p is below alpha, by the sign of the difference; no verdict
  without a test.
- `paired_t_power`: the exact power of the two-sided paired t-test (noncentral t).
- `planned_minimum_detectable_difference`: the smallest true difference the design detects with the given power,
  from a seed-level standard deviation fixed before the runs (a pilot), not from the runs it judges; the same
  function with the drawn standard deviation gives the realised figure.
- `seeds_for_half_width`: the fewest seeds whose expected t-interval of a paired difference is at most a given
  half-width, from a planned seed-level standard deviation.
- `pooled_standard_deviation`: the pooled within-group standard deviation of a pilot's per-seed numbers.
- `problem_level_standard_error`: the standard error of one seed's method - baseline difference from the
  held-out problems' sampling noise alone.

Pure numpy / scipy.stats functions, deterministic. Results are frozen dataclasses; `.as_dict()` gives JSON-ready
dicts (NaN and infinity -> None).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize, stats

__all__ = [
    "VERDICTS",
    "MeanCI",
    "SeedDifference",
    "holm_adjust",
    "interval_half_width",
    "mean_ci",
    "paired_seed_difference",
    "paired_t_power",
    "planned_minimum_detectable_difference",
    "pooled_standard_deviation",
    "problem_level_standard_error",
    "seeds_for_half_width",
    "verdict",
]

ONE_SEED = "1 seed"
IDENTICAL_DIFFERENCES = "identical per-seed differences"
VERDICTS = (
    "better",
    "worse",
    "no detectable difference",
    "no interval (1 seed)",
    f"no test ({IDENTICAL_DIFFERENCES})",
)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def _check_probability(value: float, name: str) -> float:
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value}")
    return float(value)


def _check_values(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence (one value per seed), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {array.tolist()}")
    return array


def _t_quantile(probability: float, degrees_of_freedom: float) -> float:
    return float(stats.t.ppf(probability, degrees_of_freedom))


# ----------------------------------------------------------------------------------------------------------
# One arm: mean over seeds


@dataclass(frozen=True)
class MeanCI:
    """Mean of `count` values with a Student-t interval [low, high] at `confidence`; std uses ddof=1."""

    mean: float
    low: float
    high: float
    half_width: float
    std: float
    count: int
    confidence: float

    def as_dict(self) -> dict:
        return _json_safe(asdict(self))


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> MeanCI:
    """Mean over seeds and its t-interval: mean +- t_{(1+confidence)/2, m-1} * std / sqrt(m).

    Args:
        values: shape (m,), one number per seed (e.g. each seed's final validation accuracy).
        confidence: two-sided coverage of the interval.

    With one value the interval and std are NaN (`as_dict` writes None): one seed says nothing about how much
    another seed would differ, and a zero-width interval would claim a certainty the data do not have.
    """
    confidence = _check_probability(confidence, "confidence")
    array = _check_values(values, "values")
    count = int(array.size)
    mean = float(array.mean())
    if count == 1:
        return MeanCI(mean, math.nan, math.nan, math.nan, math.nan, 1, confidence)
    std = float(array.std(ddof=1))
    half_width = _t_quantile(0.5 + confidence / 2, count - 1) * std / math.sqrt(count)
    return MeanCI(mean, mean - half_width, mean + half_width, half_width, std, count, confidence)


# ----------------------------------------------------------------------------------------------------------
# An arm against its baseline: the paired t over seeds


@dataclass(frozen=True)
class SeedDifference:
    """Method - baseline over `seeds` paired seeds: mean difference, t-interval [low, high], two-sided p.

    `low`, `high` and `p_value` are NaN when there is no test, and `untested` says why (`ONE_SEED` or
    `IDENTICAL_DIFFERENCES`; empty when tested): see `paired_seed_difference`.
    """

    metric: str
    method: float
    baseline: float
    difference: float
    low: float
    high: float
    standard_error: float
    degrees_of_freedom: int
    p_value: float
    seeds: int
    confidence: float
    per_seed: list[float]
    untested: str = ""

    def as_dict(self) -> dict:
        return _json_safe(asdict(self))


def paired_seed_difference(
    method_values: Sequence[float], baseline_values: Sequence[float], confidence: float = 0.95, metric: str = ""
) -> SeedDifference:
    """The paired t-test over seeds of method - baseline (Student 1908; `scipy.stats.ttest_rel`).

    Args:
        method_values, baseline_values: shape (S,), one number per seed, the same seeds in the same order.
        confidence: two-sided coverage of the interval.
        metric: the metric's name, carried into the result.

    Returns the mean of the S per-seed differences d_s, its interval mean(d) +- t_{(1+confidence)/2, S-1} *
    std(d) / sqrt(S) and the two-sided p-value of H0: E[d] = 0. With S = 1 there is a difference but no interval
    and no p (NaN): the spread of one seed's difference over its problems or samples says nothing about how a
    rerun with another seed would differ, which is what a method comparison is about. With S >= 2 and all
    differences equal there is no spread to estimate the standard error from (its estimate is 0 with S - 1 df
    of nothing): no interval and no p either. Two seeds that happen to differ by the same amount are not
    evidence of a difference measured without error.
    """
    confidence = _check_probability(confidence, "confidence")
    method = _check_values(method_values, "method_values")
    baseline = _check_values(baseline_values, "baseline_values")
    if method.shape != baseline.shape:
        raise ValueError(
            f"method_values and baseline_values must hold one value per seed for the same seeds, got "
            f"{method.size} and {baseline.size} values"
        )
    differences = method - baseline
    seeds = int(differences.size)
    mean_difference = float(differences.mean())
    common = dict(
        metric=metric,
        method=float(method.mean()),
        baseline=float(baseline.mean()),
        difference=mean_difference,
        seeds=seeds,
        confidence=confidence,
        per_seed=[float(d) for d in differences],
    )
    if seeds == 1:
        return SeedDifference(
            low=math.nan,
            high=math.nan,
            standard_error=math.nan,
            degrees_of_freedom=0,
            p_value=math.nan,
            untested=ONE_SEED,
            **common,
        )
    if float(np.ptp(differences)) <= 1e-12:  # float rounding of equal differences (accuracies are k / n)
        return SeedDifference(
            low=math.nan,
            high=math.nan,
            standard_error=0.0,
            degrees_of_freedom=seeds - 1,
            p_value=math.nan,
            untested=IDENTICAL_DIFFERENCES,
            **common,
        )
    standard_error = float(differences.std(ddof=1)) / math.sqrt(seeds)
    test = stats.ttest_rel(method, baseline)
    p_value = float(test.pvalue)
    low, high = (float(bound) for bound in test.confidence_interval(confidence))
    return SeedDifference(
        low=low, high=high, standard_error=standard_error, degrees_of_freedom=seeds - 1, p_value=p_value, **common
    )


def holm_adjust(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values for a family of tests (Holm 1979, Scand. J. Statist. 6(2):65).

    Args:
        p_values: {name: raw p} of the m tests of one family (e.g. every arm against the same baseline on the
            primary metric). NaN (no test, e.g. one seed) is left out of the family and stays NaN.

    With the raw p sorted ascending p_(1) <= ... <= p_(m), the adjusted p_(i) is
    max_{j <= i} min(1, (m - j + 1) p_(j)); rejecting where the adjusted p < alpha controls the family-wise error
    rate at alpha under any dependence between the tests (`statsmodels.stats.multitest.multipletests(method="holm")`
    gives the same numbers).
    """
    tested = {name: float(p) for name, p in p_values.items() if p is not None and math.isfinite(float(p))}
    for name, p in tested.items():
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p_values[{name!r}] must be in [0, 1], got {p}")
    adjusted = {name: math.nan for name in p_values}
    running = 0.0
    size = len(tested)
    for rank, (name, p) in enumerate(sorted(tested.items(), key=lambda item: item[1])):
        running = max(running, min(1.0, (size - rank) * p))
        adjusted[name] = running
    return adjusted


def verdict(difference: float, adjusted_p: float, alpha: float = 0.05, untested: str = ONE_SEED) -> str:
    """'better' / 'worse' when the (adjusted) p is below `alpha`, by the sign of the difference; else no
    detectable difference. Without a p there is no verdict: 'no interval (1 seed)', or 'no test (<why>)' with
    `untested` the reason `paired_seed_difference` gave."""
    _check_probability(alpha, "alpha")
    if adjusted_p is None or not math.isfinite(adjusted_p):
        return "no interval (1 seed)" if untested in ("", ONE_SEED) else f"no test ({untested})"
    if adjusted_p < alpha and difference != 0.0:
        return "better" if difference > 0.0 else "worse"
    return "no detectable difference"


# ----------------------------------------------------------------------------------------------------------
# Power, fixed before the runs


def pooled_standard_deviation(groups: Sequence[Sequence[float]]) -> float:
    """Pooled within-group standard deviation sqrt(sum_g (n_g - 1) s_g^2 / sum_g (n_g - 1)).

    Args:
        groups: one sequence of per-seed values per group (e.g. a pilot's per-seed differences of several arm
            pairs), each with at least 2 values.
    """
    if not groups:
        raise ValueError("groups must hold at least one group of per-seed values")
    squares, dof = 0.0, 0
    for index, group in enumerate(groups):
        values = _check_values(group, f"groups[{index}]")
        if values.size < 2:
            raise ValueError(f"groups[{index}] needs at least 2 values for a standard deviation, got {values.size}")
        squares += float(((values - values.mean()) ** 2).sum())
        dof += values.size - 1
    return math.sqrt(squares / dof)


def _check_design(seeds, comparisons, alpha, power=None) -> int:
    if isinstance(seeds, bool) or int(seeds) != seeds or seeds < 2:
        raise ValueError(f"seeds must be an integer >= 2 (one seed has no interval), got {seeds}")
    if isinstance(comparisons, bool) or int(comparisons) != comparisons or comparisons < 1:
        raise ValueError(f"comparisons must be an integer >= 1, got {comparisons}")
    _check_probability(alpha, "alpha")
    if power is not None:
        _check_probability(power, "power")
    return int(seeds) - 1


def paired_t_power(
    difference: float, seed_standard_deviation: float, seeds: int, comparisons: int = 1, alpha: float = 0.05
) -> float:
    """Exact power of the two-sided paired t-test over `seeds` seeds at level alpha / comparisons.

    The statistic T = mean(d) / (sd(d) / sqrt(S)) of S normal per-seed differences with mean `difference` and
    standard deviation `seed_standard_deviation` is noncentral t with S - 1 degrees of freedom and noncentrality
    difference * sqrt(S) / sd; the power is P(|T| > t_{1 - alpha'/2, S-1}) with alpha' = alpha / comparisons
    (`scipy.stats.nct`).

    Args:
        difference: the true mean difference (any sign).
        seed_standard_deviation: the standard deviation of a per-seed difference, > 0.
        seeds: S >= 2.
        comparisons: the size of the Holm family; its first (most demanding) threshold alpha / m is used.
    """
    if not (math.isfinite(seed_standard_deviation) and seed_standard_deviation > 0.0):
        raise ValueError(f"seed_standard_deviation must be a finite number > 0, got {seed_standard_deviation}")
    dof = _check_design(seeds, comparisons, alpha)
    critical = _t_quantile(1.0 - alpha / (2.0 * comparisons), dof)
    # symmetric in the sign of the difference: the far tail below -critical is the small term
    noncentrality = abs(float(difference)) * math.sqrt(seeds) / seed_standard_deviation
    far_tail = float(stats.nct.cdf(-critical, dof, noncentrality))
    if not math.isfinite(far_tail):  # scipy's nct returns NaN for some far tails, all below 1e-10
        far_tail = 0.0
    return float(stats.nct.sf(critical, dof, noncentrality)) + far_tail


def planned_minimum_detectable_difference(
    seed_standard_deviation: float, seeds: int, comparisons: int = 1, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Smallest true mean difference the paired t-test over `seeds` detects with probability `power`.

    Solves `paired_t_power(difference, sd, seeds, comparisons, alpha) = power` for the difference (noncentral t,
    exact; the quantile-sum formula (t_{1-alpha'/2} + t_power) sd / sqrt(S) is only its approximation, a few
    percent low at 3 seeds). alpha' = alpha / comparisons is Holm's first threshold, so the figure holds for every
    arm of a family of `comparisons` arms against one baseline (a conservative bound: later Holm steps are less
    demanding).

    Args:
        seed_standard_deviation: the standard deviation of the per-seed difference: from a pilot for the planned
            figure (fixed before the runs it is used for), from the drawn per-seed differences for the realised one.
        seeds: S >= 2.
        comparisons: arms tested against the baseline in one family.
    """
    if not (math.isfinite(seed_standard_deviation) and seed_standard_deviation >= 0.0):
        raise ValueError(f"seed_standard_deviation must be a finite number >= 0, got {seed_standard_deviation}")
    _check_design(seeds, comparisons, alpha, power)
    if seed_standard_deviation == 0.0:
        return 0.0

    def shortfall(effect: float) -> float:  # in units of sd; power grows with the difference
        return paired_t_power(effect, 1.0, seeds, comparisons, alpha) - power

    upper = 1.0
    while shortfall(upper) < 0.0:  # bracket the root by doubling (scipy's nct is accurate up to here)
        upper *= 2.0
        if upper > 2**12:
            raise ValueError(f"no difference below {upper} sd reaches power {power} with {seeds} seeds")
    effect = optimize.brentq(shortfall, 0.0, upper, xtol=1e-12, rtol=1e-12)
    return float(effect * seed_standard_deviation)


def interval_half_width(seed_standard_deviation: float, seeds: int, confidence: float = 0.95) -> float:
    """t_{(1+confidence)/2, S-1} * sd / sqrt(S): the half-width of a paired difference's interval over S = `seeds`
    seeds when the drawn standard deviation equals `seed_standard_deviation` (a design figure)."""
    _check_design(seeds, 1, 1.0 - confidence)
    return _t_quantile((1 + confidence) / 2, seeds - 1) * seed_standard_deviation / math.sqrt(seeds)


def seeds_for_half_width(
    seed_standard_deviation: float, half_width: float, confidence: float = 0.95, minimum: int = 2, maximum: int = 50
) -> int:
    """The fewest seeds S >= `minimum` with t_{(1+confidence)/2, S-1} * sd / sqrt(S) <= `half_width`.

    The interval of a paired difference over S seeds has that half-width when the drawn standard deviation equals
    the planned one (`seed_standard_deviation`, from a pilot): a design figure, fixed before the runs.

    Args:
        seed_standard_deviation: the standard deviation of a per-seed difference, >= 0.
        half_width: the wanted half-width of the interval, > 0.
        minimum, maximum: the range searched; a ValueError names `maximum` when no S in it is enough.
    """
    if not (math.isfinite(seed_standard_deviation) and seed_standard_deviation >= 0.0):
        raise ValueError(f"seed_standard_deviation must be a finite number >= 0, got {seed_standard_deviation}")
    if not (math.isfinite(half_width) and half_width > 0.0):
        raise ValueError(f"half_width must be a finite number > 0, got {half_width}")
    _check_probability(confidence, "confidence")
    if not 2 <= minimum <= maximum:
        raise ValueError(f"need 2 <= minimum <= maximum, got minimum {minimum}, maximum {maximum}")
    for seeds in range(minimum, maximum + 1):
        if interval_half_width(seed_standard_deviation, seeds, confidence) <= half_width:
            return seeds
    raise ValueError(
        f"no number of seeds up to maximum={maximum} gives a half-width <= {half_width} at sd {seed_standard_deviation}"
    )


def problem_level_standard_error(method_problems: Mapping[str, float], baseline_problems: Mapping[str, float]) -> float:
    """Standard error of one seed's method - baseline difference from the held-out problems alone.

    sd_p(a_p - b_p) / sqrt(P) over the P problems, with a_p, b_p the two runs' accuracy on problem p (mean over its
    samples and the validations the outcome averages). It measures how much of a within-seed difference is
    evaluation noise, to set beside the between-seed standard deviation the paired t uses.

    Args:
        method_problems, baseline_problems: {problem: accuracy}, the same P >= 2 problems in both.
    """
    if set(method_problems) != set(baseline_problems):
        missing = sorted(set(method_problems) ^ set(baseline_problems))[:3]
        raise ValueError(f"method_problems and baseline_problems must cover the same problems; differ on {missing}")
    keys = sorted(method_problems)
    differences = _check_values([method_problems[k] - baseline_problems[k] for k in keys], "problem differences")
    if differences.size < 2:
        raise ValueError(f"problem_level_standard_error needs at least 2 problems, got {differences.size}")
    return float(differences.std(ddof=1) / math.sqrt(differences.size))

"""Statistics of a paired comparison of two RL methods trained on the same seeds and validated on the same problems.

The comparison (`maspo_verl.compare`) trains every method once per seed; all methods of a seed start from the
same model, see the same data and the same validation prompts. A run's final validation is an array
`correct[problem, sample]` of 0/1 scores over a fixed held-out set of P problems with n samples each, problems
in the same order in every run. Stacking the S runs of one method gives `(seeds, problems, samples)`.

- `stack_runs`: the (seeds, problems, samples) array of one method from its runs' {problem: [score, ...]}.
- `mean_ci`: mean over seeds with a Student-t interval.
- `paired_difference`: method minus baseline in Avg@n (mean accuracy) and unbiased Pass@k, each with a
  confidence interval from the paired seeds x problems design, its standard error, the minimum detectable
  difference and a verdict ("better" / "worse" / "no detectable difference").
- `crossed_standard_error`: the standard error behind those intervals, for any (seeds, problems) grid.
- `minimum_detectable_difference`: (z_{1-alpha/2} + z_{power}) * SE, the smallest true difference a two-sided
  level-alpha test finds with the given power.
- `pilot_estimates`, `expected_standard_error`, `expected_half_width`, `smallest_design`: sizing the
  experiment (problems, samples, seeds) for a target half-width of the accuracy interval from a pilot.

The model behind all of it (a two-way crossed random-effects model; e.g. Searle, Casella & McCulloch,
"Variance Components", 1992, ch. 4): the per-(seed, problem) difference of the two methods' scores is
    d_sp = delta + u_s + g_p + w_sp + noise_sp
delta: the true difference; u_s: training randomness of the difference (`seed_variance`); g_p: the method's
effect differing by problem, the same in every seed since every seed validates the same problems
(`problem_variance`); w_sp: the rest of the seed x problem interaction (`interaction_variance`); noise_sp:
sampling noise of the 2 n responses (for accuracy 2 q / n, q = E[a (1 - a)] over the problems' accuracies a).
The estimate mean(d) has variance seed_variance / S + problem_variance / P + (interaction + noise) / (S P).

Pure numpy / scipy.stats functions, deterministic. Results are frozen dataclasses; `.as_dict()` gives
JSON-ready dicts (NaN and infinity -> None).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

from maspo_verl.evaluation.pass_at_k import pass_at_k

__all__ = [
    "VERDICTS",
    "Design",
    "MeanCI",
    "PairedComparison",
    "PairedEstimate",
    "PilotEstimates",
    "crossed_standard_error",
    "expected_half_width",
    "expected_standard_error",
    "mean_ci",
    "minimum_detectable_difference",
    "paired_difference",
    "per_problem_pass_at_k",
    "pilot_estimates",
    "smallest_design",
    "stack_runs",
    "verdict",
]

VERDICTS = ("better", "worse", "no detectable difference")


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    return value


def _check_probability(value: float, name: str) -> float:
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value}")
    return float(value)


def _check_non_negative(value: float, name: str) -> float:
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


def _check_count(value: int, name: str, minimum: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def _check_correct(name: str, correct) -> np.ndarray:
    """`correct` as a float array of shape (seeds, problems, samples) holding only 0 and 1."""
    array = np.asarray(correct)
    if array.ndim != 3:
        raise ValueError(f"{name} must have shape (seeds, problems, samples), got shape {array.shape}")
    if 0 in array.shape:
        raise ValueError(f"{name} must have at least one seed, problem and sample, got shape {array.shape}")
    if not (array.dtype == bool or np.issubdtype(array.dtype, np.number)):
        raise ValueError(f"{name} must hold 0/1 scores, got dtype {array.dtype}")
    array = array.astype(float)
    binary = (array == 0.0) | (array == 1.0)
    if not np.all(binary):
        raise ValueError(f"{name} must hold only 0/1 scores, found {array[~binary].flat[0]}")
    return array


def _check_pair(method_correct, baseline_correct) -> tuple[np.ndarray, np.ndarray]:
    method = _check_correct("method_correct", method_correct)
    baseline = _check_correct("baseline_correct", baseline_correct)
    if method.shape != baseline.shape:
        raise ValueError(
            "method_correct and baseline_correct must have the same (seeds, problems, samples) shape, "
            f"got method_correct {method.shape} and baseline_correct {baseline.shape}"
        )
    return method, baseline


def _t_quantile(probability: float, degrees_of_freedom: float) -> float:
    return float(stats.t.ppf(probability, degrees_of_freedom))


def stack_runs(
    runs: Sequence[Mapping[str, Sequence[float]]], problems: Sequence[str] | None = None, name: str = "runs"
) -> tuple[np.ndarray, list[str]]:
    """One method's runs as a 0/1 array (seeds, problems, samples), problems aligned by key, and that key order.

    Args:
        runs: one {problem: [score per sample]} per seed, in seed order. Key problems by something every run
            shares, e.g. the prompt text: verl's validation `uid`s are fresh per run.
        problems: the problem order to use (pass the order returned for the baseline so both methods line up);
            default: the first run's keys, sorted.
        name: how errors refer to `runs`.

    Raises ValueError naming the run (`name[i]`) whose problems or sample counts differ.
    """
    if not runs:
        raise ValueError(f"{name} must hold at least one run")
    order = sorted(runs[0]) if problems is None else list(problems)
    if not order:
        raise ValueError(f"{name}[0] has no problems")
    expected = set(order)
    rows = []
    for index, run in enumerate(runs):
        if set(run) != expected:
            missing, extra = sorted(expected - set(run)), sorted(set(run) - expected)
            raise ValueError(
                f"{name}[{index}] does not hold the same problems: missing {missing[:3]} ({len(missing)}), "
                f"extra {extra[:3]} ({len(extra)})"
            )
        rows.append([list(run[problem]) for problem in order])
    samples = len(rows[0][0])
    for index, row in enumerate(rows):
        for problem, scores in zip(order, row):
            if len(scores) != samples:
                raise ValueError(
                    f"{name}[{index}] has {len(scores)} samples of problem {problem!r}, {name}[0] has {samples} of "
                    f"{order[0]!r}: every run needs the same number of samples per problem"
                )
    return _check_correct(name, np.array(rows, dtype=float)), order


# ----------------------------------------------------------------------------------------------------------
# Per method: mean over seeds


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
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"values must be a non-empty 1-D sequence (one value per seed), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"values must be finite, got {array.tolist()}")
    count = int(array.size)
    mean = float(array.mean())
    if count == 1:
        return MeanCI(mean, math.nan, math.nan, math.nan, math.nan, 1, confidence)
    std = float(array.std(ddof=1))
    half_width = _t_quantile(0.5 + confidence / 2, count - 1) * std / math.sqrt(count)
    return MeanCI(mean, mean - half_width, mean + half_width, half_width, std, count, confidence)


# ----------------------------------------------------------------------------------------------------------
# Method against baseline: paired differences


def per_problem_pass_at_k(correct, k: int, name: str = "correct") -> np.ndarray:
    """Unbiased pass@k of every (seed, problem): shape (seeds, problems, samples) -> (seeds, problems).

    1 - C(n-c, k) / C(n, k) with c correct of n samples (Chen et al. 2021, arXiv 2107.03374, Eq. 1), from
    `maspo_verl.evaluation.pass_at_k.pass_at_k`, evaluated once per possible c and looked up.
    """
    array = _check_correct(name, correct)
    samples = array.shape[2]
    if isinstance(k, bool) or int(k) != k or not 1 <= k <= samples:
        raise ValueError(f"k must be an integer in [1, samples={samples}] of {name}, got {k}")
    by_count = np.array([pass_at_k(samples, count, int(k)) for count in range(samples + 1)])
    return by_count[array.sum(axis=2).astype(int)]


def _variance_terms(grid: np.ndarray) -> list[tuple[float, float]]:
    """The two estimated terms of Var(mean(grid)) for a (seeds, problems) grid, each with its degrees of freedom.

    Two-way ANOVA without replication (mean squares MS_seeds, MS_problems, MS_residual; Searle et al. ch. 4):
    - seed term MS_seeds / (S P) = (std over seeds of the seed means)^2 / S, with S - 1 degrees of freedom:
      exactly the paired t-test over seeds. It holds training randomness and, through each seed's mean over
      problems, the sampling noise and the seed x problem interaction;
    - problem term max(0, MS_problems - MS_residual) / (S P) (before truncation unbiased for
      problem_variance / P), with P - 1 degrees of freedom: what a t-test over seeds misses, since all seeds
      share the P problems and a method effect that differs by problem moves every seed's mean alike.
    With one seed only the spread over problems is left: MS_problems / P with P - 1 degrees of freedom, an
    interval for that training run (evaluation randomness), not for another seed.
    """
    num_seeds, num_problems = grid.shape
    grand = grid.mean()
    problem_means = grid.mean(axis=0)
    mean_square_problems = num_seeds * float(((problem_means - grand) ** 2).sum()) / (num_problems - 1)
    if num_seeds == 1:
        return [(mean_square_problems / num_problems, num_problems - 1.0)]
    seed_means = grid.mean(axis=1)
    mean_square_seeds = num_problems * float(((seed_means - grand) ** 2).sum()) / (num_seeds - 1)
    residual = grid - seed_means[:, None] - problem_means[None, :] + grand
    mean_square_residual = float((residual**2).sum()) / ((num_seeds - 1) * (num_problems - 1))
    cells = num_seeds * num_problems
    return [
        (mean_square_seeds / cells, num_seeds - 1.0),
        (max(0.0, mean_square_problems - mean_square_residual) / cells, num_problems - 1.0),
    ]


def _satterthwaite(terms: list[tuple[float, float]]) -> tuple[float, float]:
    """(sum of the variance terms, Welch-Satterthwaite degrees of freedom of the sum); infinity when the sum is 0."""
    variance = sum(term for term, _ in terms)
    if variance <= 0.0:
        return 0.0, math.inf
    return variance, variance**2 / sum(term**2 / dof for term, dof in terms if term > 0.0)


def crossed_standard_error(grid) -> tuple[float, float]:
    """Standard error of the mean of a (seeds, problems) grid of per-cell scores, and its degrees of freedom.

    The rows are seeds, the columns the same problems in every seed (a crossed design). The variance is the
    sum of a seed term and a problem term (see `_variance_terms`), the degrees of freedom those of
    Welch-Satterthwaite for the sum (Satterthwaite 1946, Biometrics Bulletin 2(6):110). For a paired
    comparison pass the per-cell differences method - baseline.
    """
    values = np.asarray(grid, dtype=float)
    if values.ndim != 2 or values.shape[1] < 2 or not np.all(np.isfinite(values)):
        raise ValueError(f"grid must be a finite (seeds, problems) array with >= 2 problems, got shape {values.shape}")
    variance, dof = _satterthwaite(_variance_terms(values))
    return math.sqrt(variance), dof


def verdict(low: float, high: float) -> str:
    """'better' when the interval of method - baseline lies above 0, 'worse' below 0, else no detectable difference."""
    if low > 0.0:
        return "better"
    if high < 0.0:
        return "worse"
    return "no detectable difference"


def minimum_detectable_difference(
    standard_error: float, alpha: float = 0.05, power: float = 0.8, degrees_of_freedom: float = math.inf
) -> float:
    """Smallest true difference a two-sided level-`alpha` test detects with probability `power`.

    (z_{1-alpha/2} + z_{power}) * SE (2.80 SE at the defaults, scipy.stats.norm); with finite
    `degrees_of_freedom` Student-t quantiles replace the normal ones (5.36 SE with 2 degrees of freedom). A true
    difference this large lands the estimate beyond the critical value `power` of the time; a paper-sized
    effect (e.g. 3 points) below it could not reliably have been seen by the experiment.
    """
    standard_error = _check_non_negative(standard_error, "standard_error")
    _check_probability(alpha, "alpha")
    _check_probability(power, "power")
    if math.isinf(degrees_of_freedom):
        factor = stats.norm.ppf(1.0 - alpha / 2.0) + stats.norm.ppf(power)
    else:
        factor = _t_quantile(1.0 - alpha / 2.0, degrees_of_freedom) + _t_quantile(power, degrees_of_freedom)
    return float(factor * standard_error)


@dataclass(frozen=True)
class PairedEstimate:
    """One metric of a paired comparison; `difference` = method - baseline, [low, high] its confidence interval."""

    metric: str
    method: float
    baseline: float
    difference: float
    low: float
    high: float
    standard_error: float
    degrees_of_freedom: float
    minimum_detectable_difference: float
    verdict: str

    def as_dict(self) -> dict:
        return _json_safe(asdict(self))


@dataclass(frozen=True)
class PairedComparison:
    """Method against baseline in Avg@n and Pass@k over the same seeds and problems.

    `covers_training_randomness` is False with one seed: the interval then holds for that training run only
    (evaluation randomness: which problems, which samples), not for a rerun with another seed.
    """

    accuracy: PairedEstimate
    pass_at_k: PairedEstimate
    k: int
    num_seeds: int
    num_problems: int
    num_samples: int
    confidence: float
    paired: bool
    covers_training_randomness: bool

    def as_dict(self) -> dict:
        return _json_safe(asdict(self))


def _estimate(
    metric: str, method_grid: np.ndarray, baseline_grid: np.ndarray, confidence: float, paired: bool
) -> PairedEstimate:
    if paired:
        terms = _variance_terms(method_grid - baseline_grid)
    else:
        terms = _variance_terms(method_grid) + _variance_terms(baseline_grid)
    variance, dof = _satterthwaite(terms)
    standard_error = math.sqrt(variance)
    method_mean, baseline_mean = float(method_grid.mean()), float(baseline_grid.mean())
    difference = method_mean - baseline_mean
    half_width = _t_quantile(0.5 + confidence / 2.0, dof) * standard_error
    low, high = difference - half_width, difference + half_width
    return PairedEstimate(
        metric=metric,
        method=method_mean,
        baseline=baseline_mean,
        difference=difference,
        low=low,
        high=high,
        standard_error=standard_error,
        degrees_of_freedom=dof,
        minimum_detectable_difference=minimum_detectable_difference(standard_error, 1.0 - confidence, 0.8, dof),
        verdict=verdict(low, high),
    )


def paired_difference(
    method_correct, baseline_correct, k: int, confidence: float = 0.95, paired: bool = True
) -> PairedComparison:
    """Method - baseline in Avg@n and unbiased Pass@k with t-intervals of the paired seeds x problems design.

    Args:
        method_correct, baseline_correct: 0/1 (or bool) arrays of shape (seeds, problems, samples): the final
            validation of every seed's run, the same seeds and the same problems in the same order for both.
        k: k of Pass@k, 1 <= k <= samples (per problem 1 - C(n-c, k) / C(n, k), Chen et al. 2021 Eq. 1).
        confidence: two-sided coverage of the intervals.
        paired: False treats the two methods' runs as independent samples (variance of each method's mean,
            summed): only to show what pairing gains, it is not the analysis of this design.

    Returns a `PairedComparison`; per metric the difference of the means over seeds and problems,
    difference +- t_{(1+confidence)/2, dof} * SE with SE and dof from `crossed_standard_error` of the
    per-(seed, problem) differences (each problem's n samples reduced to its accuracy or pass@k), the
    minimum detectable difference at that SE and dof, and the verdict of the interval against 0.

    Why this interval. Training randomness has a seed as its unit, evaluation randomness a problem (its n
    samples stay inside its score). Pairing: the differences are taken per seed and per problem, so what a
    seed or a problem does to both methods (a lucky start, an easy problem) cancels and the interval is about
    the method's effect and its interactions only. The design is crossed (every seed validates the same
    problems), so the variance has a seed term (the paired t-test over seeds; S - 1 degrees of freedom, which
    keeps the interval honest with 3 seeds) and a problem term (a method effect that differs by problem,
    shared by all seeds), combined by Welch-Satterthwaite. On simulated experiments with a known truth
    (tests/test_statistics.py; 200 experiments x 5 simulation seeds per regime) the 95% interval covered the
    truth in 91-96% of them on average (single runs 87-97%) in regimes dominated by sampling noise, by
    training randomness (S = 3, 5), by problem effects, and with one seed. Two bootstraps measured alongside
    did worse: resampling seeds and problems (the problems shared by the drawn seeds: Owen 2007, Ann. Appl.
    Stat. 1(1):246; commit 0b2b18c has it) covered 99-100% where sampling noise dominates (it counts that noise
    up to three times) and only 82-88% with 3 seeds where training randomness dominates (a bootstrap over 3
    values has no t-tails); resampling problems independently within each seed covered 76-79% where problem
    effects dominate. The price of honesty with few seeds is width: the seed term's t quantile is 12.7 with 2 seeds,
    4.30 with 3, 2.78 with 5, 2.26 with 10 (`smallest_design` sizes for it).
    """
    method, baseline = _check_pair(method_correct, baseline_correct)
    num_seeds, num_problems, num_samples = method.shape
    if num_problems < 2:
        raise ValueError(f"method_correct needs at least 2 problems for an interval, got shape {method.shape}")
    confidence = _check_probability(confidence, "confidence")
    accuracy = _estimate(f"avg@{num_samples}", method.mean(axis=2), baseline.mean(axis=2), confidence, bool(paired))
    pass_k = _estimate(
        f"pass@{int(k)}",
        per_problem_pass_at_k(method, k, "method_correct"),
        per_problem_pass_at_k(baseline, k, "baseline_correct"),
        confidence,
        bool(paired),
    )
    return PairedComparison(
        accuracy=accuracy,
        pass_at_k=pass_k,
        k=int(k),
        num_seeds=num_seeds,
        num_problems=num_problems,
        num_samples=num_samples,
        confidence=confidence,
        paired=bool(paired),
        covers_training_randomness=num_seeds > 1,
    )


# ----------------------------------------------------------------------------------------------------------
# Sizing the experiment (accuracy only; the model in the module docstring)


@dataclass(frozen=True)
class PilotEstimates:
    """The sizing model's parameters estimated from a pilot (see the module docstring)."""

    mean_accuracy: float
    accuracy_spread: float
    seed_variance: float
    problem_variance: float
    interaction_variance: float
    num_seeds: int
    num_problems: int
    num_samples: int

    def as_dict(self) -> dict:
        return _json_safe(asdict(self))

    def components(self) -> dict:
        """The keyword arguments `expected_standard_error`, `expected_half_width` and `smallest_design` take."""
        return {
            "mean_accuracy": self.mean_accuracy,
            "accuracy_spread": self.accuracy_spread,
            "seed_variance": self.seed_variance,
            "problem_variance": self.problem_variance,
            "interaction_variance": self.interaction_variance,
        }


def pilot_estimates(method_correct, baseline_correct) -> PilotEstimates:
    """Method-of-moments estimates of the sizing model from pilot arrays (seeds, problems, samples).

    Two-way ANOVA of the per-cell accuracy differences (expected mean squares: seeds P seed_variance + r,
    problems S problem_variance + r, residual r = interaction_variance + sampling noise), the sampling noise
    of a cell estimated without bias from its own samples, [a_m (1 - a_m) + a_b (1 - a_b)] / (n - 1), and
    accuracy_spread from the same per-cell Bernoulli variances: spread^2 = mean (1 - mean) - E[a (1 - a)].
    Variances are truncated at 0, which biases a component upward when it is small against its own sampling
    error (conservative for sizing). Needs n >= 2; with one seed seed_variance is NaN (not identifiable) and
    problem_variance holds problem + interaction variance.
    """
    method, baseline = _check_pair(method_correct, baseline_correct)
    num_seeds, num_problems, num_samples = method.shape
    if num_samples < 2 or num_problems < 2:
        raise ValueError(f"method_correct needs >= 2 problems and >= 2 samples per problem, got shape {method.shape}")
    cell_means = np.stack([method.mean(axis=2), baseline.mean(axis=2)])  # (2, S, P)
    bernoulli = cell_means * (1.0 - cell_means) * num_samples / (num_samples - 1)  # unbiased for a (1 - a)
    mean_accuracy = float(cell_means.mean())
    spread_squared = max(0.0, mean_accuracy * (1.0 - mean_accuracy) - float(bernoulli.mean()))
    noise = float(bernoulli.sum(axis=0).mean()) / num_samples

    difference = cell_means[0] - cell_means[1]
    grand = difference.mean()
    seed_means, problem_means = difference.mean(axis=1), difference.mean(axis=0)
    if num_seeds > 1:
        residual = difference - seed_means[:, None] - problem_means[None, :] + grand
        mean_square_residual = float((residual**2).sum()) / ((num_seeds - 1) * (num_problems - 1))
        mean_square_seeds = num_problems * float(((seed_means - grand) ** 2).sum()) / (num_seeds - 1)
        seed_variance = max(0.0, (mean_square_seeds - mean_square_residual) / num_problems)
        interaction_variance = max(0.0, mean_square_residual - noise)
    else:
        mean_square_residual, seed_variance, interaction_variance = noise, math.nan, 0.0
    mean_square_problems = num_seeds * float(((problem_means - grand) ** 2).sum()) / (num_problems - 1)
    return PilotEstimates(
        mean_accuracy=mean_accuracy,
        accuracy_spread=math.sqrt(spread_squared),
        seed_variance=seed_variance,
        problem_variance=max(0.0, (mean_square_problems - mean_square_residual) / num_seeds),
        interaction_variance=interaction_variance,
        num_seeds=num_seeds,
        num_problems=num_problems,
        num_samples=num_samples,
    )


def expected_standard_error(
    num_problems: int,
    samples_per_problem: int,
    num_seeds: int,
    *,
    mean_accuracy: float,
    accuracy_spread: float,
    seed_variance: float,
    problem_variance: float = 0.0,
    interaction_variance: float = 0.0,
) -> tuple[float, float]:
    """(standard error, degrees of freedom) `paired_difference` is expected to give for the accuracy of a design.

    The expected values of its two variance terms under the model: seed term seed_variance / S + r / (S P)
    with S - 1 degrees of freedom, problem term problem_variance / P with P - 1, r = interaction_variance +
    2 q / n, q = mean_accuracy (1 - mean_accuracy) - accuracy_spread^2 (both methods assumed to share the
    problems' accuracy distribution: they start from the same model). One seed: (problem_variance + r) / P
    with P - 1 degrees of freedom, without seed_variance, as that interval is.
    """
    num_problems = _check_count(num_problems, "num_problems", 2)
    samples_per_problem = _check_count(samples_per_problem, "samples_per_problem", 1)
    num_seeds = _check_count(num_seeds, "num_seeds", 1)
    if not 0.0 <= mean_accuracy <= 1.0:
        raise ValueError(f"mean_accuracy must be in [0, 1], got {mean_accuracy}")
    bernoulli = mean_accuracy * (1.0 - mean_accuracy) - _check_non_negative(accuracy_spread, "accuracy_spread") ** 2
    if bernoulli < -1e-12:
        raise ValueError(
            f"accuracy_spread must be <= sqrt(mean_accuracy * (1 - mean_accuracy)) = "
            f"{math.sqrt(mean_accuracy * (1 - mean_accuracy)):.4f}, got {accuracy_spread}"
        )
    seed_variance = _check_non_negative(seed_variance, "seed_variance")
    problem_variance = _check_non_negative(problem_variance, "problem_variance")
    noise = 2.0 * max(bernoulli, 0.0) / samples_per_problem
    residual = _check_non_negative(interaction_variance, "interaction_variance") + noise
    if num_seeds == 1:
        terms = [((problem_variance + residual) / num_problems, num_problems - 1.0)]
    else:
        terms = [
            (seed_variance / num_seeds + residual / (num_seeds * num_problems), num_seeds - 1.0),
            (problem_variance / num_problems, num_problems - 1.0),
        ]
    variance, dof = _satterthwaite(terms)
    return math.sqrt(variance), dof


def expected_half_width(
    num_problems: int,
    samples_per_problem: int,
    num_seeds: int,
    *,
    mean_accuracy: float,
    accuracy_spread: float,
    seed_variance: float,
    problem_variance: float = 0.0,
    interaction_variance: float = 0.0,
    confidence: float = 0.95,
) -> float:
    """Half-width of `paired_difference`'s accuracy interval at the expected variance: t_{(1+confidence)/2, dof} * SE.

    SE and dof from `expected_standard_error` (parameters as there; estimate them with `pilot_estimates`).
    With few seeds a run's own half-width scatters widely around this (its seed term has S - 1 degrees of
    freedom).
    """
    confidence = _check_probability(confidence, "confidence")
    standard_error, dof = expected_standard_error(
        num_problems,
        samples_per_problem,
        num_seeds,
        mean_accuracy=mean_accuracy,
        accuracy_spread=accuracy_spread,
        seed_variance=seed_variance,
        problem_variance=problem_variance,
        interaction_variance=interaction_variance,
    )
    return _t_quantile(0.5 + confidence / 2.0, dof) * standard_error


@dataclass(frozen=True)
class Design:
    """A design (seeds, held-out problems, samples per problem) and the accuracy half-width it is expected to give."""

    num_seeds: int
    num_problems: int
    samples_per_problem: int
    expected_half_width: float

    def as_dict(self) -> dict:
        return _json_safe(asdict(self))


def smallest_design(
    target_half_width: float,
    *,
    mean_accuracy: float,
    accuracy_spread: float,
    seed_variance: float,
    problem_variance: float = 0.0,
    interaction_variance: float = 0.0,
    confidence: float = 0.95,
    min_seeds: int = 2,
    max_seeds: int = 10,
    max_problems: int = 100_000,
    samples_options: Sequence[int] = (1, 2, 4, 8, 16, 32),
) -> Design:
    """The cheapest design whose `expected_half_width` is <= target_half_width.

    Cheapest: fewest seeds first (a seed is one training run per method, the dominant cost), then fewest
    validation responses problems x samples, then more problems for fewer samples (problems also shrink the
    problem term). `max_problems` is the number of distinct held-out problems the task can supply.
    `min_seeds` defaults to 2 because one seed gives an interval without training randomness. Raises
    ValueError when no design within the bounds reaches the target.
    """
    target_half_width = _check_non_negative(target_half_width, "target_half_width")
    if target_half_width == 0.0:
        raise ValueError("target_half_width must be > 0, got 0")
    min_seeds = _check_count(min_seeds, "min_seeds", 1)
    max_seeds = _check_count(max_seeds, "max_seeds", min_seeds)
    max_problems = _check_count(max_problems, "max_problems", 2)
    options = sorted({_check_count(samples, "samples_options", 1) for samples in samples_options})
    if not options:
        raise ValueError("samples_options must name at least one number of samples per problem")
    components = dict(
        mean_accuracy=mean_accuracy,
        accuracy_spread=accuracy_spread,
        seed_variance=seed_variance,
        problem_variance=problem_variance,
        interaction_variance=interaction_variance,
        confidence=confidence,
    )

    def meets(seeds: int, problems: int, samples: int) -> bool:
        return expected_half_width(problems, samples, seeds, **components) <= target_half_width

    for seeds in range(min_seeds, max_seeds + 1):
        candidates = []
        for samples in options:
            if not meets(seeds, max_problems, samples):
                continue
            # More problems narrow the interval: bisect for the fewest that suffice, then step up in case the
            # Satterthwaite degrees of freedom made the half-width not quite monotone.
            low, high = 2, max_problems
            while low < high:
                middle = (low + high) // 2
                low, high = (low, middle) if meets(seeds, middle, samples) else (middle + 1, high)
            while not meets(seeds, low, samples):
                low += 1
            candidates.append((low * samples, samples, low))
        if candidates:
            _, samples, problems = min(candidates)
            return Design(seeds, problems, samples, expected_half_width(problems, samples, seeds, **components))
    best = expected_half_width(max_problems, options[-1], max_seeds, **components)
    raise ValueError(
        f"target_half_width {target_half_width} is out of reach within max_seeds={max_seeds}, "
        f"max_problems={max_problems}, samples_options={tuple(options)}: the best expected half-width is {best:.4f}"
    )

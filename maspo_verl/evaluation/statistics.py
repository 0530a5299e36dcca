"""Statistics of a paired comparison of two RL methods trained on the same seeds and validated on the same problems.

The comparison (`maspo_verl.compare`) trains every method once per seed; all methods of a seed start from the
same model, see the same data and the same validation prompts. A run's final validation is an array
`correct[problem, sample]` of 0/1 scores over a fixed held-out set of P problems with n samples each, problems
in the same order in every run. Stacking the runs of one method gives `(seeds, problems, samples)`.

- `mean_ci`: mean over seeds with a Student-t interval.
- `paired_difference`: method minus baseline in Avg@n (mean accuracy) and unbiased Pass@k, each with a paired
  bootstrap interval over seeds and problems, its standard error, the minimum detectable difference and a
  verdict ("better" / "worse" / "no detectable difference").
- `minimum_detectable_difference`: (z_{1-alpha/2} + z_{power}) * SE, the smallest true difference a
  two-sided test at level alpha finds with the given power.
- `pilot_estimates`, `expected_half_width`, `smallest_design`: sizing the experiment (problems, samples,
  seeds) for a target interval half-width from a pilot run.

Pure numpy / scipy.stats functions; every random draw comes from `numpy.random.default_rng(seed)`.
Results are frozen dataclasses; `.as_dict()` gives JSON-ready dicts (NaN -> None).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

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
    "expected_bootstrap_variance",
    "expected_half_width",
    "mean_ci",
    "minimum_detectable_difference",
    "paired_difference",
    "per_problem_pass_at_k",
    "pilot_estimates",
    "smallest_design",
    "verdict",
]

VERDICTS = ("better", "worse", "no detectable difference")

# Replicates per vectorised bootstrap chunk are capped so a chunk's (replicates, problems) weights stay ~16 MB.
_CHUNK_CELLS = 2_000_000


def _json_safe(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    return value


def _check_confidence(confidence: float, name: str = "confidence") -> float:
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {confidence}")
    return float(confidence)


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
    if not np.all((array == 0.0) | (array == 1.0)):
        bad = array[~((array == 0.0) | (array == 1.0))].flat[0]
        raise ValueError(f"{name} must hold only 0/1 scores, found {bad}")
    return array


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
    confidence = _check_confidence(confidence)
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
    half_width = float(stats.t.ppf(0.5 + confidence / 2, df=count - 1) * std / math.sqrt(count))
    return MeanCI(mean, mean - half_width, mean + half_width, half_width, std, count, confidence)


# ----------------------------------------------------------------------------------------------------------
# Method against baseline: paired differences


def per_problem_pass_at_k(correct, k: int, name: str = "correct") -> np.ndarray:
    """Unbiased pass@k of every (seed, problem): shape (seeds, problems, samples) -> (seeds, problems).

    1 - C(n-c, k) / C(n, k) with c correct of n samples (Chen et al. 2021, arXiv 2107.03374, Eq. 1), from
    `maspo_verl.evaluation.pass_at_k.pass_at_k`; evaluated once per possible c and looked up.
    """
    array = _check_correct(name, correct)
    samples = array.shape[2]
    if isinstance(k, bool) or int(k) != k or not 1 <= k <= samples:
        raise ValueError(f"k must be an integer in [1, samples={samples}] of {name}, got {k}")
    by_count = np.array([pass_at_k(samples, count, int(k)) for count in range(samples + 1)])
    return by_count[array.sum(axis=2).astype(int)]


def verdict(low: float, high: float) -> str:
    """'better' when the interval of method - baseline lies above 0, 'worse' below 0, else no detectable difference."""
    if low > 0.0:
        return "better"
    if high < 0.0:
        return "worse"
    return "no detectable difference"


def minimum_detectable_difference(standard_error: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true difference a two-sided level-`alpha` test detects with probability `power`.

    (z_{1-alpha/2} + z_{power}) * SE (normal approximation; 2.80 * SE at the defaults): a difference this
    large puts the estimate's sampling distribution 80% beyond the 5% critical value. A paper-sized effect
    (e.g. 3 points) smaller than this could not reliably have been seen by the experiment.
    """
    standard_error = _check_non_negative(standard_error, "standard_error")
    _check_confidence(alpha, "alpha")
    _check_confidence(power, "power")
    return float((stats.norm.ppf(1.0 - alpha / 2.0) + stats.norm.ppf(power)) * standard_error)


@dataclass(frozen=True)
class PairedEstimate:
    """One metric of a paired comparison; `difference` = method - baseline, [low, high] its bootstrap interval."""

    metric: str
    method: float
    baseline: float
    difference: float
    low: float
    high: float
    standard_error: float
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
    n_resamples: int
    seed: int
    paired: bool
    covers_training_randomness: bool

    def as_dict(self) -> dict:
        return _json_safe(asdict(self))


def _bootstrap_weights(rng: np.random.Generator, count: int, replicates: int) -> np.ndarray:
    """How often each of `count` units is drawn in each of `replicates` resamples with replacement: (replicates, count)."""
    return rng.multinomial(count, np.full(count, 1.0 / count), size=replicates).astype(float)


def _bootstrap_mean_differences(
    method_values: np.ndarray, baseline_values: np.ndarray, n_resamples: int, rng: np.random.Generator, paired: bool
) -> np.ndarray:
    """Bootstrap replicates of mean(method) - mean(baseline) for stacked metrics (metrics, seeds, problems) -> (metrics, B).

    A replicate weights cell (s, p) by W_s * V_p, the number of times seed s and problem p were drawn, so
    its mean equals averaging the resampled seeds x resampled problems grid. Paired: one W and one V per
    replicate for both methods; unpaired: independent draws per method.
    """
    num_seeds, num_problems = method_values.shape[1:]
    chunk = max(1, _CHUNK_CELLS // max(num_problems, num_seeds))
    replicates = []
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        seed_weights = _bootstrap_weights(rng, num_seeds, size)
        problem_weights = _bootstrap_weights(rng, num_problems, size)
        if paired:
            grid = method_values - baseline_values
            replicates.append(np.einsum("bs,msp,bp->mb", seed_weights, grid, problem_weights))
            continue
        baseline_seed_weights = _bootstrap_weights(rng, num_seeds, size)
        baseline_problem_weights = _bootstrap_weights(rng, num_problems, size)
        replicates.append(
            np.einsum("bs,msp,bp->mb", seed_weights, method_values, problem_weights)
            - np.einsum("bs,msp,bp->mb", baseline_seed_weights, baseline_values, baseline_problem_weights)
        )
    return np.concatenate(replicates, axis=1) / (num_seeds * num_problems)


def paired_difference(
    method_correct,
    baseline_correct,
    k: int,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
    paired: bool = True,
) -> PairedComparison:
    """Method - baseline in Avg@n and unbiased Pass@k, with paired bootstrap intervals and a verdict.

    Args:
        method_correct, baseline_correct: 0/1 (or bool) arrays of shape (seeds, problems, samples): the final
            validation of every seed's run, the same seeds and the same problems in the same order for both.
        k: k of Pass@k, 1 <= k <= samples (per problem 1 - C(n-c, k) / C(n, k), Chen et al. 2021 Eq. 1).
        confidence: two-sided coverage of the percentile intervals.
        n_resamples: bootstrap replicates.
        seed: seed of the bootstrap's `numpy.random.default_rng`; the result is a function of the inputs and it.
        paired: False resamples seeds and problems independently for the two methods: only to show what
            pairing gains, it is not the analysis of this design.

    Returns a `PairedComparison`; per metric the point difference of the means over seeds and problems, the
    2.5/97.5% percentiles of the bootstrap replicates, their standard deviation as the standard error, the
    minimum detectable difference from it, and the verdict of the interval against 0.

    Bootstrap scheme. The two sources of randomness are training (a seed: initial sampling, data order) and
    evaluation (which problems of the task are held out, which responses get sampled). Seeds are therefore
    the resampling units of training randomness and problems those of evaluation randomness; the n samples
    of a problem stay together inside its per-problem score (accuracy or pass@k), so their binomial noise is
    carried by the problem. A replicate draws S seeds and P problems with replacement and averages the
    per-(seed, problem) differences over that grid. Pairing: both methods are evaluated on the same drawn
    seeds and the same drawn problems, so what a seed or a problem does to both (an easy problem, a lucky
    start) cancels in the difference and only the method's effect and its interactions remain. The drawn
    problems are shared by all drawn seeds because the design is crossed, not nested: the same P problems are
    validated in every seed, so a method that helps on some problems helps there in every seed, and
    resampling problems independently per seed would average that problem-level variation away (a nested
    scheme covered the truth in 77-79% of simulated experiments where it dominated, this one in 96-97%).
    This two-way "pigeonhole" bootstrap (Owen 2007, Ann. Appl. Stat. 1(1):246) is conservative: the
    seed x problem noise enters its variance up to three times (`expected_bootstrap_variance`), so where
    sampling noise dominates it covers ~99% instead of 95% and is up to ~1.5x wider than necessary. With few
    seeds it is the other way: the seed term is shrunk by (S-1)/S and t-tails are ignored, so where training
    randomness dominates coverage is below nominal (measured ~92% at S=3). With one seed there is no seed
    term: the interval is about evaluation randomness only (`covers_training_randomness` = False).
    """
    method = _check_correct("method_correct", method_correct)
    baseline = _check_correct("baseline_correct", baseline_correct)
    if method.shape != baseline.shape:
        raise ValueError(
            "method_correct and baseline_correct must have the same (seeds, problems, samples) shape, "
            f"got method_correct {method.shape} and baseline_correct {baseline.shape}"
        )
    num_seeds, num_problems, num_samples = method.shape
    if num_problems < 2:
        raise ValueError(f"method_correct needs at least 2 problems to resample, got shape {method.shape}")
    confidence = _check_confidence(confidence)
    n_resamples = _check_count(n_resamples, "n_resamples", 100)
    method_values = np.stack([method.mean(axis=2), per_problem_pass_at_k(method, k, "method_correct")])
    baseline_values = np.stack([baseline.mean(axis=2), per_problem_pass_at_k(baseline, k, "baseline_correct")])
    replicates = _bootstrap_mean_differences(
        method_values, baseline_values, n_resamples, np.random.default_rng(seed), bool(paired)
    )
    tail = (1.0 - confidence) / 2.0
    estimates = []
    for index, metric in enumerate((f"avg@{num_samples}", f"pass@{int(k)}")):
        method_mean = float(method_values[index].mean())
        baseline_mean = float(baseline_values[index].mean())
        low, high = (float(bound) for bound in np.quantile(replicates[index], [tail, 1.0 - tail]))
        standard_error = float(replicates[index].std(ddof=1))
        estimates.append(
            PairedEstimate(
                metric=metric,
                method=method_mean,
                baseline=baseline_mean,
                difference=method_mean - baseline_mean,
                low=low,
                high=high,
                standard_error=standard_error,
                minimum_detectable_difference=minimum_detectable_difference(standard_error),
                verdict=verdict(low, high),
            )
        )
    return PairedComparison(
        accuracy=estimates[0],
        pass_at_k=estimates[1],
        k=int(k),
        num_seeds=num_seeds,
        num_problems=num_problems,
        num_samples=num_samples,
        confidence=confidence,
        n_resamples=n_resamples,
        seed=int(seed),
        paired=bool(paired),
        covers_training_randomness=num_seeds > 1,
    )


# ----------------------------------------------------------------------------------------------------------
# Sizing the experiment
#
# Model of the per-(seed, problem) accuracy difference d_sp = mean of the method's n samples - mean of the
# baseline's n samples (a two-way crossed random-effects model):
#     d_sp = delta + u_s + g_p + w_sp + noise_sp
# u_s: training randomness of the difference (variance seed_variance), g_p: the method's effect differing by
# problem, the same in every seed (problem_variance), w_sp: the rest of the seed x problem interaction
# (interaction_variance), noise_sp: binomial sampling noise of the 2n responses, variance 2 q / n with
# q = E[a (1 - a)] = mean_accuracy (1 - mean_accuracy) - accuracy_spread^2 over the problems' accuracies a
# (both methods are assumed to have the same accuracy distribution; they start from the same model).


@dataclass(frozen=True)
class PilotEstimates:
    """Variance components of the paired accuracy difference estimated from a pilot (see the model above)."""

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
        """The keyword arguments `expected_half_width` and `smallest_design` take."""
        return {
            "mean_accuracy": self.mean_accuracy,
            "accuracy_spread": self.accuracy_spread,
            "seed_variance": self.seed_variance,
            "problem_variance": self.problem_variance,
            "interaction_variance": self.interaction_variance,
        }


def pilot_estimates(method_correct, baseline_correct) -> PilotEstimates:
    """Method-of-moments estimates of the sizing model's parameters from pilot arrays (seeds, problems, samples).

    Two-way ANOVA of d_sp without replication (expected mean squares: seeds P*seed_variance + r, problems
    S*problem_variance + r, residual r = interaction_variance + sampling noise), with the sampling noise of a
    cell estimated without bias from its own samples, [a_m (1 - a_m) + a_b (1 - a_b)] / (n - 1), and every
    variance truncated at 0. Needs n >= 2 samples; with one seed seed_variance is NaN (not identifiable) and
    problem_variance holds problem + interaction variance (conservative for the problem term).
    """
    method = _check_correct("method_correct", method_correct)
    baseline = _check_correct("baseline_correct", baseline_correct)
    if method.shape != baseline.shape:
        raise ValueError(
            "method_correct and baseline_correct must have the same (seeds, problems, samples) shape, "
            f"got method_correct {method.shape} and baseline_correct {baseline.shape}"
        )
    num_seeds, num_problems, num_samples = method.shape
    if num_samples < 2 or num_problems < 2:
        raise ValueError(f"method_correct needs >= 2 problems and >= 2 samples per problem, got shape {method.shape}")
    cell_means = np.stack([method.mean(axis=2), baseline.mean(axis=2)])  # (2, S, P)
    # n / (n - 1) * a (1 - a) is unbiased for the Bernoulli variance of a cell.
    bernoulli = cell_means * (1.0 - cell_means) * num_samples / (num_samples - 1)
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
    problem_variance = max(0.0, (mean_square_problems - mean_square_residual) / num_seeds)
    return PilotEstimates(
        mean_accuracy=mean_accuracy,
        accuracy_spread=math.sqrt(spread_squared),
        seed_variance=seed_variance,
        problem_variance=problem_variance,
        interaction_variance=interaction_variance,
        num_seeds=num_seeds,
        num_problems=num_problems,
        num_samples=num_samples,
    )


def expected_bootstrap_variance(
    num_problems: int,
    samples_per_problem: int,
    num_seeds: int,
    *,
    mean_accuracy: float,
    accuracy_spread: float,
    seed_variance: float,
    problem_variance: float = 0.0,
    interaction_variance: float = 0.0,
) -> float:
    """Expected variance of `paired_difference`'s accuracy bootstrap under the sizing model (S seeds, P problems, n samples).

    A replicate's deviation from the estimate splits into a seed part, a problem part and a seed x problem
    part, uncorrelated, with variances SS_seeds / S^2, SS_problems / P^2 and SS_residual / (S P)^2 (two-way
    ANOVA sums of squares of d_sp). Their expectations give, with r = interaction_variance + 2 q / n,
        (S-1)/S^2 (seed_variance + r/P) + (P-1)/P^2 (problem_variance + r/S) + (S-1)(P-1)/(S P)^2 r,
    against the true variance of the estimate seed_variance/S + problem_variance/P + r/(S P).
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
    residual = _check_non_negative(interaction_variance, "interaction_variance") + 2.0 * max(bernoulli, 0.0) / samples_per_problem
    seeds, problems = num_seeds, num_problems
    return (
        (seeds - 1) / seeds**2 * (seed_variance + residual / problems)
        + (problems - 1) / problems**2 * (problem_variance + residual / seeds)
        + (seeds - 1) * (problems - 1) / (seeds * problems) ** 2 * residual
    )


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
    """Half-width of `paired_difference`'s accuracy interval to expect for a design (normal approximation).

    z_{(1+confidence)/2} * sqrt(`expected_bootstrap_variance`); parameters as there (estimate them with
    `pilot_estimates`). For one seed the seed variance does not enter: that interval ignores training randomness.
    """
    confidence = _check_confidence(confidence)
    variance = expected_bootstrap_variance(
        num_problems,
        samples_per_problem,
        num_seeds,
        mean_accuracy=mean_accuracy,
        accuracy_spread=accuracy_spread,
        seed_variance=seed_variance,
        problem_variance=problem_variance,
        interaction_variance=interaction_variance,
    )
    return float(stats.norm.ppf(0.5 + confidence / 2.0) * math.sqrt(variance))


@dataclass(frozen=True)
class Design:
    """A design (seeds, held-out problems, samples per problem) and the accuracy-interval half-width it is expected to give."""

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
    """The cheapest design whose expected accuracy half-width (`expected_half_width`) is <= target_half_width.

    Cheapest: fewest seeds first (each seed is one training run per method, the dominant cost), then fewest
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

    def half_width(seeds: int, problems: int, samples: int) -> float:
        return expected_half_width(problems, samples, seeds, **components)

    for seeds in range(min_seeds, max_seeds + 1):
        candidates = []
        for samples in options:
            if half_width(seeds, max_problems, samples) > target_half_width:
                continue
            # The half-width decreases in the number of problems (P >= 2): bisect for the fewest that suffice.
            low, high = 2, max_problems
            while low < high:
                middle = (low + high) // 2
                if half_width(seeds, middle, samples) <= target_half_width:
                    high = middle
                else:
                    low = middle + 1
            candidates.append((low * samples, samples, low))
        if candidates:
            _, samples, problems = min(candidates)
            return Design(seeds, problems, samples, half_width(seeds, problems, samples))
    best = half_width(max_seeds, max_problems, options[-1])
    raise ValueError(
        f"target_half_width {target_half_width} is out of reach within max_seeds={max_seeds}, "
        f"max_problems={max_problems}, samples_options={tuple(options)}: the best expected half-width is {best:.4f}"
    )

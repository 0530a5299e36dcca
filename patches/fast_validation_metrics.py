"""Opt-in patch: verl's validation bootstrap (best@N / worst@N) vectorized, with the same numbers.

After every validation verl's trainer calls `process_validation_metrics`
(verl/trainer/ppo/metric_utils.py), which for each prompt, each reward key and each N in
2, 4, ..., n calls `bootstrap_metric(values, N, [np.max, np.min], n_bootstrap=1000, seed=42)`.
That function draws its 1000 x N indices in one numpy call, then reduces the 1000 subsets one by
one in a Python loop over an object array. With 45 problems x 16 samples and the four keys the
tiny task's reward reports (score, acc, acc_success_only, reward) that is 1.4 million Python-level
reductions: about 2 s of the trainer process per validation on a 2-core box, a tenth of a
`full`-preset run's wall time.

`apply_fast_validation_metrics()` rebinds `verl.trainer.ppo.metric_utils.bootstrap_metric` (the
name `process_validation_metrics` looks up at call time; the only rebinding) to
`fast_bootstrap_metric`: the same `np.random.seed(seed)` and the same `np.random.choice` call, so
the same indices and the same global numpy RNG state afterwards, then the max / min of all subsets
in one vectorized reduction over float64. Every reduced value is one of the data's values, so the
1000-value arrays, their `np.mean` and `np.std`, are bit-identical to verl's. Anything else (other
reduce functions such as the majority vote, non-numeric or non-finite values, integers beyond
float64's exact range) goes to verl's own `bootstrap_metric` unchanged.

Enable with `MASPO_FAST_VALIDATION_METRICS=1` (the CPU backend, maspo_verl/sandbox/tiny/cpu_backend.sh,
exports it; maspo-verl's `verl.plugins` entry point then applies it in every process that imports
verl), or call `apply_fast_validation_metrics()` in the process that runs verl's trainer.
`remove_fast_validation_metrics()` puts verl's function back.
"""

from __future__ import annotations

import logging
import numbers
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from maspo_verl.patches import CPU_BACKEND_VERL_VERSIONS, require_verl_version

__all__ = [
    "ENABLE_ENVIRONMENT_VARIABLE",
    "SUPPORTED_VERL_VERSIONS",
    "apply_fast_validation_metrics",
    "enabled_by_environment",
    "fast_bootstrap_metric",
    "fast_validation_metrics_applied",
    "remove_fast_validation_metrics",
]

logger = logging.getLogger(__name__)

SUPPORTED_VERL_VERSIONS = CPU_BACKEND_VERL_VERSIONS
ENABLE_ENVIRONMENT_VARIABLE = "MASPO_FAST_VALIDATION_METRICS"
_FLOAT64_EXACT_INTEGER = 2**53
_VECTORIZED_REDUCTIONS = (np.max, np.min)  # each also takes axis=, so it reduces all subsets in one call

_verl_bootstrap_metric: Callable | None = None  # verl's function while the patch is applied


def _exact_float64_values(data: list[Any]) -> np.ndarray | None:
    """`data` as a 1-d float64 array when that conversion is exact and finite, else None."""
    for value in data:
        if isinstance(value, (bool, np.bool_)):
            continue
        if isinstance(value, numbers.Integral):
            if abs(int(value)) > _FLOAT64_EXACT_INTEGER:
                return None
        elif not isinstance(value, (float, np.floating)) or isinstance(value, np.longdouble):
            return None
    values = np.asarray(data, dtype=np.float64)
    if values.ndim != 1 or not np.isfinite(values).all():
        return None
    return values


def fast_bootstrap_metric(
    data: list[Any],
    subset_size: int,
    reduce_fns: list[Callable[[np.ndarray], float]],
    n_bootstrap: int = 1000,
    seed: int = 42,
) -> list[tuple[float, float]]:
    """verl's `bootstrap_metric`, with the reductions np.max / np.min of numeric data vectorized.

    Args:
        data: (n,) the values of one prompt's samples for one reward key.
        subset_size: N, the size of each bootstrap subset.
        reduce_fns: reductions of a subset; vectorized when every one is np.max or np.min.
        n_bootstrap: number of subsets.
        seed: seeds numpy's global RNG, as verl does.

    Returns:
        [(mean, std)] over the `n_bootstrap` reduced subsets, one pair per reduce function: the
        same floats as verl's function returns (and numpy's global RNG left in the same state).
    """
    vectorized = all(any(function is reduction for reduction in _VECTORIZED_REDUCTIONS) for function in reduce_fns)
    values = _exact_float64_values(data) if vectorized else None
    if values is None:
        return _verl_function()(data, subset_size, reduce_fns, n_bootstrap, seed)
    np.random.seed(seed)
    bootstrap_indices = np.random.choice(len(values), size=(n_bootstrap, subset_size), replace=True)
    subsets = values[bootstrap_indices]
    return [(float(np.mean(reduced)), float(np.std(reduced))) for reduced in (fn(subsets, axis=1) for fn in reduce_fns)]


def _verl_function() -> Callable:
    """verl's own `bootstrap_metric`, whether or not the patch is applied."""
    if _verl_bootstrap_metric is not None:
        return _verl_bootstrap_metric
    import verl.trainer.ppo.metric_utils as metric_utils

    return metric_utils.bootstrap_metric


def enabled_by_environment() -> bool:
    """Whether ENABLE_ENVIRONMENT_VARIABLE asks for the patch: "1" yes; "0" or unset no; anything
    else no, with a warning (not an error: verl swallows a plugin's exceptions at debug level)."""
    value = os.environ.get(ENABLE_ENVIRONMENT_VARIABLE, "").strip()
    if value not in ("", "0", "1"):
        logger.warning("%s must be 1 (on) or 0 / unset (off), got %r: left off", ENABLE_ENVIRONMENT_VARIABLE, value)
    return value == "1"


def fast_validation_metrics_applied() -> bool:
    """True while verl's `bootstrap_metric` is rebound in this process."""
    return _verl_bootstrap_metric is not None


def apply_fast_validation_metrics() -> None:
    """Rebind `verl.trainer.ppo.metric_utils.bootstrap_metric` to `fast_bootstrap_metric` (idempotent).

    Raises:
        UnsupportedVerlVersion: the installed verl is not one this patch was tested with.
    """
    global _verl_bootstrap_metric
    version = require_verl_version("apply_fast_validation_metrics", SUPPORTED_VERL_VERSIONS)
    import verl.trainer.ppo.metric_utils as metric_utils

    if _verl_bootstrap_metric is None:
        _verl_bootstrap_metric = metric_utils.bootstrap_metric
        metric_utils.bootstrap_metric = fast_bootstrap_metric
        logger.info("maspo_verl: verl %s bootstrap_metric vectorized for np.max / np.min (same numbers)", version)


def remove_fast_validation_metrics() -> None:
    """Give verl its own `bootstrap_metric` back (no-op when the patch is not applied)."""
    global _verl_bootstrap_metric
    if _verl_bootstrap_metric is None:
        return
    import verl.trainer.ppo.metric_utils as metric_utils

    if metric_utils.bootstrap_metric is fast_bootstrap_metric:
        metric_utils.bootstrap_metric = _verl_bootstrap_metric
    _verl_bootstrap_metric = None

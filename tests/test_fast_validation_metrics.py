"""patches/fast_validation_metrics.py against verl's own bootstrap: the same numbers, the same RNG state.

verl's `process_validation_metrics` runs for real, once with verl's `bootstrap_metric` and once
with the patch applied; every metric must be bit-identical.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from functools import partial

import numpy as np
import pytest
import verl.trainer.ppo.metric_utils as metric_utils

import maspo_verl.integration.versions
from maspo_verl.patches import UnsupportedVerlVersion
from maspo_verl.patches.fast_validation_metrics import (
    apply_fast_validation_metrics,
    fast_bootstrap_metric,
    fast_validation_metrics_applied,
    remove_fast_validation_metrics,
)

pytestmark = pytest.mark.kind("unit")

VERL_BOOTSTRAP_METRIC = metric_utils.bootstrap_metric


@pytest.fixture
def patched():
    apply_fast_validation_metrics()
    yield
    remove_fast_validation_metrics()


def _validation(samples_per_prompt: int, prompts: int, seed: int = 0, with_pred: bool = False):
    """(data_sources, uids, infos) shaped like a validation of the tiny task's reward (score/acc/reward)."""
    rng = random.Random(seed)
    count = samples_per_prompt * prompts
    infos = {
        "score": [float(rng.random() < 0.3) for _ in range(count)],
        "acc": [rng.random() < 0.3 for _ in range(count)],
        "reward": [rng.gauss(0.0, 1.0) for _ in range(count)],
        "length": [rng.randrange(1, 9) for _ in range(count)],
    }
    if with_pred:
        infos["pred"] = [str(rng.randrange(3)) for _ in range(count)]
    sources = [("a" if i % 3 else "b") for i in range(count)]
    uids = [f"uid{i // samples_per_prompt}" for i in range(count)]
    return sources, uids, infos


def _plain(tree):
    return {key: _plain(value) if isinstance(value, dict) else value for key, value in tree.items()}


def _metrics_and_rng_state(sources, uids, infos):
    metrics = _plain(metric_utils.process_validation_metrics(sources, uids, infos))
    return metrics, np.random.get_state()


def _assert_same_rng_state(first, second):
    assert first[0] == second[0] and all(np.array_equal(a, b) for a, b in zip(first[1:], second[1:], strict=True))


@pytest.mark.parametrize("samples_per_prompt, with_pred", [(16, False), (5, False), (4, True), (1, False)])
def test_validation_metrics_are_bit_identical_to_verls(samples_per_prompt, with_pred):
    data = _validation(samples_per_prompt, prompts=12, with_pred=with_pred)
    expected, expected_state = _metrics_and_rng_state(*data)
    apply_fast_validation_metrics()
    try:
        assert metric_utils.bootstrap_metric is fast_bootstrap_metric
        got, got_state = _metrics_and_rng_state(*data)
    finally:
        remove_fast_validation_metrics()
    assert got == expected  # exact float equality, every key
    _assert_same_rng_state(got_state, expected_state)
    if samples_per_prompt > 2:
        assert any(key.startswith("best@") for key in expected["a"]["score"])  # the bootstrap did run


@pytest.mark.parametrize(
    "data",
    [
        [0.1, 0.7, 0.7, -3.0, 2.5],
        [True, False, False, True],
        [1, 5, 2, 2**53],
        [np.float32(0.3), np.float64(1.25), np.int64(3), np.bool_(True)],
        [4.0],
    ],
    ids=["floats", "bools", "ints", "numpy-scalars", "single"],
)
@pytest.mark.parametrize("subset_size", [1, 3, 8])
def test_vectorized_reductions_equal_verls(data, subset_size):
    for reduce_fns in ([np.max, np.min], [np.min], [np.max]):
        expected = VERL_BOOTSTRAP_METRIC(list(data), subset_size, reduce_fns, n_bootstrap=200, seed=7)
        after_verl = np.random.random()
        got = fast_bootstrap_metric(list(data), subset_size, reduce_fns, n_bootstrap=200, seed=7)
        assert got == expected
        assert np.random.random() == after_verl  # the global RNG continues as after verl's function


@pytest.mark.parametrize(
    "data, reduce_fns",
    [
        ([1.0, float("nan"), 0.0], [np.max, np.min]),  # NaN: verl's object-array max decides, not numpy's
        ([1.0, float("inf"), 0.0], [np.max, np.min]),
        ([2**60, 1, 3], [np.max, np.min]),  # beyond float64's exact integers
        ([0.2, 0.9, 0.4], [np.mean]),  # a reduction the patch does not vectorize
        (
            [{"val": 1.0, "pred": "a"}, {"val": 0.0, "pred": "b"}, {"val": 1.0, "pred": "a"}],
            [partial(metric_utils.calc_maj_val, vote_key="pred", val_key="val")],
        ),
    ],
    ids=["nan", "inf", "huge-int", "mean", "majority-vote"],
)
def test_everything_else_goes_to_verls_function(data, reduce_fns):
    expected = VERL_BOOTSTRAP_METRIC(list(data), 2, reduce_fns, n_bootstrap=50, seed=3)
    got = fast_bootstrap_metric(list(data), 2, reduce_fns, n_bootstrap=50, seed=3)
    np.testing.assert_equal(got, expected)


def test_empty_data_raises_like_verls():
    with pytest.raises(ValueError):
        VERL_BOOTSTRAP_METRIC([], 1, [np.max], n_bootstrap=10)
    with pytest.raises(ValueError):
        fast_bootstrap_metric([], 1, [np.max], n_bootstrap=10)


def test_apply_is_idempotent_and_remove_restores_verls_function():
    assert not fast_validation_metrics_applied()
    for attempt in ("first", "again"):  # apply -> remove -> apply works
        apply_fast_validation_metrics()
        apply_fast_validation_metrics()
        try:
            assert fast_validation_metrics_applied() and metric_utils.bootstrap_metric is fast_bootstrap_metric, attempt
        finally:
            remove_fast_validation_metrics()
        assert not fast_validation_metrics_applied() and metric_utils.bootstrap_metric is VERL_BOOTSTRAP_METRIC
        remove_fast_validation_metrics()  # no-op
        assert metric_utils.bootstrap_metric is VERL_BOOTSTRAP_METRIC


def test_unsupported_verl_version_is_refused(monkeypatch):
    monkeypatch.setattr(maspo_verl.integration.versions, "installed_verl_version", lambda: "0.8.0")
    with pytest.raises(
        UnsupportedVerlVersion, match=r"apply_fast_validation_metrics was written and tested for verl 0\.9\.0"
    ):
        apply_fast_validation_metrics()
    assert metric_utils.bootstrap_metric is VERL_BOOTSTRAP_METRIC


PROBE = """
import json
import verl
import verl.trainer.ppo.metric_utils as metric_utils
print(json.dumps({"function": metric_utils.bootstrap_metric.__module__ + "." + metric_utils.bootstrap_metric.__name__}))
"""


def _probe(value: str | None) -> subprocess.CompletedProcess:
    environment = {
        key: item for key, item in os.environ.items() if key not in ("VERL_PLATFORM", "MASPO_FAST_VALIDATION_METRICS")
    }
    if value is not None:
        environment["MASPO_FAST_VALIDATION_METRICS"] = value
    return subprocess.run([sys.executable, "-c", PROBE], env=environment, capture_output=True, text=True, timeout=120)


@pytest.mark.verl
@pytest.mark.timeout(300)
def test_the_plugin_applies_it_only_when_the_environment_variable_is_1():
    functions = {}
    for value in (None, "0", "1"):
        result = _probe(value)
        assert result.returncode == 0, result.stderr[-2000:]
        functions[value] = json.loads(result.stdout.strip().splitlines()[-1])["function"]
    assert functions[None] == functions["0"] == "verl.trainer.ppo.metric_utils.bootstrap_metric"
    assert functions["1"] == "maspo_verl.patches.fast_validation_metrics.fast_bootstrap_metric"

    unclear = _probe("yes")
    assert unclear.returncode == 0, unclear.stderr[-2000:]
    assert "MASPO_FAST_VALIDATION_METRICS must be 1 (on) or 0 / unset (off), got 'yes': left off" in unclear.stderr
    assert json.loads(unclear.stdout.strip().splitlines()[-1])["function"] == functions[None]

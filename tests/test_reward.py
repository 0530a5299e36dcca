"""maspo_verl.experiments.reward: the math-verify scorer verl calls as custom_reward_function."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from maspo_verl.experiments import reward
from maspo_verl.experiments.reward import compute_score

pytestmark = pytest.mark.kind("unit")

RIGHT = [
    ("aime24", "<think>maybe \\boxed{5}?</think>So the answer is $\\boxed{27}$.", "27"),
    ("math500", "Thus $\\boxed{\\frac{1}{2}}$.", "\\frac12"),
    ("math500", "Thus $\\boxed{0.5}$.", "\\frac{1}{2}"),
    ("amc23", "\\boxed{27}", "27.0"),
    ("olympiadbench", "We get \\boxed{x=2}.", ["$2$"]),
    ("minerva", "The answer is \\boxed{(1,2)}", "(1, 2)"),
]
WRONG = [
    ("aime24", "<think>\\boxed{27}</think>So the answer is $\\boxed{26}$.", "27"),
    ("math500", "Thus $\\boxed{3}$.", "\\frac{1}{2}"),
    ("math500", "I could not solve it.", "7"),
]
GARBAGE = [None, b"\xff\xfe\\boxed{", 12.5, "\\boxed{", "}}}{{{\\frac{", "\x00" * 10_000, "\\boxed{" * 5000, ""]


@pytest.mark.parametrize(("data_source", "response", "truth"), RIGHT)
def test_right_answers_score_one(data_source, response, truth):
    result = compute_score(data_source, response, truth)
    assert result["score"] == result["acc"] == 1.0
    assert result["data_source"] == data_source and result["pred"]


@pytest.mark.parametrize(("data_source", "response", "truth"), WRONG)
def test_wrong_answers_score_zero(data_source, response, truth):
    result = compute_score(data_source, response, truth)
    assert result["score"] == result["acc"] == 0.0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("response", GARBAGE)
def test_garbage_output_scores_zero_without_raising(response):
    started = time.monotonic()
    result = compute_score("math500", response, "1")
    assert result == {"score": 0.0, "acc": 0.0, "pred": result["pred"], "data_source": "math500"}
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("truth", [None, "", [], "   "])
def test_missing_ground_truth_scores_zero(truth):
    assert compute_score("math500", "\\boxed{1}", truth)["score"] == 0.0


def test_the_result_has_the_same_keys_and_types_every_time():
    results = [compute_score(*case) for case in RIGHT[:2] + WRONG[:1]] + [compute_score("x", None, "1")]
    assert {tuple(sorted(r)) for r in results} == {("acc", "data_source", "pred", "score")}
    assert all(isinstance(r["score"], float) and isinstance(r["acc"], float) for r in results)


def test_a_failing_check_scores_zero(monkeypatch):
    def stuck(*args):
        raise FutureTimeout()

    monkeypatch.setattr(reward, "_checked", stuck)
    assert compute_score("aime24", "\\boxed{27}", "27")["score"] == 0.0


@pytest.mark.timeout(180)
def test_threads_use_a_helper_process_and_its_deadline(monkeypatch):
    """verl's reward loop calls compute_score from executor threads, where math-verify's signal timeouts
    cannot work: the check runs in a helper process whose answer is awaited with a deadline."""
    cases = [RIGHT[0], WRONG[0], RIGHT[1]]
    with ThreadPoolExecutor(max_workers=2) as threads:
        scores = list(threads.map(lambda case: compute_score(*case)["score"], cases))
    assert scores == [1.0, 0.0, 1.0]
    assert reward._pool is not None

    # A helper that does not answer in time: the response scores 0 and only that helper is replaced.
    # The check itself is slow (3 s against a 0.5 s deadline): a deadline of 0 raced a fast helper
    # on a loaded box (the answer could arrive before the first poll).
    monkeypatch.setattr(reward, "verify_answer", slow_verify)
    monkeypatch.setattr(reward, "_worker_deadline", lambda timeout_seconds: 0.5)
    with ThreadPoolExecutor(max_workers=1) as threads:
        assert threads.submit(compute_score, *RIGHT[0]).result()["score"] == 0.0
    assert reward._pool is not None


def slow_verify(answer_text, ground_truths, timeout_seconds):
    """Runs in the helper process: math-verify's answer, 3 s late."""
    return hang_or_verify(answer_text, ground_truths, timeout_seconds, sleep_seconds=3.0)


def hang_or_verify(answer_text, ground_truths, timeout_seconds, sleep_seconds=0.0):
    """Runs in the helper process: "HANG" never returns, otherwise sleep, then math-verify's answer."""
    if answer_text == "HANG":
        time.sleep(3600)
    time.sleep(sleep_seconds)
    return reward.verify_answer(answer_text, ground_truths, timeout_seconds)


@pytest.mark.timeout(400)
def test_a_hanging_check_costs_only_itself_and_queueing_is_not_its_deadline():
    pool = reward._HelperPool(size=2)
    try:
        with ThreadPoolExecutor(max_workers=4) as threads:
            list(
                threads.map(lambda _: pool.run(hang_or_verify, ("\\boxed{1}", ["1"], 5), 120.0), range(2))
            )  # start both helpers
            started = time.monotonic()
            hanging = threads.submit(pool.run, hang_or_verify, ("HANG", ["1"], 5), 3.0)
            time.sleep(0.5)
            others = [
                threads.submit(pool.run, hang_or_verify, (f"\\boxed{{{k}}}", [str(k)], 5, 0.5), 20.0) for k in (2, 3, 4)
            ]
            assert [future.result(timeout=300) for future in others] == [(1.0, "2"), (1.0, "3"), (1.0, "4")]
            with pytest.raises(TimeoutError):
                hanging.result(timeout=300)
            assert time.monotonic() - started < 60
        # one helper, a 2 s check ahead in the queue: a 1.5 s deadline starts when the helper takes the check
        single = reward._HelperPool(size=1)
        try:
            with ThreadPoolExecutor(max_workers=2) as threads:
                single.run(hang_or_verify, ("\\boxed{1}", ["1"], 5), 120.0)
                first = threads.submit(single.run, hang_or_verify, ("\\boxed{5}", ["5"], 5, 2.0), 10.0)
                time.sleep(0.2)
                second = threads.submit(single.run, hang_or_verify, ("\\boxed{6}", ["7"], 5), 1.5)
                assert first.result(timeout=60) == (1.0, "5")
                assert second.result(timeout=60) == (0.0, "6")
        finally:
            single.shutdown()
    finally:
        pool.shutdown()


@pytest.mark.verl
def test_verl_loads_it_as_the_configured_custom_reward_function():
    from verl.trainer.ppo.reward import get_custom_reward_fn

    config = OmegaConf.load(Path(__file__).resolve().parents[1] / "configs" / "experiment" / "math_rl.yaml")
    score = get_custom_reward_fn(config)
    assert score(data_source="aime24", solution_str="\\boxed{27}", ground_truth="27", extra_info={})["acc"] == 1.0


@pytest.mark.verl
def test_verl_turns_acc_into_mean_at_n_validation_metrics():
    """With `acc` in the result verl logs val-core/<data_source>/acc/mean@N (the paper's Avg@N)."""
    from verl.trainer.ppo.metric_utils import process_validation_metrics

    responses = ["\\boxed{27}", "\\boxed{26}", "\\boxed{27}", "no idea"]
    results = [compute_score("aime24", text, "27") for text in responses]
    infos = {key: [r[key] for r in results] for key in results[0]}
    metrics = process_validation_metrics(["aime24"] * 4, ["problem"] * 4, infos)
    assert metrics["aime24"]["acc"]["mean@4"] == pytest.approx(0.5)
    assert "maj@4/mean" in metrics["aime24"]["acc"]  # from `pred`
    assert "data_source" not in metrics["aime24"]  # strings are skipped by verl


def test_missing_math_verify_is_an_error_not_a_silent_zero_reward(monkeypatch):
    import sys

    from maspo_verl.experiments.reward import compute_score

    monkeypatch.setitem(sys.modules, "math_verify", None)  # import math_verify now raises ImportError
    with pytest.raises(ImportError, match="math-verify"):
        compute_score("aime24", "so the answer is \\boxed{27}", "27")

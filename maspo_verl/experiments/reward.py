"""Rule-based math reward for the MASPO experiments, as a verl `custom_reward_function`.

    reward.custom_reward_function.path=pkg://maspo_verl.experiments.reward
    reward.custom_reward_function.name=compute_score

(set by configs/experiment/math_rl.yaml). The answer check is math-verify's (`pip install
maspo-verl[math]`): the last \\boxed{} answer of the response, after the reasoning's `</think>` when
there is one, is compared symbolically with the ground truth. The result carries `acc`, so verl logs
`val-core/<data_source>/acc/mean@32` (the paper's Avg@32), plus `pred` (verl's maj@N) and
`data_source` (kept in verl's validation dumps, read by `maspo_verl.experiments.evaluation`).

Never raises on model output: garbage, empty or non-string responses score 0. Each check is bounded
in time: math-verify's own timeouts in the main thread; in the threads verl's reward loop uses
(where math-verify's signal-based timeouts cannot work) the check runs in one of two helper
processes, each serving one check at a time. The deadline starts when a helper takes the check
(not while it waits for a free one), and a check that overruns kills only its own helper: the
checks running in the other helper are unaffected.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["compute_score", "extract_final_answer_text", "verify_answer"]

logger = logging.getLogger(__name__)

THINK_END = "</think>"
# The final answer sits at the end of a response; long reasoning traces only slow the parser down.
MAX_ANSWER_CHARS = 4000
DEFAULT_TIMEOUT_SECONDS = 10.0

_pool: _HelperPool | None = None
_pool_lock = threading.Lock()


def extract_final_answer_text(solution: Any, max_chars: int = MAX_ANSWER_CHARS) -> str:
    """The part of a response that holds its final answer: after the last `</think>`, at most `max_chars`."""
    if solution is None:
        return ""
    if isinstance(solution, bytes):
        solution = solution.decode("utf-8", errors="replace")
    text = solution if isinstance(solution, str) else str(solution)
    if THINK_END in text:
        text = text.rsplit(THINK_END, 1)[1]
    return text[-max_chars:]


def _ground_truths(ground_truth: Any) -> list[str]:
    """One or more accepted answers as strings (OlympiadBench rows may list several)."""
    if ground_truth is None:
        return []
    if isinstance(ground_truth, str | bytes) or not isinstance(ground_truth, Iterable):
        values = [ground_truth]
    else:
        values = list(ground_truth)
    answers = []
    for value in values:
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        text = str(value).strip()
        if text:
            answers.append(text)
    return answers


def verify_answer(answer_text: str, ground_truths: list[str], timeout_seconds: float | None) -> tuple[float, str]:
    """(1.0 if the answer in `answer_text` equals one of `ground_truths` else 0.0, the extracted answer).

    `timeout_seconds` bounds math-verify's parsing and comparison with its signal-based timeouts, which
    work only in a process's main thread; pass None elsewhere.
    """
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    seconds = None if timeout_seconds is None else max(1, int(timeout_seconds))
    predicted = parse(
        answer_text,
        extraction_config=[LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()],
        parsing_timeout=seconds,
    )
    if not predicted:
        return 0.0, ""
    prediction_text = str(predicted[-1])
    for truth in ground_truths:
        # A bare answer such as "\frac{1}{2}" or "27" parses as LaTeX once boxed.
        gold = parse(
            "\\boxed{" + truth + "}",
            extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
            parsing_timeout=seconds,
        )
        if gold and verify(gold, predicted, timeout_seconds=seconds):
            return 1.0, prediction_text
    return 0.0, prediction_text


class _Helper:
    """One spawned process that answers checks one at a time over its own pipe.

    It imports math-verify before it reports ready, so a check's deadline never pays for that.
    """

    def __init__(self, startup_seconds: float = 300.0):
        context = multiprocessing.get_context("spawn")  # forking a threaded process can deadlock
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_helper_main, args=(child,), daemon=True, name="maspo-reward-check")
        self.process.start()
        child.close()
        if not self.connection.poll(startup_seconds):
            self.kill()
            raise TimeoutError(f"the math-verify helper process did not start within {startup_seconds:.0f} s")
        self.connection.recv()  # "ready"

    def run(self, function: Callable, arguments: tuple, deadline_seconds: float):
        self.connection.send((function, arguments))
        if not self.connection.poll(deadline_seconds):
            raise TimeoutError(f"answer check still running after {deadline_seconds:.0f} s")
        status, value = self.connection.recv()  # EOFError if the helper died
        if status == "error":
            raise RuntimeError(value)
        return value

    def kill(self) -> None:
        self.process.terminate()  # a check stuck in sympy ignores everything gentler
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.connection.close()


def _helper_main(connection) -> None:
    import math_verify  # noqa: F401  (imported once, before the first deadline starts)

    connection.send("ready")
    while True:
        try:
            function, arguments = connection.recv()
        except EOFError:  # the parent went away
            return
        try:
            connection.send(("ok", function(*arguments)))
        except Exception as error:  # noqa: BLE001  (sent back and re-raised in the caller)
            connection.send(("error", f"{type(error).__name__}: {error}"))


class _HelperPool:
    """Up to `size` helpers; a thread takes an idle one (waiting for one is not counted in its
    deadline) and a helper whose check overruns is killed alone, so a stuck check costs only itself."""

    def __init__(self, size: int = 2):
        self.size = size
        self._idle: queue.SimpleQueue[_Helper] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._live = 0

    def run(self, function: Callable, arguments: tuple, deadline_seconds: float):
        helper = self._acquire()
        try:
            result = helper.run(function, arguments, deadline_seconds)
        except (TimeoutError, EOFError, OSError):
            self._discard(helper)
            raise
        except BaseException:
            self._idle.put(helper)  # the check raised; the helper itself is fine
            raise
        self._idle.put(helper)
        return result

    def _acquire(self) -> _Helper:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            start_one = self._live < self.size
            if start_one:
                self._live += 1
        if start_one:
            try:
                return _Helper()
            except BaseException:
                with self._lock:
                    self._live -= 1
                raise
        return self._idle.get()

    def _discard(self, helper: _Helper) -> None:
        helper.kill()
        with self._lock:
            self._live -= 1

    def shutdown(self) -> None:
        while True:
            try:
                helper = self._idle.get_nowait()
            except queue.Empty:
                return
            helper.kill()


def _worker_pool() -> _HelperPool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = _HelperPool(size=2)
        return _pool


@atexit.register
def _shutdown_pool() -> None:
    if _pool is not None:
        _pool.shutdown()


def _worker_deadline(timeout_seconds: float) -> float:
    """How long a check may run in its helper: math-verify's own bounds (parse the response, parse
    and compare each answer) and a margin; start-up and queueing are not counted."""
    return 3 * timeout_seconds + 5


def _checked(answer_text: str, ground_truths: list[str], timeout_seconds: float) -> tuple[float, str]:
    if threading.current_thread() is threading.main_thread():
        return verify_answer(answer_text, ground_truths, timeout_seconds)
    # verl's reward loop calls from worker threads, where math-verify's signal timeouts cannot work.
    return _worker_pool().run(
        verify_answer, (answer_text, ground_truths, timeout_seconds), _worker_deadline(timeout_seconds)
    )


def compute_score(
    data_source: Any,
    solution_str: Any,
    ground_truth: Any,
    extra_info: Any = None,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    **unused: Any,
) -> dict[str, Any]:
    """verl reward function: {"score", "acc", "pred", "data_source"} for one response.

    Args:
        data_source: the row's `data_source` (e.g. "aime24"); echoed back for the evaluation dumps.
        solution_str: the decoded response (any type; non-strings are converted, None is empty).
        ground_truth: `reward_model.ground_truth`: a string, or a list of accepted answers.
        extra_info: the row's `extra_info` (unused).
        timeout_seconds: bound for math-verify's parsing and comparison (reward_kwargs can set it).

    Returns:
        score and acc are 1.0 for a correct final answer, else 0.0; pred is the extracted answer.
    """
    result = {"score": 0.0, "acc": 0.0, "pred": "", "data_source": str(data_source)}
    answers = _ground_truths(ground_truth)
    answer_text = extract_final_answer_text(solution_str)
    if not answers or not answer_text.strip():
        return result
    try:
        correct, prediction = _checked(answer_text, answers, float(timeout_seconds))
    except ImportError as error:  # a broken install would silently score every response 0
        raise ImportError(
            "maspo_verl.experiments.reward needs math-verify: pip install 'maspo-verl[math]' (or math-verify)"
        ) from error
    except Exception as error:  # timeouts, sympy errors, a dead helper process: the response scores 0
        logger.warning("math reward: answer check failed (%s: %s); scoring 0", type(error).__name__, error)
        return result
    result.update(score=correct, acc=correct, pred=prediction)
    return result

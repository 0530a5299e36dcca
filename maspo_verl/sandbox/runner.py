"""End-to-end check: MASPO trained by verl's own trainer on CPU, judged from verl's own outputs.

    python -m maspo_verl.sandbox.runner [--steps N] [--workdir DIR] [--timeout SECONDS]
    python -m maspo_verl check --e2e          # the same, after the quick checks

Runs the packaged CPU script maspo_verl/sandbox/tiny/train_cpu.sh (stock `python -m verl.trainer.main_ppo`
with maspo-verl's opt-in CPU patches) in a temp dir, its output in `<workdir>/train.log`, then reads
verl's file logger (`metrics.jsonl`) and checkpoint folder. The last line printed says PASS or
FAIL and why. Works from a wheel install as from a checkout.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from maspo_verl.patches import CPU_BACKEND_VERL_VERSIONS, UnsupportedVerlVersion, require_verl_version

__all__ = ["CPU_SCRIPT", "RunSummary", "kill_live_runs", "main", "read_run", "run_cpu_training"]

# Shipped with the package (a wheel has it too); examples/run_scripts/cpu/train_maspo_cpu.sh wraps it.
CPU_SCRIPT = Path(__file__).resolve().parent / "tiny" / "train_cpu.sh"
MASPO_METRIC_PREFIX = "actor/maspo/"
VALIDATION_METRIC_PREFIX = "val-core/"
# Process groups of the runs under way in this process (several when compare runs them side by side).
_live_process_groups: set[int] = set()
_live_lock = threading.Lock()


def kill_live_runs() -> int:
    """Kill every CPU run this process has started and not yet reaped (e.g. on Ctrl-C); return how many."""
    with _live_lock:
        groups = list(_live_process_groups)
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(groups)


@dataclass
class RunSummary:
    """What verl wrote during one CPU run: per-step metrics, validation, checkpoint."""

    return_code: int
    seconds: float
    log_path: Path
    metrics_by_step: dict[int, dict[str, float]] = field(default_factory=dict)
    checkpoint: Path | None = None

    @property
    def training_steps(self) -> list[int]:
        return sorted(step for step, metrics in self.metrics_by_step.items() if "timing_s/step" in metrics)

    @property
    def validation(self) -> dict[int, dict[str, float]]:
        return {
            step: {key: value for key, value in metrics.items() if key.startswith(VALIDATION_METRIC_PREFIX)}
            for step, metrics in sorted(self.metrics_by_step.items())
            if any(key.startswith(VALIDATION_METRIC_PREFIX) for key in metrics)
        }

    def maspo_metric_keys(self) -> set[str]:
        return {
            key for metrics in self.metrics_by_step.values() for key in metrics if key.startswith(MASPO_METRIC_PREFIX)
        }

    def problems(self, expected_steps: int) -> list[str]:
        """Everything that falls short of a complete MASPO run of `expected_steps` steps."""
        found = []
        if self.return_code != 0:
            found.append(f"the training script exited with code {self.return_code}")
        if self.training_steps != list(range(1, expected_steps + 1)):
            found.append(f"verl logged training steps {self.training_steps}, expected 1..{expected_steps}")
        if len(self.validation) < 2:
            found.append(
                f"verl logged validation at steps {sorted(self.validation)}, expected before and after training"
            )
        if not self.maspo_metric_keys():
            found.append("no actor/maspo/* metric: loss_mode=maspo did not run inside verl's Ray workers")
        if self.checkpoint is None:
            found.append(f"no checkpoint global_step_{expected_steps}/actor was written")
        return found


def _read_metrics(path: Path) -> dict[int, dict[str, float]]:
    """verl's file logger: one JSON object {"step": int, "data": {metric: value}} per line."""
    from maspo_verl.experiments.evaluation.jsonl import parse_jsonl

    metrics: dict[int, dict[str, float]] = {}
    if not path.is_file():
        return metrics
    for step, data in parse_jsonl(str(path), lambda record: (int(record["step"]), dict(record["data"]))):
        metrics.setdefault(step, {}).update(data)
    return metrics


def read_run(
    workdir: Path, return_code: int, seconds: float, expected_steps: int, log_name: str = "train.log"
) -> RunSummary:
    """What verl wrote in `workdir`: its file logger's metrics and the checkpoint of step `expected_steps`.

    (A comparison's numbers of a run come from `maspo_verl.sandbox.runs.summarize_run`.)"""
    checkpoint = workdir / "checkpoints" / f"global_step_{expected_steps}" / "actor"
    return RunSummary(
        return_code=return_code,
        seconds=seconds,
        log_path=workdir / log_name,
        metrics_by_step=_read_metrics(workdir / "metrics.jsonl"),
        checkpoint=checkpoint if checkpoint.is_dir() and any(checkpoint.iterdir()) else None,
    )


# Start-up failures of the machinery around verl, before any training step, worth a fresh start:
# Ray's node (GCS, raylet) not up in time on an overloaded 2-core box, and torch.distributed's
# rendezvous port taken by a run beside this one between verl choosing it and binding it.
RAY_NODE_START_TIMEOUT = "The current node timed out during startup"
RENDEZVOUS_PORT_TAKEN = "EADDRINUSE"
START_UP_FAILURES = (RAY_NODE_START_TIMEOUT, RENDEZVOUS_PORT_TAKEN)
START_UP_ATTEMPTS = 3
TRAINING_STEP = re.compile(r"\bstep:\d+ - ")


def failed_while_starting_up(log_path: Path) -> bool:
    """Did this run fail while starting up (Ray's node, the rendezvous port), before any training step?"""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return False
    return any(failure in text for failure in START_UP_FAILURES) and not TRAINING_STEP.search(text)


def require_cpu_backend_verl() -> None:
    """Raise UnsupportedVerlVersion, naming the verls the CPU backend supports, when the installed one is
    not among them. Checked before any process starts: on another verl the CPU script's own config fails
    first (verl 0.8 has no trainer.v1), with Hydra's message instead of this one."""
    require_verl_version("the CPU backend (maspo_verl.patches)", CPU_BACKEND_VERL_VERSIONS)


def run_cpu_training(
    workdir: Path,
    steps: int = 3,
    overrides: list[str] | None = None,
    timeout: float = 900,
    env: dict | None = None,
    script: Path = CPU_SCRIPT,
    log_name: str = "train.log",
    on_line: Callable[[float, str], None] | None = None,
    start_up_attempts: int = START_UP_ATTEMPTS,
) -> RunSummary:
    """Run the CPU script in `workdir` (output to `log_name`) and summarize what verl wrote.

    The script runs in its own process group with its own Ray temp dir (so runs can go side by
    side); on timeout (return code -1) and after every run the whole group (driver, Ray,
    workers) is killed. `on_line(seconds_since_start, line)`, when given, sees each line of
    verl's output as it is written (progress, phase timestamps). A run that failed while starting
    up (`START_UP_FAILURES`, before any training step) is started again, up to `start_up_attempts`
    in all; each failed attempt's log is kept beside the run's as `<log_name>.ray-start-<k>`. Used by
    `check --e2e`, by each run of `maspo_verl.sandbox.compare` and by benchmarks/bench_cpu_run.py.
    """
    if not script.is_file():
        raise FileNotFoundError(f"{script} not found: the CPU training script ships with maspo_verl/sandbox/tiny/")
    require_cpu_backend_verl()
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / log_name
    for attempt in range(1, max(1, start_up_attempts) + 1):
        summary = _run_cpu_training_once(workdir, steps, overrides, timeout, env, script, log_name, on_line)
        if summary.return_code == 0 or attempt >= start_up_attempts or not failed_while_starting_up(log_path):
            return summary
        kept = log_path.with_name(f"{log_name}.ray-start-{attempt}")
        log_path.replace(kept)
        print(
            f"[e2e] Ray or torch.distributed failed to start up in {workdir} (an overloaded machine, a taken port?); "
            f"starting the run again ({attempt + 1}/{start_up_attempts}); that attempt's log: {kept}",
            file=sys.stderr,
            flush=True,
        )
    return summary


def _run_cpu_training_once(workdir, steps, overrides, timeout, env, script, log_name, on_line) -> RunSummary:
    ray_temp_dir = tempfile.mkdtemp(prefix="ray_e2e_", dir="/tmp")  # short: Ray's socket paths have a length limit
    environment = {
        **os.environ,
        "PYTHON": sys.executable,
        "WORK_DIR": str(workdir),
        "TOTAL_STEPS": str(steps),
        "RAY_TMPDIR": ray_temp_dir,
        "VERL_FILE_LOGGER_PATH": str(workdir / "metrics.jsonl"),
        **(env or {}),
    }
    start = time.monotonic()
    with open(workdir / log_name, "wb") as log:
        process = subprocess.Popen(
            ["bash", str(script), *(overrides or [])],
            cwd=workdir,
            env=environment,
            stdout=subprocess.PIPE if on_line else log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        with _live_lock:
            _live_process_groups.add(process.pid)
        reader = None
        if on_line:
            reader = threading.Thread(target=_copy_lines, args=(process.stdout, log, on_line, start), daemon=True)
            reader.start()
        try:
            return_code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return_code = -1
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # Ray's daemons live in the script's session
            except ProcessLookupError:
                pass
            process.wait()
            with _live_lock:
                _live_process_groups.discard(process.pid)
            if reader is not None:
                reader.join(timeout=30)  # the pipe closes once the killed daemons are gone
            shutil.rmtree(ray_temp_dir, ignore_errors=True)
    return read_run(workdir, return_code, time.monotonic() - start, steps, log_name)


def _copy_lines(pipe, log, on_line: Callable[[float, str], None], start: float) -> None:
    for raw in iter(pipe.readline, b""):
        log.write(raw)
        log.flush()
        try:
            on_line(time.monotonic() - start, raw.decode("utf-8", errors="replace"))
        except Exception:  # a progress display must never stop the copy of the log
            pass
    pipe.close()


def _verdict(summary: RunSummary, steps: int) -> str:
    problems = summary.problems(steps)
    if problems:
        return f"e2e: FAIL - {'; '.join(problems)} (log: {summary.log_path})"
    validation = summary.validation
    first, last = validation[min(validation)], validation[max(validation)]
    accuracy_key = next((key for key in last if key.endswith("/acc/mean@1")), next(iter(last)))
    step_seconds = [summary.metrics_by_step[step]["timing_s/step"] for step in summary.training_steps]
    return (
        f"e2e: PASS - verl main_ppo trained MASPO on CPU: {steps} steps "
        f"({sum(step_seconds) / len(step_seconds):.1f} s/step, {summary.seconds:.0f} s in all), "
        f"{accuracy_key} {first.get(accuracy_key, float('nan')):.2f} -> {last[accuracy_key]:.2f}, "
        f"{len(summary.maspo_metric_keys())} actor/maspo/* metrics, checkpoint {summary.checkpoint.parent.name} written"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maspo_verl.sandbox.runner", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="GRPO steps to train (default 3)")
    parser.add_argument("--workdir", default=None, help="keep the run here instead of a removed temp dir")
    parser.add_argument("--timeout", type=float, default=900, help="seconds before the run is killed")
    args = parser.parse_args(argv)
    if args.steps < 1:
        print(f"e2e: FAIL - --steps must be >= 1, got {args.steps}")
        return 2

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="maspo_e2e_"))
    print(
        f"e2e: training MASPO with verl's main_ppo on CPU in {workdir} (log: {workdir / 'train.log'}) ...", flush=True
    )
    try:
        summary = run_cpu_training(workdir, steps=args.steps, timeout=args.timeout)
    except (OSError, UnsupportedVerlVersion) as error:
        print(f"e2e: FAIL - {error}")
        return 1
    verdict = _verdict(summary, args.steps)
    passed = verdict.startswith("e2e: PASS")
    if passed and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    print(verdict)
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Where one CPU training of verl's trainer spends its time, phase by phase, variants side by side.

    python benchmarks/bench_cpu_run.py                          # quick preset's run: ours vs verl's 2 s polling
    python benchmarks/bench_cpu_run.py --variants ours,threads1,no_prestart --steps 10

Each variant is one stock `main_ppo` run of the comparison's quick-preset settings (MASPO, seed 0,
the cached warm-up model) through the packaged CPU script, run one after another in this process.
Phases come from the moments verl's own output lines appear (each line is stamped as it arrives;
verl's console lines carry no clock of their own):

  start        process start -> "Started a local Ray instance"       (Python + verl imports, Ray start)
  workers+val0 -> "Initial validation metrics"                        (TaskRunner, actor/rollout/reward workers,
                                                                      models, step-0 validation; Ray forwards
                                                                      their output in chunks, so one phase)
  steps        -> the last "step:N -" line                            (training steps, periodic validations)
  teardown     -> the driver process exits                            (final logging, Ray shutdown)

plus verl's own medians of timing_s/step, timing_s/gen and timing_s/update_actor from the run's
metrics.jsonl, and each figure's ratio to the first variant. Timings on a shared machine vary;
the variants run in one invocation so that they see the same machine.

    python benchmarks/bench_cpu_run.py --variants ours --steps 12 --profile 15
    python benchmarks/bench_cpu_run.py --variants ours --cpu-by-process

`--profile SECONDS` (needs `pip install py-spy`) also samples every Ray worker process of each run
with py-spy for that long, from the third training step on, and prints per process how busy it
was (share of the window it was on a CPU) and the functions it spent that time in: where a
step's CPU goes when verl's own timings only say "gen".

`--cpu-by-process` also reads, twice a second, the CPU time (user + system, from /proc) of every
process of each run: the driver, each Ray worker under its actor's name, Ray's own processes and the
workers Ray started but never used (`IDLE`), and prints per process the CPU seconds up to the end of the
step-0 validation (start-up and that validation) and after it (the steps, later validations, teardown). A
lower bound: a process that lives under half a second may be missed, and each loses what it spends after
its last read. On 2 busy cores a run's wall time follows its CPU time: this is where it goes.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

from maspo_verl.sandbox.presets import METHODS, PRESETS, Arm
from maspo_verl.sandbox.runner import kill_live_runs, run_cpu_training
from maspo_verl.sandbox.runs import run_environment, run_overrides

# Ray forwards a worker's output in chunks, so the lines of worker start-up and of the step-0
# validation arrive together: they are one phase here.
PHASES = (
    ("start", re.compile(r"Started a local Ray instance")),
    ("workers+val0", re.compile(r"Initial validation metrics")),
)
STEP_LINE = re.compile(r"\bstep:(\d+) - ")

# name -> (what it changes, extra Hydra overrides, extra environment)
VARIANTS = {
    "ours": ("maspo-verl's CPU backend as shipped", (), {}),
    "verl_poll": (
        "verl's own replay buffer (2 s polling)",
        ("trainer.v1.sampler.custom_sampler.path=null", "trainer.v1.sampler.custom_sampler.name=null"),
        {},
    ),
    "threads1": ("1 torch/OpenMP thread per process instead of 2", (), {"MASPO_CPU_THREADS": "1"}),
    "no_prestart": ("Ray's idle-worker prestart off", (), {"RAY_prestart_worker_first_driver": "0"}),
    "agent_workers2": ("2 agent-loop workers instead of 1", ("actor_rollout_ref.rollout.agent.num_workers=2",), {}),
    "verl_manager": (
        "verl's agent-loop manager (per sample: one Ray call to the server, one TransferQueue put)",
        ("++actor_rollout_ref.rollout.agent.agent_loop_manager_class=null",),
        {},
    ),
    "verl_bootstrap": (
        "verl's own validation bootstrap (a Python loop per subset) instead of the vectorized one",
        (),
        {"MASPO_FAST_VALIDATION_METRICS": "0"},
    ),
    "reward_actor": (
        "verl's reward actor (one Ray call per response) instead of scoring in the agent-loop worker",
        ("actor_rollout_ref.rollout.agent.default_agent_loop=hf_cpu_single_turn_agent", "reward.num_workers=1"),
        {},
    ),
}


def phase_times(events: list[tuple[float, str]], exit_seconds: float) -> dict[str, float]:
    """Seconds spent in each phase, from (seconds since start, line) events."""
    marks = {}
    for name, pattern in PHASES:
        marks[name] = next((t for t, line in events if pattern.search(line)), float("nan"))
    step_times = [t for t, line in events if STEP_LINE.search(line) and int(STEP_LINE.search(line).group(1)) > 0]
    marks["steps"] = step_times[-1] if step_times else float("nan")
    marks["teardown"] = exit_seconds
    phases, previous = {}, 0.0
    for name in ("start", "workers+val0", "steps", "teardown"):
        phases[name] = marks[name] - previous
        previous = marks[name]
    phases["total"] = exit_seconds
    return phases


# Frames that only say "a thread / the event loop / Ray is running something": Ray's own frames
# (remote calls, serialization, its worker loop) count towards the caller that made them.
GENERIC_FRAME = re.compile(
    r"\((threading|asyncio/[a-z_]+|concurrent/futures/[a-z_]+|selectors|contextlib)\.py:\d+\)$"
    r"|\(ray/|^context_decorator|^Module\._(wrapped_)?call_impl "
)
PROFILE_FROM_STEP = 3
PROFILE_RATE_HZ = 100


def _ray_actor_name(command_line: str) -> str:
    """ "ray::TaskRunnerV1.run ..." -> "TaskRunnerV1" ("?" when there is no name)."""
    return (command_line[len("ray::") :].split(".")[0].split() or ["?"])[0]


def run_worker_processes(marker: str) -> dict[str, list[int]]:
    """Ray worker processes ("ray::Name" command lines) whose environment holds `marker`: name -> pids."""
    found: dict[str, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            if not command.startswith("ray::") or marker.encode() not in (entry / "environ").read_bytes():
                continue
        except OSError:  # gone, or not ours to read
            continue
        name = _ray_actor_name(command)
        if name not in ("?", "IDLE"):
            found[name].append(int(entry.name))
    return dict(found)


def summarize_profile(
    collapsed_stacks: str, window_samples: int, top: int = 6
) -> tuple[float, list[tuple[str, float]]]:
    """(busy share of the window, [(function, share of the window)] for the `top` functions by inclusive time)
    from py-spy's raw output ("frame;frame;... count" lines, outermost first). Generic frames (threads,
    the event loop, Ray's worker loop) are left out of the ranking; a function counts once per stack."""
    inclusive: collections.Counter = collections.Counter()
    total = 0
    for line in collapsed_stacks.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        for frame in set(stack.split(";")):
            if frame and not GENERIC_FRAME.search(frame):
                inclusive[frame] += int(count)
    window = max(window_samples, total, 1)
    return total / window, [(frame, samples / window) for frame, samples in inclusive.most_common(top)]


class Profiler:
    """py-spy on every Ray worker of one run (found by an environment marker), started at one step line."""

    def __init__(self, seconds: float, out_dir: Path):
        self.seconds, self.out_dir, self.marker = seconds, out_dir, f"bench-{uuid.uuid4().hex}"
        self.processes: list[tuple[str, int, subprocess.Popen, Path]] = []

    def on_line(self, line: str) -> None:
        match = STEP_LINE.search(line)
        if self.processes or not match or int(match.group(1)) < PROFILE_FROM_STEP:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, pids in sorted(run_worker_processes(self.marker).items()):
            for pid in pids:
                output = self.out_dir / f"{name}-{pid}.txt"
                command = [
                    "py-spy",
                    "record",
                    "--pid",
                    str(pid),
                    "--duration",
                    str(int(self.seconds)),
                    "--rate",
                    str(PROFILE_RATE_HZ),
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(output),
                ]
                self.processes.append(
                    (name, pid, subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), output)
                )

    def report(self) -> list[str]:
        if not self.processes:
            return [f"  (no profile: the run never reached step {PROFILE_FROM_STEP})"]
        lines = []
        for name, pid, process, output in self.processes:
            process.wait(timeout=self.seconds + 60)
            text = output.read_text() if output.is_file() else ""
            busy, functions = summarize_profile(text, int(self.seconds * PROFILE_RATE_HZ))
            lines.append(f"  {name} (pid {pid}): on a CPU {100 * busy:.0f}% of the {self.seconds:.0f} s window")
            lines.extend(f"      {100 * share:5.1f}%  {frame}" for frame, share in functions)
        return lines


UNUSED_WORKERS = "Ray workers never used (IDLE)"
# Ray's own processes, by the name they show or what their command line runs
RAY_SYSTEM_ACTORS = {
    "IDLE": UNUSED_WORKERS,
    "DashboardAgent": "Ray: dashboard agent",
    "RuntimeEnvAgent": "Ray: runtime-env agent",
}
RAY_SYSTEM_PROCESSES = (
    ("gcs_server", "Ray: GCS server"),
    ("raylet", "Ray: raylet"),
    ("dashboard", "Ray: dashboard"),
    ("log_monitor", "Ray: log monitor"),
    ("autoscaler", "Ray: monitor"),
)


def process_role(command_line: str) -> str:
    """What one process of a run is, from its command line (a Ray worker renames itself "ray::Actor.method"). Only
    the program and its script or module count, not the flags: the raylet's flags name default_worker.py."""
    if command_line.startswith("ray::"):
        name = _ray_actor_name(command_line)
        return RAY_SYSTEM_ACTORS.get(name, name)
    program = " ".join([word for word in command_line.split() if not word.startswith("-")][:2])
    if "verl.trainer.main_ppo" in program:
        return "driver (python -m verl.trainer.main_ppo)"
    if "default_worker.py" in program:
        return UNUSED_WORKERS
    for fragment, role in RAY_SYSTEM_PROCESSES:
        if fragment in program:
            return role
    return program.split()[0].rsplit("/", 1)[-1] if program else "?"


def cpu_seconds_by_role(samples: dict, split: dict | None) -> dict[str, tuple[float, float]]:
    """role -> (CPU seconds up to the split, CPU seconds after it), summed over the processes of each role, from
    {process: {"role": ..., "cpu": last CPU seconds read}} and the CPU seconds each process had at the split (one
    missing there started after it; no split: all of it counts before)."""
    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    for process, sample in samples.items():
        before = sample["cpu"] if split is None else min(split.get(process, 0.0), sample["cpu"])
        totals[sample["role"]][0] += before
        totals[sample["role"]][1] += sample["cpu"] - before
    return {role: (before, after) for role, (before, after) in totals.items()}


class CpuAccount:
    """The CPU time of every process whose environment holds a run's marker, read from /proc every `interval`
    seconds in a thread; `split()` marks the moment to split at (the end of the step-0 validation). A lower bound:
    a process that lives less than `interval` may be missed, and each loses what it spends after its last read."""

    def __init__(self, marker: str, interval: float = 0.5):
        self.marker, self.interval = marker.encode(), interval
        self.samples: dict[tuple[int, int], dict] = {}  # (pid, start time): a reused pid is another process
        self.split_at: dict[tuple[int, int], float] | None = None
        self.errors = 0
        self.ticks = os.sysconf("SC_CLK_TCK")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def read_once(self) -> None:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                process = (int(entry.name), int(fields[19]))
                if process not in self.samples and self.marker not in (entry / "environ").read_bytes():
                    continue
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, IndexError, ValueError):  # gone, or not ours to read
                continue
            cpu = (int(fields[11]) + int(fields[12])) / self.ticks
            role = process_role(command)
            with self._lock:
                sample = self.samples.setdefault(process, {"role": role, "cpu": 0.0})
                sample["cpu"] = max(sample["cpu"], cpu)
                # a worker's last name is the actor it became; an exiting process's empty command line is no name
                if command.strip() and role not in (UNUSED_WORKERS, "?"):
                    sample["role"] = role

    def split(self) -> None:
        if self.split_at is None:
            self.read_once()
            with self._lock:
                self.split_at = {process: sample["cpu"] for process, sample in self.samples.items()}

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.read_once()
            except Exception:  # noqa: BLE001  # a benchmark keeps reading; the report says how often it failed
                self.errors += 1

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def report(self) -> list[str]:
        with self._lock:
            rows = cpu_seconds_by_role(self.samples, self.split_at)
        lines = [f"  {'process':44s}{'to val 0':>11s}{'after':>9s}{'total':>9s}"]
        for role, (before, after) in sorted(rows.items(), key=lambda item: -sum(item[1])):
            lines.append(f"  {role[:43]:44s}{before:11.1f}{after:9.1f}{before + after:9.1f}")
        before, after = (sum(values[i] for values in rows.values()) for i in (0, 1))
        lines.append(f"  {'all processes of the run':44s}{before:11.1f}{after:9.1f}{before + after:9.1f}")
        if self.errors:
            lines.append(f"  ({self.errors} reads of /proc failed; the figures miss what those would have added)")
        return lines


def run_variant(
    name: str,
    workdir: Path,
    steps: int,
    model_dir: Path,
    data: dict,
    profile_seconds: float = 0.0,
    cpu_by_process: bool = False,
) -> tuple[dict[str, float], list[str], list[str]]:
    _, overrides, environment = VARIANTS[name]
    settings = PRESETS["quick"].settings
    arm = Arm("maspo", "maspo", METHODS["maspo"].label)
    events: list[tuple[float, str]] = []
    run_dir = workdir / name
    profiler = Profiler(profile_seconds, run_dir / "py-spy") if profile_seconds > 0 else None
    marker = profiler.marker if profiler is not None else f"bench-{uuid.uuid4().hex}"
    account = CpuAccount(marker) if cpu_by_process else None

    def on_line(seconds: float, line: str) -> None:
        events.append((seconds, line))
        if profiler is not None:
            profiler.on_line(line)
        # the split: the step-0 validation's metrics, or (without one) the first step's line
        if account is not None and (PHASES[1][1].search(line) or STEP_LINE.search(line)):
            account.split()

    with account or contextlib.nullcontext():
        summary = run_cpu_training(
            run_dir,
            steps,
            [*run_overrides(arm, 0, run_dir), *overrides],
            1800,
            {**run_environment(arm, settings, data, model_dir), **environment, "MASPO_BENCH_RUN": marker},
            log_name="verl.log",
            on_line=on_line,
        )
    if summary.problems(steps) and summary.return_code != 0:
        raise RuntimeError(f"variant {name} failed: see {summary.log_path}")
    figures = phase_times(events, summary.seconds)
    for key in ("step", "gen", "update_actor"):
        values = [
            metrics[f"timing_s/{key}"] for metrics in summary.metrics_by_step.values() if f"timing_s/{key}" in metrics
        ]
        figures[f"median timing_s/{key}"] = statistics.median(values) if values else float("nan")
    return (
        figures,
        profiler.report() if profiler is not None else [],
        account.report() if account is not None else [],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--variants", default="ours,verl_poll", help=f"comma-separated, first is the reference: {', '.join(VARIANTS)}"
    )
    parser.add_argument("--steps", type=int, default=PRESETS["quick"].settings.steps)
    parser.add_argument("--workdir", default=None, help="keep the runs here (default: a temp dir)")
    parser.add_argument(
        "--profile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help=f"py-spy every Ray worker for SECONDS from step {PROFILE_FROM_STEP} on (needs py-spy)",
    )
    parser.add_argument(
        "--cpu-by-process",
        action="store_true",
        help="CPU seconds of each process of each run, up to the end of the step-0 validation and after (/proc)",
    )
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    if args.profile > 0 and shutil.which("py-spy") is None:
        parser.error("--profile needs py-spy on PATH: pip install py-spy")
    if args.profile > 0 and args.steps <= PROFILE_FROM_STEP:
        parser.error(f"--profile starts at step {PROFILE_FROM_STEP}: give --steps > {PROFILE_FROM_STEP}")

    from maspo_verl.sandbox.tiny import write_parquet
    from maspo_verl.sandbox.tiny.warmup import WarmupSettings, cached_warmup

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_cpu_run_"))
    warmup = WarmupSettings()
    model_dir, _, _ = cached_warmup(warmup)
    train, val = write_parquet(
        workdir / "data", warmup.task, warmup.num_train, PRESETS["quick"].settings.val_problems, warmup.data_seed
    )
    results, profiles, cpu_tables = {}, {}, {}
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    try:
        for name in variants:
            print(f"[bench] {name}: {VARIANTS[name][0]} ...", file=sys.stderr, flush=True)
            results[name], profiles[name], cpu_tables[name] = run_variant(
                name, workdir, args.steps, model_dir, {"train": train, "val": val}, args.profile, args.cpu_by_process
            )
    except (KeyboardInterrupt, SystemExit):
        kill_live_runs()
        raise

    reference = variants[0]
    rows = list(results[reference])
    print(f"quick-preset CPU run, {args.steps} steps; seconds per phase; ratio = variant / {reference}")
    width = max([14] + [len(name) + 2 for name in variants])
    ratio_width = max([22] + [len(name) + len(reference) + 4 for name in variants[1:]])
    print(
        f"{'figure':28s}"
        + "".join(f"{name:>{width}s}" for name in variants)
        + "".join(f"{name + '/' + reference:>{ratio_width}s}" for name in variants[1:])
    )
    for row in rows:
        cells = "".join(f"{results[name][row]:{width}.2f}" for name in variants)
        ratios = "".join(
            f"{results[name][row] / results[reference][row]:{ratio_width - 1}.2f}x"
            if results[reference][row]
            else f"{'-':>{ratio_width}s}"
            for name in variants[1:]
        )
        print(f"{row:28s}{cells}{ratios}")
    for name in variants:
        if profiles[name]:
            print(f"where {name}'s Ray workers spent the profile window (inclusive time, generic frames left out):")
            print("\n".join(profiles[name]))
    for name in variants:
        if cpu_tables[name]:
            print(
                f"CPU seconds of {name}'s processes (user + system), up to the end of the step-0 validation "
                "(start-up and that validation) and after:"
            )
            print("\n".join(cpu_tables[name]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

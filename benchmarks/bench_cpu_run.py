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
"""

from __future__ import annotations

import argparse
import re
import signal
import statistics
import sys
import tempfile
from pathlib import Path

from maspo_verl.compare import METHODS, PRESETS, Arm, _run_environment, _run_overrides
from maspo_verl.e2e import kill_live_runs, run_cpu_training

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


def run_variant(name: str, workdir: Path, steps: int, model_dir: Path, data: dict) -> dict[str, float]:
    _, overrides, environment = VARIANTS[name]
    settings = PRESETS["quick"].settings
    arm = Arm("maspo", "maspo", METHODS["maspo"].label)
    events: list[tuple[float, str]] = []
    run_dir = workdir / name
    summary = run_cpu_training(
        run_dir, steps, [*_run_overrides(arm, 0, run_dir), *overrides], 1800,
        {**_run_environment(arm, settings, data, model_dir), **environment},
        log_name="verl.log", on_line=lambda seconds, line: events.append((seconds, line)),
    )
    if summary.problems(steps) and summary.return_code != 0:
        raise RuntimeError(f"variant {name} failed: see {summary.log_path}")
    figures = phase_times(events, summary.seconds)
    for key in ("step", "gen", "update_actor"):
        values = [metrics[f"timing_s/{key}"] for metrics in summary.metrics_by_step.values() if f"timing_s/{key}" in metrics]
        figures[f"median timing_s/{key}"] = statistics.median(values) if values else float("nan")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="ours,verl_poll", help=f"comma-separated, first is the reference: {', '.join(VARIANTS)}")
    parser.add_argument("--steps", type=int, default=PRESETS["quick"].settings.steps)
    parser.add_argument("--workdir", default=None, help="keep the runs here (default: a temp dir)")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")

    from maspo_verl.tiny import write_parquet
    from maspo_verl.tiny.warmup import WarmupSettings, cached_warmup

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_cpu_run_"))
    warmup = WarmupSettings()
    model_dir, _, _ = cached_warmup(warmup)
    train, val = write_parquet(workdir / "data", warmup.task, warmup.num_train, PRESETS["quick"].settings.val_problems, warmup.data_seed)
    results = {}
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    try:
        for name in variants:
            print(f"[bench] {name}: {VARIANTS[name][0]} ...", file=sys.stderr, flush=True)
            results[name] = run_variant(name, workdir, args.steps, model_dir, {"train": train, "val": val})
    except (KeyboardInterrupt, SystemExit):
        kill_live_runs()
        raise

    reference = variants[0]
    rows = list(results[reference])
    print(f"quick-preset CPU run, {args.steps} steps; seconds per phase; ratio = variant / {reference}")
    print(f"{'figure':28s}" + "".join(f"{name:>14s}" for name in variants) + "".join(f"{name + '/' + reference:>22s}" for name in variants[1:]))
    for row in rows:
        cells = "".join(f"{results[name][row]:14.2f}" for name in variants)
        ratios = "".join(f"{results[name][row] / results[reference][row]:22.2f}x" if results[reference][row] else f"{'-':>22s}"
                         for name in variants[1:])
        print(f"{row:28s}{cells}{ratios}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

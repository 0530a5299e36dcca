"""MASPO vs its baselines, each trained by verl's own trainer on CPU: paired runs, intervals, verdicts.

    python -m maspo_verl.sandbox.compare                          # quick: MASPO vs GRPO, 1 seed, 10 steps, minutes
    python -m maspo_verl.sandbox.compare --preset pilot           # picks the trust-region regime (GRPO arms only)
    python -m maspo_verl.sandbox.compare --preset second_pilot    # E again on fresh seeds (none of the first passed)
    python -m maspo_verl.sandbox.compare --preset full            # MASPO vs GRPO, 5-10 seeds, the control
    python -m maspo_verl.sandbox.compare --preset decomposition   # soft/hard gate x dual clip, matched sigma
    python -m maspo_verl.sandbox.compare --preset paper           # the paper's main-result methods vs GRPO
    python -m maspo_verl.sandbox.compare --preset ablations       # MASPO without each component vs MASPO
    python -m maspo_verl.sandbox.compare --preset ablations_matched  # the same at sigma_base 0.16
    python -m maspo_verl.sandbox.compare --preset width_sweep     # MASPO at sigma_base 1, 0.4, 0.16 vs GRPO
    python -m maspo_verl.sandbox.compare --preset off_policy      # at the regime's and at 4 updates per batch
    python -m maspo_verl.sandbox.compare --preset sensitivity     # MASPO's alpha x beta grid vs GRPO
    python -m maspo_verl.sandbox.compare --methods maspo,grpo,sapo --seeds 0,1 --steps 12 --jobs 2

Every run is stock `python -m verl.trainer.main_ppo` through the packaged CPU script
(`maspo_verl/sandbox/tiny/train_cpu.sh`, maspo-verl's opt-in CPU patches) on the embedded sorting task.
Runs are paired: every arm of a seed starts from the same warmed-up tiny model
(`maspo_verl.sandbox.tiny.warmup`, cached), sees the same data in the same order, and samples
deterministically (the hf_cpu rollout seeds each sample from the rollout seed, the weights' step,
the prompt and the sample's index), so the arms of a seed share their step-0 validation and
differ only by what the method does. An arm changes the policy-loss overrides and, where its
preset says so, the updates per rollout batch (`off_policy`), the learning rate (the lr-0 sanity lines) or, in
the pilot, the whole regime; a seed changes the data order, the sampling and the actor's initialisation of
randomness.

The parts: `presets` (methods, settings, the regime, arms, presets and their reasons), `runs` (running and
reusing runs, `summarize_run`), `analysis` (the statistics' rules), `report` (tables, curves), `pilot` (the rule
that picks the regime). Statistics at the level of the replication unit, the training seed
(maspo_verl.sandbox.statistics): verdicts on the preset's declared primary outcome only, the methods in one Holm
family, the controls apart; the planned minimum detectable difference (exact noncentral t) beside the realised
one; a preset that cannot detect 10 points is a screen and gives no verdicts. One seed gives no interval.

A rerun of the same command skips runs already finished with identical settings (a fingerprint in
`<run>/run.json`) and redoes unfinished ones; Ctrl-C kills the runs under way and keeps the
finished ones. Written to --output-dir: `comparison.json`, `comparison.md` (the table),
`learning_curves.png`, each run's verl log in `runs/<arm>-seed<k>/verl.log`. Every run records the
CPU model and package versions it ran with (`machine_and_packages`): a run repeats bit for bit in
one environment, and the report warns when the arms of a seed come from different ones.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, fields, replace
from pathlib import Path

from maspo_verl.patches import UnsupportedVerlVersion
from maspo_verl.sandbox.analysis import analyse, environment_check, step0_check
from maspo_verl.sandbox.pilot import PILOT_GRIDS, apply_pilot_rule, format_pilot
from maspo_verl.sandbox.presets import (
    BASELINE_METHOD,
    METHOD_ALIASES,
    METHODS,
    PRESETS,
    REGIME,
    REGIME_PICKED_BY_PILOT,
    Arm,
    Method,
    Preset,
    RunSettings,
    method_arm,
)
from maspo_verl.sandbox.report import format_contrasts, format_table, format_terminal_table, plot
from maspo_verl.sandbox.runner import CPU_SCRIPT, kill_live_runs, require_cpu_backend_verl
from maspo_verl.sandbox.runs import (
    Progress,
    RunResult,
    machine_and_packages,
    run_one,
    summarize_run,
    write_comparison_data,
)

__all__ = ["METHODS", "PRESETS", "Arm", "Method", "Preset", "RunSettings", "main", "summarize_run"]

# Run settings that change no outcome: choosing them on the command line keeps a preset's planned power.
OPERATIONAL_SETTINGS = ("run_timeout_s",)


def require_loss_modes(arms: list[Arm]) -> None:
    """Raise ValueError naming every arm whose loss mode this verl + maspo-verl does not register (checked in this
    process, as verl's plugin loading does in every worker), before any run starts."""
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

    import maspo_verl.integration.plugin  # noqa: F401  (registers MASPO and the baselines, as in every worker)

    missing = {arm.name: METHODS[arm.method].loss_mode for arm in arms}
    missing = {name: mode for name, mode in missing.items() if mode not in POLICY_LOSS_REGISTRY}
    if missing:
        raise ValueError(
            f"loss_mode {sorted(set(missing.values()))} of arm(s) {sorted(missing)} is not registered in this "
            f"verl + maspo-verl (registered: {', '.join(sorted(POLICY_LOSS_REGISTRY))})"
        )


def _check_output_dir(output_dir: Path) -> None:
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_dir):
            pass
    except OSError as error:
        raise ValueError(f"--output-dir {output_dir} is not writable: {error.strerror or error}") from error


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise ValueError(f"--seeds must be comma-separated integers, got {text!r}") from error
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must list distinct integers, got {text!r}")
    return seeds


def _parse_methods(text: str) -> list[Arm]:
    methods = [METHOD_ALIASES.get(part.strip(), part.strip()) for part in text.split(",") if part.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(
            f"unknown method(s) {unknown or [text]}; choose from {', '.join(METHODS)} "
            f"(also {', '.join(f'{alias} = {name}' for alias, name in METHOD_ALIASES.items())})"
        )
    if len(set(methods)) != len(methods):
        raise ValueError(f"--methods lists a method twice: {text!r}")
    baseline = BASELINE_METHOD if BASELINE_METHOD in methods else None
    return [method_arm(method, baseline) for method in methods]


def default_jobs() -> int:
    """Runs side by side: 2 on a machine with >= 2 cores and >= 12 GiB (measured faster than 1 on 2 cores)."""
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        memory_gib = 0
    return 2 if (os.cpu_count() or 1) >= 2 and memory_gib >= 12 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m maspo_verl.sandbox.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument(
        "--methods",
        help=f"comma-separated, from: {', '.join(METHODS)} (replaces the preset's arms; "
        "verl's name vanilla is accepted for grpo)",
    )
    parser.add_argument("--seeds", help="comma-separated integers (preset's by default)")
    parser.add_argument(
        "--arms",
        help="comma-separated arm names: run or report only these of the preset's arms "
        "(with their baselines), e.g. grpo@16,maspo@16",
    )
    for settings_field in fields(RunSettings):
        default = getattr(PRESETS["quick"].settings, settings_field.name)
        parser.add_argument(
            f"--{settings_field.name.replace('_', '-')}",
            type=type(default),
            default=None,
            help=f"(preset's by default; quick: {default})",
        )
    parser.add_argument("--jobs", type=int, default=None, help=f"runs side by side (default here: {default_jobs()})")
    parser.add_argument("--fresh", action="store_true", help="redo finished runs instead of reusing them")
    parser.add_argument(
        "--output-dir", default=None, help="where runs, JSON and PNG go (default: runs/compare-<preset>)"
    )
    parser.add_argument(
        "--cache-dir", default=None, help="warm-up model cache (default: $MASPO_VERL_CACHE or ~/.cache/maspo_verl)"
    )
    parser.add_argument(
        "--script",
        default=str(CPU_SCRIPT),
        help="the CPU training script (default: the packaged maspo_verl/sandbox/tiny/train_cpu.sh)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (lines per validation and run stay)"
    )
    return parser


def _interrupt_on_sigterm() -> None:
    """SIGTERM (a scheduler, `kill`) stops the comparison like Ctrl-C: runs under way are killed, finished ones kept."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def _select_arms(arms: list[Arm], text: str) -> list[Arm]:
    """The arms named in `text` (comma-separated), in the preset's order; each keeps its baseline."""
    by_name = {arm.name: arm for arm in arms}
    wanted = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in by_name]
    if unknown or not wanted:
        raise ValueError(f"--arms {text!r}: unknown arm(s) {unknown}; this preset's arms: {', '.join(by_name)}")
    missing = sorted({by_name[name].baseline for name in wanted} - set(wanted) - {None})
    if missing:
        raise ValueError(f"--arms {text!r} leaves out the baseline(s) {missing} the chosen arms are compared with")
    return [arm for arm in arms if arm.name in wanted]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    preset = PRESETS[args.preset]
    try:
        arms = _parse_methods(args.methods) if args.methods else list(preset.arms)
        if args.arms:
            arms = _select_arms(arms, args.arms)
        seeds = _parse_seeds(args.seeds) if args.seeds else list(preset.seeds)
        chosen = {f.name: getattr(args, f.name) for f in fields(RunSettings) if getattr(args, f.name) is not None}
        settings = replace(preset.settings, **chosen)
        settings.validate()
        for arm in arms:
            arm.run_settings(settings).validate()
        jobs = args.jobs if args.jobs is not None else default_jobs()
        if jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {jobs}")
        script = Path(args.script)
        if not script.is_file():
            raise ValueError(f"--script {script} does not exist")
        output_dir = Path(args.output_dir or f"runs/compare-{args.preset}").resolve()
        _check_output_dir(output_dir)
        require_cpu_backend_verl()
        require_loss_modes(arms)
    except (ValueError, UnsupportedVerlVersion) as error:
        print(f"maspo_verl.sandbox.compare: error: {error}", file=sys.stderr)
        return 2

    from maspo_verl.sandbox.tiny.warmup import WarmupSettings, cached_warmup

    runs_total = len(arms) * len(seeds)
    print(
        f"[compare] {'methods from the command line' if args.methods else 'preset ' + args.preset}: {len(arms)} "
        f"arm(s) x {len(seeds)} seed(s) = {runs_total} main_ppo runs, "
        f"{jobs} at a time; output {output_dir}"
    )
    print(f"[compare] why these settings: {preset.reason if not args.methods else 'chosen on the command line'}")
    unpiloted = preset.in_regime and not REGIME_PICKED_BY_PILOT and not args.methods
    # a trust-region preset without its counted control cannot show that it sees a trust region
    controlled = not preset.in_regime or any(arm.method == "grpo_no_trust_region" for arm in arms)
    if not controlled and not args.methods:
        print(
            "[compare] WARNING: --arms leaves out grpo_no_trust_region, the control that shows the testbed sees a "
            "trust region: the comparison runs as a screen (differences and intervals, no verdicts).",
            file=sys.stderr,
        )
    if unpiloted:
        print(
            f"[compare] WARNING: the regime ({REGIME.name}) is provisional: the pilot has not picked it, so this "
            "testbed has not shown that it can see a trust region (docs/results/README.md). The comparison runs as "
            "a screen: differences and intervals, no verdicts.",
            file=sys.stderr,
        )
    started = time.monotonic()
    warmups, models = {}, {}  # one warm-up per strength the arms start from (the pilot's candidates differ)
    for steps in sorted({arm.run_settings(settings).warmup_steps for arm in arms}):
        warmup_settings = WarmupSettings(steps=steps)
        models[steps], warmups[steps], reused = cached_warmup(warmup_settings, args.cache_dir)
        print(
            f"[compare] warm-up model {'reused from' if reused else 'trained into'} {models[steps]} ({steps} steps, "
            f"greedy val accuracy {warmups[steps]['val_greedy_accuracy']:.2f})"
        )
    data = write_comparison_data(output_dir / "data", WarmupSettings(), settings)

    jobs_list = [(arm, seed) for seed in seeds for arm in arms]  # interleaved: drift hits all arms alike
    progress = Progress(sum(arm.run_settings(settings).steps for arm, _ in jobs_list), enabled=not args.no_progress)
    results: list[RunResult] = []
    interrupted = False
    _interrupt_on_sigterm()
    executor = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = [
            executor.submit(
                run_one,
                arm,
                seed,
                arm.run_settings(settings),
                data,
                models[arm.run_settings(settings).warmup_steps],
                output_dir / "runs" / f"{arm.name}-seed{seed}",
                script,
                progress,
                not args.fresh,
            )
            for arm, seed in jobs_list
        ]
        for future in futures:
            results.append(future.result())
    except KeyboardInterrupt:
        interrupted = True
        executor.shutdown(wait=False, cancel_futures=True)
        killed = kill_live_runs()
        print(
            f"\n[compare] interrupted: killed {killed} run(s) under way; finished runs are kept in "
            f"{output_dir / 'runs'} and reused by the same command",
            file=sys.stderr,
        )
    finally:
        executor.shutdown(wait=not interrupted)
        progress.close()
    if interrupted:
        return 130

    # the planned power belongs to the preset's own design: arms or settings chosen on the command line have none
    # (a run's time limit changes no outcome), nor does a trust-region preset without its control
    outcome_settings = {name for name in chosen if name not in OPERATIONAL_SETTINGS}
    designed = not args.methods and not outcome_settings and not unpiloted and controlled
    if outcome_settings and not args.methods and preset.pilot_seed_sd is not None:
        print(
            f"[compare] note: {', '.join(sorted(outcome_settings))} chosen on the command line: the preset's planned "
            "power does not hold for these settings, so the comparison is a screen (no verdicts).",
            file=sys.stderr,
        )
    contrasts = tuple(c for c in preset.contrasts if not args.methods and {c.arm, c.other} <= {a.name for a in arms})
    analysis = analyse(arms, results, settings, preset.pilot_seed_sd if designed else None, preset.primary, contrasts)
    pilot = None
    if args.preset in PILOT_GRIDS and not args.methods:
        grid = PILOT_GRIDS[args.preset]
        pilot = apply_pilot_rule(
            results, analysis, grid.candidates, grid.order, len(grid.seeds), grid.control_alpha, args.preset
        )
    pairing = step0_check(results)
    environments = environment_check(results)
    report = {
        "preset": args.preset,
        "reason": preset.reason if not args.methods else "chosen on the command line",
        "arms": [asdict(arm) for arm in arms],
        "methods": {arm.method: asdict(METHODS[arm.method]) for arm in arms},
        "seeds": seeds,
        "settings": asdict(settings),
        "jobs": jobs,
        "warmup": next(iter(warmups.values())) if len(warmups) == 1 else warmups,
        "step0_identical_within_seed": pairing,
        "report_environment": machine_and_packages(),  # where this report was written; each run's is in runs[]
        "environment_identical_within_seed": environments,
        "runs": [asdict(r) for r in results],
        "analysis": analysis,
        "pilot": pilot,
        "wall_seconds": time.monotonic() - started,
    }
    (output_dir / "comparison.json").write_text(json.dumps(report, indent=2))
    for seed, check in pairing.items():
        if not check["identical"]:
            print(
                f"[compare] WARNING: seed {seed}: the arms' step-0 validations differ ({check['digests']}): "
                "the runs are not paired; differences carry sampling noise",
                file=sys.stderr,
            )
    for seed, check in environments.items():
        if check["identical"] is None and check["environments"]:
            print(
                f"[compare] note: seed {seed}: {', '.join(check['unrecorded'])} have no environment record (runs "
                "from before records were kept), so whether they ran where the other arms did is unknown",
                file=sys.stderr,
            )
        if check["identical"] is False:
            print(
                f"[compare] WARNING: seed {seed}: its arms were run on different machines or package versions "
                f"({check['environments']}): they may differ by float paths, not only by method; rerun them in one "
                "environment (--fresh) for a paired comparison",
                file=sys.stderr,
            )
    if analysis["per_arm"]:
        pilot_lines = (format_pilot(pilot) if pilot else "") + format_contrasts(analysis)
        (output_dir / "comparison.md").write_text(format_table(arms, analysis, settings) + pilot_lines + "\n")
        print(format_terminal_table(arms, analysis) + pilot_lines)
        print(f"[compare] every number, as a Markdown table: {output_dir / 'comparison.md'}")
        if importlib.util.find_spec("matplotlib") is None:  # the `plot` extra: the runs and the table need none of it
            print(
                "[compare] learning_curves.png not drawn: matplotlib is not installed (pip install 'maspo-verl[plot]')",
                file=sys.stderr,
            )
        else:
            plot(arms, results, output_dir / "learning_curves.png")
    failed = [r for r in results if not r.ok]
    print(
        f"[compare] {len(results) - len(failed)}/{len(results)} runs ok ({sum(r.reused for r in results)} reused) in "
        f"{report['wall_seconds'] / 60:.1f} min; wrote {output_dir / 'comparison.json'}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

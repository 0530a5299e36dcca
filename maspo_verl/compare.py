"""MASPO vs its baselines, each trained by verl's own trainer on CPU, summarised like the paper.

    python -m maspo_verl.compare                      # quick: maspo vs vanilla (GRPO), 1 seed, minutes
    python -m maspo_verl.compare --preset full        # 3 seeds, longer runs
    python -m maspo_verl.compare --methods maspo,vanilla,clip_higher,sapo --seeds 0,1 --steps 12

Every run is stock `python -m verl.trainer.main_ppo` through our CPU script
(`maspo_verl/tiny/train_cpu.sh`, maspo-verl's opt-in CPU patches) on the embedded
arithmetic task, all from the same warmed-up tiny model (`maspo_verl.tiny.warmup`, cached) and
the same data; a method only changes the policy-loss overrides, a seed the data order and the
rollout sampling. Metrics come from verl's file logger (`metrics.jsonl`), Pass@k from verl's
validation dumps; verl's console output goes to `<run>/verl.log`. Written to --output-dir:
`comparison.json`, `learning_curves.png` and, on the console, the table.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from maspo_verl.e2e import CPU_SCRIPT, run_cpu_training

__all__ = ["METHODS", "PRESETS", "Method", "RunSettings", "main", "summarize_run"]

MASPO_KEY = "actor_rollout_ref.actor.policy_loss.maspo"


@dataclass(frozen=True)
class Method:
    label: str
    loss_mode: str
    overrides: tuple[str, ...] = ()


METHODS: dict[str, Method] = {
    "vanilla": Method("GRPO (clip 0.2)", "vanilla"),
    "clip_higher": Method(
        "Clip Higher (0.2/0.28)", "vanilla",
        ("actor_rollout_ref.actor.clip_ratio_low=0.2", "actor_rollout_ref.actor.clip_ratio_high=0.28"),
    ),
    "sapo": Method("SAPO", "sapo"),
    "maspo": Method("MASPO", "maspo"),
    "maspo_hard_gate": Method("MASPO w/o soft gate", "maspo", (f"{MASPO_KEY}.gate=hard",)),
    "maspo_no_mass_adaptive": Method("MASPO w/o mass-adaptive", "maspo", (f"{MASPO_KEY}.mass_adaptive=false",)),
    "maspo_no_risk_control": Method("MASPO w/o risk control", "maspo", (f"{MASPO_KEY}.risk_control=false",)),
    # DCPO's scripts pair DAC with a dual-clip bound of 10 (docs/baselines.md).
    "dac": Method("DAC", "dac", ("actor_rollout_ref.actor.clip_ratio_c=10",)),
    "bapo": Method("BAPO", "bapo"),
    "entropy_advantage": Method(
        "Entropy Advantage (GRPO)", "vanilla", ("actor_rollout_ref.actor.policy_loss.entropy_advantage.enable=true",)
    ),
}


@dataclass(frozen=True)
class RunSettings:
    """Shared by every run of a comparison. Several PPO updates per batch (mini-batches x epochs)
    move the ratio away from 1, which is where the trust region (clip or gate) matters."""

    steps: int = 10
    train_batch_size: int = 8
    rollout_n: int = 8
    ppo_mini_batch_size: int = 4
    ppo_epochs: int = 2
    # 2e-3 collapsed MASPO and GRPO alike within 3 steps (the model stopped writing \boxed{});
    # 3e-4 keeps both writing answers. Chosen on that, before comparing the methods' accuracy.
    learning_rate: float = 3e-4
    val_n: int = 4
    test_freq: int = 5
    max_response_length: int = 8
    run_timeout_s: int = 1200

    def validate(self) -> None:
        for key in ("steps", "train_batch_size", "rollout_n", "ppo_mini_batch_size", "ppo_epochs", "val_n", "test_freq"):
            if getattr(self, key) < 1:
                raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(self, key)}")
        if self.train_batch_size % self.ppo_mini_batch_size:
            raise ValueError(
                f"--ppo-mini-batch-size ({self.ppo_mini_batch_size}) must divide --train-batch-size "
                f"({self.train_batch_size}), as verl requires"
            )
        if self.rollout_n < 2:
            raise ValueError("--rollout-n must be >= 2: GRPO normalises rewards within a group")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"--learning-rate must be a positive number, got {self.learning_rate}")


PRESETS = {
    "quick": dict(methods="maspo,vanilla", seeds="0", settings=RunSettings()),
    "full": dict(methods="maspo,vanilla", seeds="0,1,2", settings=RunSettings(steps=20, test_freq=5)),
}


@dataclass
class RunResult:
    method: str
    seed: int
    ok: bool
    seconds: float
    run_dir: str
    error: str = ""
    summary: dict = field(default_factory=dict)


def _val_key(val_n: int) -> str:
    from maspo_verl.tiny.task import DATA_SOURCE

    return f"val-core/{DATA_SOURCE}/acc/mean@{val_n}"


def summarize_run(run_dir: Path, settings: RunSettings) -> dict:
    """Numbers of one finished run, from verl's file logger and validation dumps."""
    from maspo_verl.evaluation.pass_at_k import latest_dump, load_generations, summarize
    from maspo_verl.evaluation.plot import load_log

    series = load_log(str(run_dir / "metrics.jsonl"))
    val = series.get(_val_key(settings.val_n), [])
    if not val:
        raise ValueError(f"{run_dir / 'metrics.jsonl'} has no {_val_key(settings.val_n)}: did validation run?")

    def last(key):
        return series[key][-1][1] if series.get(key) else None

    def mean(key):
        return statistics.fmean(v for _, v in series[key]) if series.get(key) else None

    generations = load_generations(latest_dump(str(run_dir / "val_generations")))
    (benchmark,) = summarize(generations, settings.val_n)
    summary = {
        "val_acc_start": val[0][1],
        "val_acc_final": val[-1][1],
        "val_acc_best": max(v for _, v in val),
        f"val_pass@{settings.val_n}_final": benchmark.pass_k / 100.0,
        "train_reward_mean": mean("critic/score/mean"),
        "train_reward_last": last("critic/score/mean"),
        "entropy_last": last("actor/entropy"),
        "pg_clipfrac_mean": mean("actor/pg_clipfrac"),
        "ppo_kl_mean": mean("actor/ppo_kl"),
        "steps_logged": len(series.get("critic/score/mean", [])),
    }
    for key in sorted(k for k in series if k.startswith("actor/maspo/")):
        summary[key.replace("actor/", "") + "_mean"] = mean(key)
    return summary


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(results: list[RunResult]) -> dict[str, dict]:
    """Per method: mean and standard deviation over seeds of every summary number."""
    by_method: dict[str, list[RunResult]] = {}
    for result in results:
        if result.ok:
            by_method.setdefault(result.method, []).append(result)
    aggregated = {}
    for method, runs in by_method.items():
        keys = sorted({k for run in runs for k, v in run.summary.items() if v is not None})
        aggregated[method] = {"seeds": [run.seed for run in runs]}
        for key in keys:
            values = [run.summary[key] for run in runs if run.summary.get(key) is not None]
            mean, std = _mean_std(values)
            aggregated[method][key] = {"mean": mean, "std": std}
    return aggregated


def format_table(aggregated: dict[str, dict], settings: RunSettings) -> str:
    k = settings.val_n
    columns = [
        ("val acc start", "val_acc_start"),
        ("val acc final", "val_acc_final"),
        (f"pass@{k} final", f"val_pass@{k}_final"),
        ("train reward", "train_reward_mean"),
        ("entropy", "entropy_last"),
        ("clip/gate frac", "pg_clipfrac_mean"),
        ("gate w", "maspo/gate_weight_mean_mean"),
    ]
    header = ["method", "seeds", *[title for title, _ in columns]]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for method, numbers in aggregated.items():
        cells = [METHODS[method].label, str(len(numbers["seeds"]))]
        for _, key in columns:
            value = numbers.get(key)
            cells.append(f"{value['mean']:.3f} ± {value['std']:.3f}" if value else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: list[RunResult], output: Path) -> None:
    """Learning curves, each method's series averaged over its seeds."""
    from maspo_verl.evaluation.plot import load_log, plot_runs

    per_method: dict[str, list[dict]] = {}
    for result in results:
        if result.ok:
            per_method.setdefault(result.method, []).append(load_log(str(Path(result.run_dir) / "metrics.jsonl")))
    averaged_runs, labels = [], []
    for method, runs in per_method.items():
        averaged = {}
        for key in {k for run in runs for k in run}:
            by_step: dict[int, list[float]] = {}
            for run in runs:
                for step, value in run.get(key, []):
                    by_step.setdefault(step, []).append(value)
            averaged[key] = [(step, statistics.fmean(values)) for step, values in sorted(by_step.items())]
        averaged_runs.append(averaged)
        labels.append(f"{METHODS[method].label} ({len(runs)} seed{'s' if len(runs) > 1 else ''})")
    plot_runs(averaged_runs, labels, str(output))


def _check_output_dir(output_dir: Path) -> None:
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_dir):
            pass
    except OSError as error:
        raise ValueError(f"--output-dir {output_dir} is not writable: {error.strerror or error}") from error


def _run_one(method: str, seed: int, settings: RunSettings, data: dict, model_dir: Path, run_dir: Path,
             script: Path) -> RunResult:
    if run_dir.exists():
        shutil.rmtree(run_dir)
    spec = METHODS[method]
    env = {
        "MODEL_PATH": str(model_dir),
        "TRAIN_FILE": str(data["train"]),
        "VAL_FILE": str(data["val"]),
        "TRAIN_BATCH_SIZE": str(settings.train_batch_size),
        "ROLLOUT_N": str(settings.rollout_n),
        "PPO_MINI_BATCH_SIZE": str(settings.ppo_mini_batch_size),
        "PPO_EPOCHS": str(settings.ppo_epochs),
        "LEARNING_RATE": str(settings.learning_rate),
        "MAX_RESPONSE_LENGTH": str(settings.max_response_length),
        "VAL_N": str(settings.val_n),
        "TEST_FREQ": str(settings.test_freq),
        "SAVE_FREQ": "-1",  # no checkpoints: the comparison reads logs only
        "LOSS_MODE": spec.loss_mode,
    }
    overrides = [
        *spec.overrides,
        f"data.seed={seed}",
        f"actor_rollout_ref.rollout.seed={seed}",
        f"actor_rollout_ref.actor.data_loader_seed={seed}",
        "actor_rollout_ref.rollout.val_kwargs.do_sample=true",  # n samples per problem for Pass@k
        "actor_rollout_ref.rollout.val_kwargs.temperature=1.0",
        f"trainer.validation_data_dir={run_dir / 'val_generations'}",
        f"trainer.experiment_name={method}-seed{seed}",
    ]
    run = run_cpu_training(
        run_dir, settings.steps, overrides, settings.run_timeout_s, env, script=script, log_name="verl.log"
    )
    if run.return_code != 0:
        reason = f"timed out after {settings.run_timeout_s}s" if run.return_code == -1 else f"exit code {run.return_code}"
        return RunResult(method, seed, False, run.seconds, str(run_dir), f"{reason}; see {run.log_path}")
    try:
        summary = summarize_run(run_dir, settings)
    except (OSError, ValueError) as error:
        return RunResult(method, seed, False, run.seconds, str(run_dir), f"{error}; see {run.log_path}")
    return RunResult(method, seed, True, run.seconds, str(run_dir), summary=summary)


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise ValueError(f"--seeds must be comma-separated integers, got {text!r}") from error
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must list distinct integers, got {text!r}")
    return seeds


def _parse_methods(text: str) -> list[str]:
    methods = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown method(s) {unknown or [text]}; choose from {', '.join(METHODS)}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"--methods lists a method twice: {text!r}")
    return methods


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m maspo_verl.compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument("--methods", help=f"comma-separated, from: {', '.join(METHODS)} (preset's by default)")
    parser.add_argument("--seeds", help="comma-separated integers (preset's by default)")
    defaults = RunSettings()
    for key, value in asdict(defaults).items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=None,
                            help=f"(preset's by default; quick: {value})")
    parser.add_argument("--output-dir", default="runs/compare", help="where runs, JSON and PNG go (default: runs/compare)")
    parser.add_argument("--cache-dir", default=None, help="warm-up model cache (default: $MASPO_VERL_CACHE or ~/.cache/maspo_verl)")
    parser.add_argument("--script", default=str(CPU_SCRIPT), help="the CPU training script (default: the packaged maspo_verl/tiny/train_cpu.sh)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    preset = PRESETS[args.preset]
    try:
        methods = _parse_methods(args.methods or preset["methods"])
        seeds = _parse_seeds(args.seeds or preset["seeds"])
        chosen = {key: getattr(args, key) for key in asdict(preset["settings"]) if getattr(args, key) is not None}
        settings = RunSettings(**{**asdict(preset["settings"]), **chosen})
        settings.validate()
        script = Path(args.script)
        if not script.is_file():
            raise ValueError(f"--script {script} does not exist")
        output_dir = Path(args.output_dir).resolve()
        _check_output_dir(output_dir)
    except ValueError as error:
        print(f"maspo_verl.compare: error: {error}", file=sys.stderr)
        return 2

    from tqdm import tqdm

    from maspo_verl.tiny import write_parquet
    from maspo_verl.tiny.warmup import WarmupSettings, cached_warmup

    warmup_settings = WarmupSettings()
    print(f"[compare] {len(methods)} method(s) x {len(seeds)} seed(s) = {len(methods) * len(seeds)} main_ppo runs; "
          f"output {output_dir}")
    started = time.monotonic()
    model_dir, warmup, reused = cached_warmup(warmup_settings, args.cache_dir)
    print(f"[compare] warm-up model {'reused from' if reused else 'trained into'} {model_dir} "
          f"(greedy val accuracy {warmup['val_greedy_accuracy']:.2f})")
    train, val = write_parquet(
        output_dir / "data", warmup_settings.task, warmup_settings.num_train, warmup_settings.num_val,
        warmup_settings.data_seed,
    )

    results = []
    jobs = [(method, seed) for seed in seeds for method in methods]  # interleaved: drift hits all methods alike
    with tqdm(total=len(jobs), desc="runs", unit="run", file=sys.stderr) as progress:
        for method, seed in jobs:
            result = _run_one(method, seed, settings, {"train": train, "val": val}, model_dir,
                              output_dir / "runs" / f"{method}-seed{seed}", script)
            results.append(result)
            if result.ok:
                line = (f"val acc {result.summary['val_acc_start']:.3f} -> {result.summary['val_acc_final']:.3f}, "
                        f"train reward {result.summary['train_reward_mean']:.3f}")
            else:
                line = f"FAILED: {result.error}"
            progress.write(f"[compare] {method} seed {seed}: {line} ({result.seconds:.0f}s)")
            progress.update(1)

    aggregated = aggregate(results)
    report = {
        "methods": {m: asdict(METHODS[m]) for m in methods},
        "seeds": seeds,
        "settings": asdict(settings),
        "warmup": warmup,
        "runs": [asdict(r) for r in results],
        "aggregated": aggregated,
        "wall_seconds": time.monotonic() - started,
    }
    (output_dir / "comparison.json").write_text(json.dumps(report, indent=2))
    if aggregated:
        plot(results, output_dir / "learning_curves.png")
        print(format_table(aggregated, settings))
    failed = [r for r in results if not r.ok]
    print(f"[compare] {len(results) - len(failed)}/{len(results)} runs ok in {report['wall_seconds'] / 60:.1f} min; "
          f"wrote {output_dir / 'comparison.json'}" + (f" and {output_dir / 'learning_curves.png'}" if aggregated else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

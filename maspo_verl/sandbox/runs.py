"""Running a comparison's trainings and reusing finished ones: one verl `main_ppo` run per arm and seed.

`run_one` runs an arm at a seed through the packaged CPU script (`maspo_verl.sandbox.runner.run_cpu_training`), or
reuses a finished run with the same fingerprint (arm, method, settings, seed, data, starting model) and the same
starting weights; `summarize_run` reads the numbers of a finished run from verl's file logger and validation dumps.
Every run records the CPU model and package versions it ran with (`machine_and_packages`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import re
import shutil
import statistics
import sys
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from maspo_verl.sandbox.presets import METHODS, PRESETS, Arm, RunSettings
from maspo_verl.sandbox.runner import run_cpu_training

if TYPE_CHECKING:
    from maspo_verl.sandbox.tiny.warmup import WarmupSettings

__all__ = [
    "ENVIRONMENT_PACKAGES",
    "Progress",
    "RunResult",
    "machine_and_packages",
    "run_environment",
    "run_fingerprint",
    "run_one",
    "run_overrides",
    "summarize_run",
    "weights_digest",
    "write_comparison_data",
]

RUN_RECORD = "run.json"


@dataclass
class RunResult:
    arm: str
    seed: int
    ok: bool
    seconds: float
    run_dir: str
    error: str = ""
    reused: bool = False
    summary: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)  # machine_and_packages() of the process that ran it


def _val_key(val_n: int) -> str:
    from maspo_verl.sandbox.tiny.warmup import WarmupSettings

    return f"val-core/{WarmupSettings().task.data_source}/acc/mean@{val_n}"


def _validation_outcomes(dump: str) -> dict[str, list[bool]]:
    """{data_source/prompt: [correct per sample]} of one validation dump.

    Keyed by the prompt text, which every run shares (verl's validation uids are fresh per run).
    """
    from maspo_verl.experiments.evaluation.jsonl import parse_jsonl
    from maspo_verl.experiments.evaluation.pass_at_k import is_correct

    outcomes: dict[str, list[bool]] = {}
    for problem, correct in parse_jsonl(
        dump, lambda r: (f"{r.get('data_source', 'unknown')}/{r['input']}", is_correct(r))
    ):
        outcomes.setdefault(problem, []).append(correct)
    return dict(sorted(outcomes.items()))


def _dump_digest(dump: str) -> str:
    """Hash of the (prompt, response, score) triples of a validation dump, order-free: equal dumps, equal sampling."""
    records = sorted(
        json.dumps([record.get("input"), record.get("output"), record.get("score")])
        for record in (json.loads(line) for line in Path(dump).read_text().splitlines() if line.strip())
    )
    return hashlib.sha256("\n".join(records).encode()).hexdigest()[:16]


def _problem_accuracies(dumps: list[str]) -> dict[str, float]:
    """{problem: accuracy} over the samples of every dump in `dumps` (one per validation averaged)."""
    correct: dict[str, list[bool]] = {}
    for dump in dumps:
        for problem, outcomes in _validation_outcomes(dump).items():
            correct.setdefault(problem, []).extend(outcomes)
    return {problem: sum(outcomes) / len(outcomes) for problem, outcomes in correct.items()}


def summarize_run(run_dir: Path, settings: RunSettings) -> dict:
    """Numbers of one finished run, from verl's file logger and validation dumps.

    The outcomes (keys of `maspo_verl.sandbox.presets.OUTCOMES`): `val_acc_final`, verl's held-out accuracy at the
    last validation, and `val_acc_last_k`, its mean over the last `settings.val_last_k` validations after step 0,
    with `val_problem_acc_last_k`, the per-problem accuracies that mean is made of (for the problem-level standard
    error of a within-seed difference). `val_curve`: [[step, accuracy]] of every validation. Per-step training
    metrics are averaged over the run (`*_mean`), among them every `actor/maspo/*` and `actor/ratio/*` key.
    """
    from maspo_verl.experiments.evaluation.pass_at_k import latest_dump, pass_at_k
    from maspo_verl.experiments.evaluation.plot import load_log

    series = load_log(str(run_dir / "metrics.jsonl"))
    val = series.get(_val_key(settings.val_n), [])
    if not val:
        raise ValueError(f"{run_dir / 'metrics.jsonl'} has no {_val_key(settings.val_n)}: did validation run?")

    def last(key):
        return series[key][-1][1] if series.get(key) else None

    def mean(key):
        return statistics.fmean(v for _, v in series[key]) if series.get(key) else None

    dumps = run_dir / "val_generations"
    start_dump, final_dump = latest_dump(str(dumps), step=0), latest_dump(str(dumps))
    final = _validation_outcomes(final_dump)
    after_start = [(step, value) for step, value in val if step > 0] or val[-1:]
    last_k = after_start[-settings.val_last_k :]
    rewards = [value for _, value in series.get("critic/score/mean", [])]
    quarter = max(1, len(rewards) // 4)
    summary = {
        "val_acc_start": val[0][1],
        "val_acc_final": val[-1][1],
        "val_acc_last_k": statistics.fmean(value for _, value in last_k),
        "val_last_k_steps": [step for step, _ in last_k],
        "val_problem_acc_last_k": _problem_accuracies([latest_dump(str(dumps), step=step) for step, _ in last_k]),
        "val_curve": [[step, value] for step, value in val],
        "val_acc_rise": val[-1][1] - val[0][1],
        "val_acc_best": max(v for _, v in val),
        f"val_pass@{settings.pass_k}_final": statistics.fmean(
            pass_at_k(len(c), sum(c), settings.pass_k) for c in final.values()
        ),
        # the area under the training-reward curve per step: sampled accuracy on the training problems
        "train_reward_mean": mean("critic/score/mean"),
        "train_reward_first_quarter": statistics.fmean(rewards[:quarter]) if rewards else None,
        "train_reward_last_quarter": statistics.fmean(rewards[-quarter:]) if rewards else None,
        "train_reward_last": last("critic/score/mean"),
        "entropy_last": last("actor/entropy"),
        "pg_clipfrac_mean": mean("actor/pg_clipfrac"),
        "ppo_kl_mean": mean("actor/ppo_kl"),
        "step_seconds_median": statistics.median(v for _, v in series["timing_s/step"])
        if series.get("timing_s/step")
        else None,
        "steps_logged": len(series.get("critic/score/mean", [])),
        "val_start_digest": _dump_digest(start_dump),
    }
    for key in sorted(k for k in series if k.startswith(("actor/maspo/", "actor/ratio/"))):
        summary[key.replace("actor/", "") + "_mean"] = mean(key)
    if summary.get("maspo/gated_frac_pos_mean") is not None:
        summary["maspo/gated_frac_mean"] = summary["maspo/gated_frac_pos_mean"] + summary.get(
            "maspo/gated_frac_neg_mean", 0.0
        )
    if summary["train_reward_first_quarter"] is not None:
        summary["train_reward_quarter_rise"] = (
            summary["train_reward_last_quarter"] - summary["train_reward_first_quarter"]
        )
    return summary


def run_environment(arm: Arm, settings: RunSettings, data: dict, model_dir: Path) -> dict[str, str]:
    """The environment the packaged CPU script reads for one run of `arm` (model, data, sizes, threads)."""
    return {
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
        "LOSS_MODE": METHODS[arm.method].loss_mode,
        "MASPO_CPU_THREADS": str(settings.cpu_threads),
    }


def run_overrides(arm: Arm, seed: int, run_dir: Path) -> list[str]:
    """verl Hydra overrides for one run of `arm` at `seed`: the method's keys, the arm's, seeds and output paths."""
    return [
        *METHODS[arm.method].overrides,
        *arm.overrides,
        f"data.seed={seed}",
        f"actor_rollout_ref.rollout.seed={seed}",
        f"actor_rollout_ref.actor.data_loader_seed={seed}",
        "actor_rollout_ref.rollout.val_kwargs.do_sample=true",  # n samples per problem for Pass@k
        "actor_rollout_ref.rollout.val_kwargs.temperature=1.0",
        f"trainer.validation_data_dir={run_dir / 'val_generations'}",
        f"trainer.experiment_name={arm.name}-seed{seed}",
    ]


ENVIRONMENT_PACKAGES = ("torch", "transformers", "verl", "numpy", "ray", "tensordict", "tokenizers", "maspo-verl")


@functools.lru_cache(maxsize=1)
def machine_and_packages() -> dict:
    """The CPU model, Python and the versions of ENVIRONMENT_PACKAGES of this process.

    Recorded with every run, but not in its fingerprint, so finished runs stay reusable on another
    machine. A run repeats bit for bit on one machine and package set; another CPU model or library
    version may take other float paths (oneDNN/MKL kernels differ by instruction set), and the same
    command then gives other numbers from the first update on. `environment_check` finds the seeds
    whose arms were run in different environments.
    """
    from importlib.metadata import PackageNotFoundError, version

    import torch

    cpu = platform.machine()  # platform.processor() would start `uname -p`
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), cpu)
    except OSError:
        pass
    # A VM's model name can be as vague as "Intel(R) Xeon(R) Processor": the instruction set torch's
    # CPU kernels dispatch on tells machines apart where it matters.
    cpu_capability = torch.backends.cpu.get_cpu_capability()
    packages = {}
    for name in ENVIRONMENT_PACKAGES:
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {"cpu": cpu, "cpu_capability": cpu_capability, "python": platform.python_version(), "packages": packages}


def weights_digest(model_dir: Path) -> str | None:
    """sha256 over the starting model's weight files (*.safetensors), None when there are none.

    The warm-up model's cache name hashes its inputs, not its bits, and the warm-up is trained on the
    CPU it runs on: with the same inputs its final loss was 0.38039273 on an AMD EPYC VM and
    0.38039407 on an Intel Xeon one. A finished run is reused only from the same bits.
    """
    weight_files = sorted(model_dir.glob("*.safetensors")) if model_dir.is_dir() else []
    if not weight_files:
        return None
    digest = hashlib.sha256()
    for path in weight_files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:20]


def write_comparison_data(directory: Path, warmup: WarmupSettings, settings: RunSettings) -> dict[str, Path]:
    """train/val parquet of a comparison. One draw of the task under the warm-up's data seed, in order: the
    warm-up's training problems, then the `val_problems` held-out ones (the warm-up's own validation set is their
    start), then as many again as the warm-up had, unseen by both. RL trains on the first block
    (train_problems="warmup") or the last ("unseen")."""
    from maspo_verl.sandbox.tiny.task import make_problems, write_problem_parquet

    extra = warmup.num_train if settings.train_problems == "unseen" else 0
    problems, _ = make_problems(warmup.task, warmup.num_train + settings.val_problems + extra, 0, warmup.data_seed)
    held_out = problems[warmup.num_train : warmup.num_train + settings.val_problems]
    train = problems[warmup.num_train + settings.val_problems :] if extra else problems[: warmup.num_train]
    train_path, val_path = write_problem_parquet(directory, train, held_out, warmup.task.data_source)
    return {"train": train_path, "val": val_path}


SETTINGS_NOT_FINGERPRINTED = ("run_timeout_s", "val_last_k", "warmup_steps")


def _arm_fields(arm: Arm) -> dict:
    return {k: v for k, v in asdict(arm).items() if k != "sanity" or v}  # as before the field existed


def _digest(content: dict) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _fingerprint_content(arm: Arm, seed: int, settings: RunSettings, data: dict, model_dir: Path) -> dict:
    return {
        "arm": _arm_fields(arm),
        "method": asdict(METHODS[arm.method]),
        "seed": seed,
        # the warm-up is in the model's name; the timeout and val_last_k do not change what a run does
        "settings": {k: v for k, v in asdict(settings).items() if k not in SETTINGS_NOT_FINGERPRINTED},
        "model": model_dir.name,
        "data": {name: hashlib.sha256(Path(path).read_bytes()).hexdigest() for name, path in sorted(data.items())},
    }


def run_fingerprint(arm: Arm, seed: int, settings: RunSettings, data: dict, model_dir: Path) -> str:
    """What a run's outcome depends on: a finished run with the same fingerprint is reused."""
    return _digest(_fingerprint_content(arm, seed, settings, data, model_dir))


def same_run_fingerprints(arm: Arm, seed: int, settings: RunSettings, data: dict, model_dir: Path) -> set[str]:
    """The fingerprints of this run as any preset pairs it: the arm's `baseline` is in the fingerprint (it was from
    the start) but only the analysis reads it, so the same arm paired with another baseline (MASPO against GRPO in
    `full`, MASPO as the baseline in `ablations`) is the same run, and its record is reused. The data is hashed
    once; only the arm's fields change between the candidates."""
    content = _fingerprint_content(arm, seed, settings, data, model_dir)
    baselines = {None, arm.baseline} | {other.name for preset in PRESETS.values() for other in preset.arms}
    return {_digest({**content, "arm": _arm_fields(replace(arm, baseline=b))}) for b in baselines}


class Progress:
    """One bar over all training steps of the comparison, plus a line per validation and per finished run."""

    STEP = re.compile(r"\bstep:(\d+) - ")
    VALIDATION = re.compile(r"val-core/[^:\s]+/acc/mean@\d+:(?:np\.float64\()?([0-9.]+)")

    def __init__(self, total_steps: int, enabled: bool = True):
        from tqdm import tqdm

        # No remaining-time estimate: the first step arrives after a run's start-up (imports, Ray, workers), so
        # a rate from it overstates the rest many times over.
        self.bar = tqdm(
            total=total_steps,
            desc="steps",
            unit="step",
            file=sys.stderr,
            disable=not enabled,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed} elapsed]{postfix}",
        )
        self.lock = threading.Lock()
        self.active: dict[str, int] = {}

    def watcher(self, run: str):
        def on_line(_seconds: float, line: str) -> None:
            match = self.STEP.search(line)
            if not match:
                return
            step = int(match.group(1))
            validation = self.VALIDATION.search(line)
            with self.lock:
                if step > self.active.get(run, 0):
                    self.bar.update(step - self.active.get(run, 0))
                    self.active[run] = step
                self.bar.set_postfix_str(" ".join(f"{name}:{s}" for name, s in sorted(self.active.items())))
                if validation:
                    self.bar.write(f"[compare] {run} step {step}: val acc {float(validation.group(1)):.3f}")

        return on_line

    def finished(self, run: str, steps: int, message: str) -> None:
        with self.lock:
            done = self.active.pop(run, 0)
            self.bar.update(max(0, steps - done))
            self.bar.write(message)

    def close(self) -> None:
        self.bar.close()


def run_one(
    arm: Arm,
    seed: int,
    settings: RunSettings,
    data: dict,
    model_dir: Path,
    run_dir: Path,
    script: Path,
    progress: Progress,
    resume: bool,
) -> RunResult:
    fingerprint = run_fingerprint(arm, seed, settings, data, model_dir)
    weights = weights_digest(model_dir)
    record_path = run_dir / RUN_RECORD
    if resume and record_path.is_file():
        record = json.loads(record_path.read_text())
        # this arm's own fingerprint is among them (its own baseline)
        finished = record["result"]["ok"] and record.get("fingerprint") in same_run_fingerprints(
            arm, seed, settings, data, model_dir
        )
        # records from before weights were kept, or no weights to compare with: as before
        same_weights = weights is None or record.get("weights") in (None, weights)
        if finished and not same_weights:
            progress.bar.write(
                f"[compare] {arm.name} seed {seed}: the finished run in {run_dir} started from other "
                "warm-up weights (built on another machine?): redone from this machine's"
            )
        elif finished:
            # run_dir as it is now: an output folder moved or unpacked elsewhere is still read from where it is;
            # its numbers read again from its logs, so a report always has this version's summary keys
            result = RunResult(**{**record["result"], "reused": True, "run_dir": str(run_dir)})
            try:
                result.summary = summarize_run(run_dir, settings)
            except (OSError, ValueError):
                pass  # logs not kept (e.g. an archive of records only): the recorded numbers
            progress.finished(
                f"{arm.name}-seed{seed}", settings.steps, f"[compare] {arm.name} seed {seed}: reused {run_dir}"
            )
            return result
    if run_dir.exists():
        shutil.rmtree(run_dir)  # unfinished or made with other settings: redo it whole
    name = f"{arm.name}-seed{seed}"
    run = run_cpu_training(
        run_dir,
        settings.steps,
        run_overrides(arm, seed, run_dir),
        settings.run_timeout_s,
        run_environment(arm, settings, data, model_dir),
        script=script,
        log_name="verl.log",
        on_line=progress.watcher(name),
    )
    if run.return_code != 0:
        reason = (
            f"timed out after {settings.run_timeout_s}s" if run.return_code == -1 else f"exit code {run.return_code}"
        )
        result = RunResult(arm.name, seed, False, run.seconds, str(run_dir), f"{reason}; see {run.log_path}")
    else:
        try:
            result = RunResult(
                arm.name,
                seed,
                True,
                run.seconds,
                str(run_dir),
                summary=summarize_run(run_dir, settings),
                environment=machine_and_packages(),
            )
        except (OSError, ValueError) as error:
            result = RunResult(arm.name, seed, False, run.seconds, str(run_dir), f"{error}; see {run.log_path}")
    if result.ok:  # written last: its presence means the run finished
        record_path.write_text(json.dumps({"fingerprint": fingerprint, "weights": weights, "result": asdict(result)}))
    line = (
        f"val acc {result.summary['val_acc_start']:.3f} -> {result.summary['val_acc_final']:.3f}"
        if result.ok
        else f"FAILED: {result.error}"
    )
    progress.finished(name, settings.steps, f"[compare] {arm.name} seed {seed}: {line} ({result.seconds:.0f}s)")
    return result

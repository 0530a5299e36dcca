"""MASPO vs its baselines, each trained by verl's own trainer on CPU: paired runs, CIs, verdicts.

    python -m maspo_verl.sandbox.compare                          # quick: MASPO vs GRPO, 1 seed, ~2.5 min
    python -m maspo_verl.sandbox.compare --preset full            # MASPO vs GRPO, 5 seeds, a positive control
    python -m maspo_verl.sandbox.compare --preset paper           # the paper's main-result methods vs GRPO
    python -m maspo_verl.sandbox.compare --preset ablations       # MASPO without each component vs MASPO
    python -m maspo_verl.sandbox.compare --preset off_policy      # at 4 and 16 updates per rollout batch
    python -m maspo_verl.sandbox.compare --preset sensitivity     # MASPO's alpha x beta grid vs GRPO
    python -m maspo_verl.sandbox.compare --methods maspo,grpo,sapo --seeds 0,1 --steps 12 --jobs 2

Every run is stock `python -m verl.trainer.main_ppo` through the packaged CPU script
(`maspo_verl/sandbox/tiny/train_cpu.sh`, maspo-verl's opt-in CPU patches) on the embedded sorting task.
Runs are paired: every arm of a seed starts from the same warmed-up tiny model
(`maspo_verl.sandbox.tiny.warmup`, cached), sees the same data in the same order, and samples
deterministically (the hf_cpu rollout seeds each sample from the rollout seed, the weights' step,
the prompt and the sample's index), so the arms of a seed share their step-0 validation and
differ only by what the method does. An arm changes the policy-loss overrides and, where its
preset says so, the updates per rollout batch and the learning rate (`off_policy`, `sensitivity`, the
lr-0 controls); a seed changes the data order, the sampling and
the actor's initialisation of randomness.

Statistics at the level of the replication unit, the training seed (maspo_verl.sandbox.statistics):
per arm, the mean over seeds with a 95% t-interval, and its rise from step 0; per arm against its
baseline, the paired t over seeds (S - 1 degrees of freedom) of the primary outcome (final held-out
accuracy), of pass@k and of the area under the training curve, with raw and Holm-adjusted p-values
over all the report's comparisons of that metric and a verdict from the adjusted one. One seed gives
no interval, and the table says so. The minimum detectable difference is the preset's, fixed before
its runs from a pilot's seed-level standard deviation. A positive control, an arm whose effect is
known by construction (GRPO with learning rate 0), shows whether the testbed can see an effect.

A rerun of the same command skips runs already finished with identical settings (a fingerprint in
`<run>/run.json`) and redoes unfinished ones; Ctrl-C kills the runs under way and keeps the
finished ones. Written to --output-dir: `comparison.json`, `comparison.md` (the table),
`learning_curves.png`, each run's verl log in `runs/<arm>-seed<k>/verl.log`. Every run records the
CPU model and package versions it ran with (`machine_and_packages`): a run repeats bit for bit in
one environment, and the report warns when the arms of a seed come from different ones.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import sys
import tempfile
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from maspo_verl.patches import UnsupportedVerlVersion

if TYPE_CHECKING:
    from maspo_verl.sandbox.tiny.warmup import WarmupSettings
from maspo_verl.sandbox.runner import CPU_SCRIPT, kill_live_runs, require_cpu_backend_verl, run_cpu_training

__all__ = ["METHODS", "PRESETS", "Arm", "Method", "Preset", "RunSettings", "main", "summarize_run"]

MASPO_KEY = "actor_rollout_ref.actor.policy_loss.maspo"
BASELINE_METHOD = "grpo"
# What a user may type for a method: verl calls GRPO's loss "vanilla".
METHOD_ALIASES = {"vanilla": "grpo"}
RUN_RECORD = "run.json"
PRIMARY = "val_acc_final"
# Compared per seed against the baseline; each metric's comparisons are one Holm family.
COMPARED_METRICS = ("val_acc_final", "train_reward_mean")


@dataclass(frozen=True)
class Method:
    label: str
    loss_mode: str
    overrides: tuple[str, ...] = ()


METHODS: dict[str, Method] = {
    "grpo": Method("GRPO (clip 0.2)", "vanilla"),
    "clip_higher": Method(
        "Clip Higher (0.2/0.28)",
        "vanilla",
        ("actor_rollout_ref.actor.clip_ratio_low=0.2", "actor_rollout_ref.actor.clip_ratio_high=0.28"),
    ),
    "sapo": Method("SAPO", "sapo"),
    "maspo": Method("MASPO", "maspo"),
    "maspo_hard_gate": Method("MASPO w/o soft gate", "maspo", (f"{MASPO_KEY}.gate=hard",)),
    "maspo_no_mass_adaptive": Method("MASPO w/o mass-adaptive", "maspo", (f"{MASPO_KEY}.mass_adaptive=false",)),
    "maspo_no_risk_control": Method("MASPO w/o risk control", "maspo", (f"{MASPO_KEY}.risk_control=false",)),
    # DCPO's scripts pair DAC with a dual-clip bound of 10 (docs/baselines.md).
    "dac": Method("DAC", "dac", ("actor_rollout_ref.actor.clip_ratio_c=10",)),
    # BAPO as its authors released it (bapo.variant=recipe, the default) and as its paper writes it.
    "bapo": Method("BAPO (recipe)", "bapo"),
    "bapo_paper": Method(
        "BAPO (paper: Eq. 8, Alg. 1)", "bapo", ("actor_rollout_ref.actor.policy_loss.bapo.variant=paper",)
    ),
    "entropy_advantage": Method(
        "Entropy Advantage (GRPO)", "vanilla", ("actor_rollout_ref.actor.policy_loss.entropy_advantage.enable=true",)
    ),
}


TRAIN_PROBLEMS = ("warmup", "unseen")


@dataclass(frozen=True)
class RunSettings:
    """Shared by every run of a comparison (an arm may change some, e.g. the updates per batch).

    Fixed on GRPO alone, on pilot seeds 100-101 the presets never use, before any other method ran on
    the sorting task (docs/results/README.md, "How the testbed was chosen"): with 8 prompts a step
    GRPO learned slowly at lr 5e-4 and collapsed at 1e-3 (one pilot seed fell to 0% accuracy);
    with 16 prompts x 8 responses it rose from 0.23-0.28 to 0.39-0.46 held-out accuracy within 20
    steps at every lr tried from 5e-5 to 5e-4, and a frozen policy did not rise. lr 1e-4 is the
    middle of that range, 10x below the unstable 1e-3. 4 PPO updates per rollout batch (2 mini-batches
    x 2 epochs) move the ratio off 1 (GRPO then clips ~0.6% of tokens; 16 updates: ~1.8% at lr 1e-4,
    ~4% at `off_policy`'s 2.5e-4).
    """

    steps: int = 20
    train_batch_size: int = 16
    rollout_n: int = 8
    ppo_mini_batch_size: int = 8
    ppo_epochs: int = 2
    learning_rate: float = 1e-4
    val_n: int = 8
    val_problems: int = 64
    pass_k: int = 4
    test_freq: int = 10
    max_response_length: int = 8
    # Which problems RL trains on: "warmup", the warm-up's own 2,000 (seen in supervised training), or
    # "unseen", 2,000 drawn after the held-out ones, which neither the warm-up nor validation saw.
    train_problems: str = "warmup"
    # Torch threads per run, the same whatever --jobs is, so a run's numbers do not depend on how
    # many ran beside it. One: on 2 cores, two runs side by side took 8-10 s a step with 2 threads
    # each (spinning OpenMP threads) and 6.6-7.9 s with 1 each, against 4.1-4.6 s for one run
    # alone (README, "Speed of a CPU run").
    cpu_threads: int = 1
    run_timeout_s: int = 1200

    @property
    def updates_per_batch(self) -> int:
        return (self.train_batch_size // self.ppo_mini_batch_size) * self.ppo_epochs

    def validate(self) -> None:
        for key in (
            "steps",
            "train_batch_size",
            "rollout_n",
            "ppo_mini_batch_size",
            "ppo_epochs",
            "val_n",
            "val_problems",
            "pass_k",
            "test_freq",
            "cpu_threads",
            "run_timeout_s",
        ):
            if getattr(self, key) < 1:
                raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(self, key)}")
        if self.train_batch_size % self.ppo_mini_batch_size:
            raise ValueError(
                f"--ppo-mini-batch-size ({self.ppo_mini_batch_size}) must divide --train-batch-size "
                f"({self.train_batch_size}), as verl requires"
            )
        if self.rollout_n < 2:
            raise ValueError("--rollout-n must be >= 2: GRPO normalises rewards within a group")
        if self.pass_k > self.val_n:
            raise ValueError(f"--pass-k ({self.pass_k}) must be <= --val-n ({self.val_n}): pass@k needs k samples")
        if self.train_problems not in TRAIN_PROBLEMS:
            raise ValueError(
                f"--train-problems must be one of {', '.join(TRAIN_PROBLEMS)}, got {self.train_problems!r}"
            )
        if not (self.learning_rate >= 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"--learning-rate must be a number >= 0 (0 freezes the policy), got {self.learning_rate}")


@dataclass(frozen=True)
class Arm:
    """One compared configuration: a method, optionally with its own settings or extra overrides.

    `baseline` names the arm it is paired with (same seeds); None for a baseline itself. `expected` marks a
    positive control: the verdict its effect has by construction ("worse" / "better"), which the report
    checks the testbed detects; None for the arms under test.
    """

    name: str
    method: str
    label: str
    baseline: str | None = None
    settings: tuple[tuple[str, object], ...] = ()
    overrides: tuple[str, ...] = ()
    expected: str | None = None

    def run_settings(self, shared: RunSettings) -> RunSettings:
        return replace(shared, **dict(self.settings))


def _method_arm(method: str, baseline: str | None = BASELINE_METHOD) -> Arm:
    return Arm(method, method, METHODS[method].label, None if method == baseline else baseline)


def _frozen_policy_control(baseline: str = BASELINE_METHOD, suffix: str = "", method: str = "grpo") -> Arm:
    """`method` (GRPO unless told) with learning rate 0: the policy never changes, so its final accuracy is its
    step-0 accuracy and it is worse than the same method learning by exactly that method's rise (a positive
    control, known by construction).

    Half the learning rate was the first candidate; the pilot ruled it out before any preset ran: GRPO reached
    the same accuracy by step 10 at every lr from 5e-5 to 5e-4, so halving it has no effect here to detect."""
    label = f"{METHODS[method].label.split(' (')[0]}, lr 0 (control)"
    return Arm(f"{method}_frozen{suffix}", method, label, baseline, (("learning_rate", 0.0),), expected="worse")


@dataclass(frozen=True)
class Preset:
    """Arms, seeds and settings, each fixed before the preset's runs, with the reason.

    `pilot_seed_sd`: the standard deviation of a per-seed difference of the primary outcome between two arms,
    measured on a pilot of GRPO arms on other seeds (docs/results/README.md) before the preset ran; the
    planned minimum detectable difference comes from it, never from the runs it judges. None: no power figure.
    """

    arms: tuple[Arm, ...]
    seeds: tuple[int, ...]
    settings: RunSettings
    reason: str
    pilot_seed_sd: float | None = None


# The off_policy preset's learning rate, fixed on GRPO alone (pilot seeds 100-101, docs/results/README.md) before
# any other method ran at it: the smallest lr of the first pilot's stable range (5e-5 to 5e-4) at which GRPO, at
# 16 updates per batch, clips several percent of tokens (2-7% a step at 2.5e-4, against 1.8% at the testbed's
# 1e-4), so that the trust region acts, as the comparison needs. Both update counts use it.
OFF_POLICY_LEARNING_RATE = 2.5e-4


def _off_policy_arms(settings: RunSettings, learning_rate: float = OFF_POLICY_LEARNING_RATE) -> tuple[Arm, ...]:
    """GRPO, Clip Higher and MASPO at 16 and 4 PPO updates per rollout batch of 16 prompts, in one epoch: 16
    mini-batches of 1 prompt is the paper's reported 512 / 32 regime. The positive control (a frozen GRPO) is at
    4 updates.

    1 update per batch is left out: there the ratio is 1 up to float rounding, all three methods compute the same
    gradient, and the earlier testbed's runs were identical in every seed. Most updates first: a comparison cut
    short keeps where the methods can differ most."""
    arms = []
    for updates in (16, 4):
        arm_settings = (
            ("ppo_mini_batch_size", settings.train_batch_size // updates),
            ("ppo_epochs", 1),
            ("learning_rate", learning_rate),
        )
        base = f"grpo@{updates}"
        arms.append(Arm(base, "grpo", f"GRPO, {updates} upd/batch", None, arm_settings))
        for method in ("clip_higher", "maspo"):
            arms.append(
                Arm(f"{method}@{updates}", method, f"{METHODS[method].label}, {updates} upd/batch", base, arm_settings)
            )
        if updates == 4:
            control = _frozen_policy_control(base, "@4")
            arms.append(
                replace(control, label=f"{control.label}, 4 upd/batch", settings=(*arm_settings, *control.settings))
            )
    return tuple(arms)


# Where the sensitivity grid runs, fixed before its first draw: alpha and beta act only through the gate's sigma,
# and at the testbed's 4 updates per batch and lr 1e-4 the gate barely acts (mean gate weight 0.9993-0.9995 on
# gated tokens in `full`, GRPO clipping 0.5-0.7% of tokens), so any sigma gives nearly the same update and a grid
# there can only measure noise. The grid therefore runs in `off_policy`'s 16-update regime (lr 2.5e-4, the
# paper's reported batch 512 / mini-batch 32), the one setting where GRPO clips several percent of tokens, with
# GRPO at the same settings as every cell's baseline.
SENSITIVITY_UPDATES = 16


def _sensitivity_arms(settings: RunSettings) -> tuple[Arm, ...]:
    """MASPO over alpha x beta (beta_pos = beta_neg), like the paper's sensitivity analysis, each against GRPO, all
    at `SENSITIVITY_UPDATES` PPO updates per batch (one epoch) and `OFF_POLICY_LEARNING_RATE`."""
    arm_settings = (
        ("ppo_mini_batch_size", settings.train_batch_size // SENSITIVITY_UPDATES),
        ("ppo_epochs", 1),
        ("learning_rate", OFF_POLICY_LEARNING_RATE),
    )
    baseline = f"grpo@{SENSITIVITY_UPDATES}"
    arms = [Arm(baseline, "grpo", f"GRPO, {SENSITIVITY_UPDATES} upd/batch", None, arm_settings)]
    for alpha in (0.0, 0.3, 0.5):
        for beta in (0.0, 0.03, 0.1):
            overrides = (f"{MASPO_KEY}.alpha={alpha}", f"{MASPO_KEY}.beta_pos={beta}", f"{MASPO_KEY}.beta_neg={beta}")
            arms.append(
                Arm(
                    f"maspo_a{alpha}_b{beta}@{SENSITIVITY_UPDATES}",
                    "maspo",
                    f"MASPO alpha {alpha} beta {beta}, {SENSITIVITY_UPDATES} upd/batch",
                    baseline,
                    arm_settings,
                    overrides,
                )
            )
    return tuple(arms)


PAPER_METHODS = ("grpo", "clip_higher", "dac", "entropy_advantage", "bapo", "sapo", "maspo")
ABLATIONS = ("maspo_hard_gate", "maspo_no_mass_adaptive", "maspo_no_risk_control")
TESTBED = RunSettings()
# The standard deviation of a per-seed difference in final held-out accuracy, fixed from the pilot before any
# preset ran (docs/results/README.md): sqrt(2) x the pooled between-seed sd of GRPO's final accuracy over 8 pilot
# runs (0.0205, 4 df), rounded up. Conservative: it ignores pairing, and the pilot's paired differences between
# GRPO arms had sd 0.011 (2 df). The planned MDE's input.
PILOT_SEED_SD = 0.03

PRESETS: dict[str, Preset] = {
    "quick": Preset(
        (_method_arm("maspo"), _method_arm("grpo")),
        (0,),
        TESTBED,
        "about two minutes: shows both methods learn in verl's trainer; one seed gives no interval",
    ),
    "full": Preset(
        (_method_arm("grpo"), _method_arm("maspo"), _frozen_policy_control()),
        tuple(range(5)),
        TESTBED,
        "MASPO vs GRPO with a positive control, as many paired seeds as fit 20 minutes on 2 cores",
        PILOT_SEED_SD,
    ),
    "paper": Preset(
        (*(_method_arm(m) for m in PAPER_METHODS), _frozen_policy_control()),
        (0, 1, 2),
        TESTBED,
        "the paper's main-result methods against GRPO at one shared setting, 3 seeds, with a positive control",
        PILOT_SEED_SD,
    ),
    "ablations": Preset(
        (
            _method_arm("maspo", None),
            *(_method_arm(m, "maspo") for m in ABLATIONS),
            _frozen_policy_control("maspo", method="maspo"),
        ),
        (0, 1, 2),
        TESTBED,
        "MASPO's three components, each switched off, against MASPO itself (what removing it costs, as the paper's "
        "ablation asks), 3 seeds, with a positive control",
        PILOT_SEED_SD,
    ),
    "off_policy": Preset(
        _off_policy_arms(TESTBED),
        (0, 1, 2),
        TESTBED,
        "the axis along which a trust region matters: 4 and 16 PPO updates per rollout batch (16: the paper's "
        "reported batch 512 / mini-batch 32), at lr 2.5e-4, where GRPO clips several percent of tokens",
        PILOT_SEED_SD,
    ),
    "sensitivity": Preset(
        _sensitivity_arms(TESTBED),
        (0, 1),
        TESTBED,
        "MASPO's alpha x beta grid (alpha 0 / 0.3 / 0.5, beta 0 / 0.03 / 0.1) against GRPO, like the paper's "
        "sensitivity analysis, in off_policy's 16-update regime at lr 2.5e-4, where the gate acts; 2 seeds: a "
        "shape, not a test",
    ),
}


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


def summarize_run(run_dir: Path, settings: RunSettings) -> dict:
    """Numbers of one finished run, from verl's file logger and validation dumps."""
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
    rewards = [value for _, value in series.get("critic/score/mean", [])]
    quarter = max(1, len(rewards) // 4)
    summary = {
        "val_acc_start": val[0][1],
        "val_acc_final": val[-1][1],
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
    for key in sorted(k for k in series if k.startswith("actor/maspo/")):
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

    cpu = platform.processor() or platform.machine()
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


def run_fingerprint(arm: Arm, seed: int, settings: RunSettings, data: dict, model_dir: Path) -> str:
    """What a run's outcome depends on: a finished run with the same fingerprint is reused."""
    content = {
        "arm": asdict(arm),
        "method": asdict(METHODS[arm.method]),
        "seed": seed,
        "settings": {k: v for k, v in asdict(settings).items() if k != "run_timeout_s"},
        "model": model_dir.name,
        "data": {name: hashlib.sha256(Path(path).read_bytes()).hexdigest() for name, path in sorted(data.items())},
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:20]


class Progress:
    """One bar over all training steps of the comparison, plus a line per validation and per finished run."""

    STEP = re.compile(r"\bstep:(\d+) - ")
    VALIDATION = re.compile(r"val-core/[^:\s]+/acc/mean@\d+:(?:np\.float64\()?([0-9.]+)")

    def __init__(self, total_steps: int, enabled: bool = True):
        from tqdm import tqdm

        self.bar = tqdm(total=total_steps, desc="steps", unit="step", file=sys.stderr, disable=not enabled, smoothing=0)
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


def _run_one(
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
        finished = record.get("fingerprint") == fingerprint and record["result"]["ok"]
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


# ----------------------------------------------------------------------------------------------
# The report


def _ok_runs(results: list[RunResult]) -> dict[str, dict[int, RunResult]]:
    by_arm: dict[str, dict[int, RunResult]] = {}
    for result in results:
        if result.ok:
            by_arm.setdefault(result.arm, {})[result.seed] = result
    return by_arm


def step0_check(results: list[RunResult]) -> dict[int, dict]:
    """Per seed: do all arms share their step-0 validation (same samples, same scores)?"""
    by_seed: dict[int, dict[str, str]] = {}
    for result in results:
        if result.ok:
            by_seed.setdefault(result.seed, {})[result.arm] = result.summary["val_start_digest"]
    return {
        seed: {"identical": len(set(digests.values())) == 1, "digests": digests}
        for seed, digests in sorted(by_seed.items())
    }


def environment_check(results: list[RunResult]) -> dict[int, dict]:
    """Per seed: were all its arms run on one CPU model and package set (`RunResult.environment`)?

    `identical` is True or False when every arm's environment is recorded, None when some arm's is
    not (runs recorded before environments were: `unrecorded`), unless the recorded ones already differ.
    """
    by_seed: dict[int, dict[str, dict]] = {}
    for result in results:
        if result.ok:
            by_seed.setdefault(result.seed, {})[result.arm] = result.environment
    checks = {}
    for seed, environments in sorted(by_seed.items()):
        recorded = {arm: env for arm, env in environments.items() if env}
        distinct = {json.dumps(env, sort_keys=True) for env in recorded.values()}
        unrecorded = len(recorded) < len(environments)
        checks[seed] = {
            "identical": False if len(distinct) > 1 else (None if unrecorded else True),
            "environments": [json.loads(env) for env in sorted(distinct)],
            "unrecorded": sorted(arm for arm, env in environments.items() if not env),
        }
    return checks


PER_ARM_METRICS = (
    "val_acc_start",
    "val_acc_final",
    "val_acc_rise",
    "train_reward_mean",
    "train_reward_first_quarter",
    "train_reward_last_quarter",
    "train_reward_quarter_rise",
    "entropy_last",
    "pg_clipfrac_mean",
    "ppo_kl_mean",
    "maspo/gated_frac_mean",
    "maspo/gate_weight_mean_mean",
    "step_seconds_median",
)
ALPHA = 0.05


def analyse(
    arms: list[Arm], results: list[RunResult], settings: RunSettings, pilot_seed_sd: float | None = None
) -> dict:
    """Per arm: means over seeds with 95% t-intervals; per arm vs its baseline: the paired t over seeds.

    Each metric of COMPARED_METRICS (and pass@k) is compared per seed; the p-values of one metric over all the
    report's comparisons form one Holm family (the verdict comes from the adjusted p). `planned` holds the
    minimum detectable difference of the primary outcome from `pilot_seed_sd`, fixed before the runs.
    `instrument` says whether the testbed can see: does each baseline learn (the rise of its held-out accuracy
    from step 0 over seeds, its training reward from first to last quarter), and is each positive control
    detected (its verdict on the primary outcome is the one it has by construction)?
    """
    from maspo_verl.sandbox import statistics as stats

    by_arm = _ok_runs(results)
    pass_key = f"val_pass@{settings.pass_k}_final"
    per_arm, paired = {}, {}
    for arm in arms:
        runs = by_arm.get(arm.name, {})
        if not runs:
            continue
        per_arm[arm.name] = {"seeds": sorted(runs)}
        for key in (*PER_ARM_METRICS, pass_key):
            values = [run.summary[key] for run in runs.values() if run.summary.get(key) is not None]
            if values:
                per_arm[arm.name][key] = stats.mean_ci(values).as_dict()
    metrics = (*COMPARED_METRICS, pass_key)
    for arm in arms:
        if arm.baseline is None or arm.name not in by_arm or arm.baseline not in by_arm:
            continue
        seeds = sorted(set(by_arm[arm.name]) & set(by_arm[arm.baseline]))
        if not seeds:
            continue
        paired[arm.name] = {"baseline": arm.baseline, "seeds": seeds, "expected": arm.expected}
        for metric in metrics:
            method = [by_arm[arm.name][seed].summary.get(metric) for seed in seeds]
            baseline = [by_arm[arm.baseline][seed].summary.get(metric) for seed in seeds]
            if None not in method and None not in baseline:
                paired[arm.name][metric] = stats.paired_seed_difference(method, baseline, metric=metric).as_dict()
    for metric in metrics:
        family = {name: pair[metric]["p_value"] for name, pair in paired.items() if metric in pair}
        for name, adjusted in stats.holm_adjust({k: math.nan if p is None else p for k, p in family.items()}).items():
            comparison = paired[name][metric]
            comparison["p_holm"] = adjusted if math.isfinite(adjusted) else None
            comparison["holm_family_size"] = sum(p is not None for p in family.values())
            comparison["verdict"] = stats.verdict(comparison["difference"], adjusted, ALPHA)
    for name, pair in paired.items():
        if pair["expected"] and PRIMARY in pair:
            pair["control_detected"] = pair[PRIMARY]["verdict"] == pair["expected"]
    seeds = max((len(pair["seeds"]) for pair in paired.values()), default=0)
    comparisons = max(1, sum(PRIMARY in pair for pair in paired.values()))
    planned = None
    if pilot_seed_sd is not None and seeds >= 2:
        planned = {
            "pilot_seed_sd": pilot_seed_sd,
            "seeds": seeds,
            "comparisons": comparisons,
            "alpha": ALPHA,
            "power": 0.8,
            "minimum_detectable_difference": stats.planned_minimum_detectable_difference(
                pilot_seed_sd, seeds, comparisons, ALPHA, 0.8
            ),
        }
    instrument = {
        "baselines_learn": {
            arm.name: {
                "val_acc_rise": per_arm[arm.name].get("val_acc_rise"),
                "train_reward_quarter_rise": per_arm[arm.name].get("train_reward_quarter_rise"),
                "rise_interval_excludes_0": (per_arm[arm.name].get("val_acc_rise") or {}).get("low") is not None
                and per_arm[arm.name]["val_acc_rise"]["low"] > 0,
            }
            for arm in arms
            if arm.baseline is None and arm.name in per_arm
        },
        "controls_detected": {name: pair.get("control_detected") for name, pair in paired.items() if pair["expected"]},
    }
    return {"per_arm": per_arm, "paired": paired, "planned": planned, "instrument": instrument}


def _mean(numbers: dict, key: str) -> str:
    value = numbers.get(key)
    return "-" if value is None else f"{value['mean']:.3f}"


def _with_interval(value: dict | None, signed: bool = False) -> str:
    if not value:
        return "-"
    sign = "+" if signed else ""
    center = value.get("difference", value.get("mean"))
    if value.get("low") is None or value.get("high") is None:
        return f"{center:{sign}.3f}"
    return f"{center:{sign}.3f} [{value['low']:{sign}.3f}, {value['high']:{sign}.3f}]"


def _p(value: float | None) -> str:
    return "-" if value is None else ("<0.001" if value < 0.001 else f"{value:.3f}")


def _verdict_cell(pair: dict) -> str:
    comparison = pair.get(PRIMARY)
    if not comparison:
        return "-"
    text = comparison["verdict"]
    if pair.get("expected"):
        text += (
            " (control: detected)"
            if pair.get("control_detected")
            else " (control NOT detected: this testbed cannot judge the methods)"
        )
    return text


def _trust_region_cells(arm: Arm, numbers: dict) -> list[str]:
    """GRPO-style clip fraction, MASPO's gated fraction and gate weight: three quantities, three columns."""
    is_maspo = METHODS[arm.method].loss_mode == "maspo"
    return [
        "-" if is_maspo else _mean(numbers, "pg_clipfrac_mean"),
        _mean(numbers, "maspo/gated_frac_mean") if is_maspo else "-",
        _mean(numbers, "maspo/gate_weight_mean_mean") if is_maspo else "-",
    ]


def format_table(arms: list[Arm], analysis: dict, settings: RunSettings) -> str:
    """The Markdown table of comparison.md: every number of the report, one row per arm."""
    k = settings.pass_k
    header = [
        "arm",
        "seeds",
        "val acc start",
        "val acc final [95% CI]",
        "rise from step 0 [95% CI]",
        "train reward 1st -> last quarter",
        f"pass@{k} final",
        "Δ val acc vs baseline [95% CI]",
        "p",
        "p (Holm)",
        "verdict (val acc)",
        "Δ train reward AUC [95% CI]",
        "p (Holm)",
        f"Δ pass@{k} [95% CI]",
        "clip frac",
        "gated frac",
        "gate w",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for arm in arms:
        numbers = analysis["per_arm"].get(arm.name)
        if numbers is None:
            lines.append(f"| {arm.label} | 0 | no finished run |" + " - |" * (len(header) - 3))
            continue
        pair = analysis["paired"].get(arm.name, {})
        primary, auc, pass_k = pair.get(PRIMARY), pair.get("train_reward_mean"), pair.get(f"val_pass@{k}_final")
        cells = [
            arm.label + (f" (vs {arm.baseline})" if arm.baseline else " (baseline)"),
            str(len(numbers["seeds"])),
            _mean(numbers, "val_acc_start"),
            _with_interval(numbers.get("val_acc_final")),
            _with_interval(numbers.get("val_acc_rise"), signed=True),
            f"{_mean(numbers, 'train_reward_first_quarter')} -> {_mean(numbers, 'train_reward_last_quarter')}",
            _mean(numbers, f"val_pass@{k}_final"),
            _with_interval(primary, signed=True),
            _p(primary["p_value"]) if primary else "-",
            _p(primary["p_holm"]) if primary else "-",
            _verdict_cell(pair),
            _with_interval(auc, signed=True),
            _p(auc["p_holm"]) if auc else "-",
            _with_interval(pass_k, signed=True),
            *_trust_region_cells(arm, numbers),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + _notes(analysis))


def _notes(analysis: dict) -> list[str]:
    notes = []
    if any(pair.get(PRIMARY, {}).get("p_value") is None for pair in analysis["paired"].values()):
        notes.append(
            "One seed: a difference but no interval and no p. One training run says nothing about how a "
            "rerun with another seed would differ; run more seeds (e.g. --preset full)."
        )
    planned = analysis.get("planned")
    if planned:
        notes.append(
            f"Planned minimum detectable difference of final val acc (fixed before the runs): "
            f"{planned['minimum_detectable_difference']:.3f} at {planned['power']:.0%} power, "
            f"{planned['seeds']} seeds, Holm family of {planned['comparisons']}, pilot seed-level sd "
            f"{planned['pilot_seed_sd']:.3f}."
        )
    for name, learns in analysis["instrument"]["baselines_learn"].items():
        rise, quarters = learns["val_acc_rise"], learns["train_reward_quarter_rise"]
        if rise:
            notes.append(
                f"{name} learns: val acc rise from step 0 {_with_interval(rise, signed=True)}; training "
                f"reward last minus first quarter {_with_interval(quarters, signed=True)}."
            )
    for name, detected in analysis["instrument"]["controls_detected"].items():
        if detected is False:
            notes.append(
                f"The positive control {name} was NOT detected: the testbed cannot see a known effect, so "
                "a null result for a method here is no evidence of no effect."
            )
    return [""] + [f"- {note}" for note in notes] if notes else []


TERMINAL_COLUMNS = (
    (22, "arm"),
    (5, "seeds"),
    (13, "acc 0->final"),
    (24, "Δ acc vs base [95% CI]"),
    (7, "p Holm"),
    (24, "verdict"),
)


def format_terminal_table(arms: list[Arm], analysis: dict) -> str:
    """The comparison in <= 100 columns for a terminal: arm (by name), final accuracy, its difference and verdict."""

    def row(cells):
        return " ".join(
            str(cell)[:width].ljust(width) for (width, _), cell in zip(TERMINAL_COLUMNS, cells, strict=True)
        ).rstrip()

    lines = [row([title for _, title in TERMINAL_COLUMNS])]
    for arm in arms:
        numbers = analysis["per_arm"].get(arm.name)
        if numbers is None:
            lines.append(row([arm.name, 0, "no finished run"]))
            continue
        pair = analysis["paired"].get(arm.name, {})
        primary = pair.get(PRIMARY)
        verdict = _verdict_cell(pair).replace(
            " (control NOT detected: this testbed cannot judge the methods)", " (control MISSED)"
        )
        lines.append(
            row(
                [
                    arm.name,
                    len(numbers["seeds"]),
                    f"{_mean(numbers, 'val_acc_start')}->{_mean(numbers, 'val_acc_final')}",
                    _with_interval(primary, signed=True) if primary else "(baseline)",
                    _p(primary["p_holm"]) if primary else "",
                    verdict.replace("(control: detected)", "(control ok)") if primary else "",
                ]
            )
        )
    return "\n".join(lines + [textwrap.fill(line, 100, subsequent_indent="  ") for line in _notes(analysis)])


def plot(arms: list[Arm], results: list[RunResult], output: Path) -> None:
    """Learning curves, each arm's series averaged over its seeds."""
    from maspo_verl.experiments.evaluation.plot import load_log, plot_runs

    by_arm = _ok_runs(results)
    averaged_runs, labels = [], []
    for arm in arms:
        runs = [load_log(str(Path(run.run_dir) / "metrics.jsonl")) for run in by_arm.get(arm.name, {}).values()]
        if not runs:
            continue
        averaged = {}
        for key in {k for run in runs for k in run}:
            by_step: dict[int, list[float]] = {}
            for run in runs:
                for step, value in run.get(key, []):
                    by_step.setdefault(step, []).append(value)
            averaged[key] = [(step, statistics.fmean(values)) for step, values in sorted(by_step.items())]
        averaged_runs.append(averaged)
        labels.append(f"{arm.label} ({len(runs)} seed{'s' if len(runs) > 1 else ''})")
    plot_runs(averaged_runs, labels, str(output))


# ----------------------------------------------------------------------------------------------
# Command line


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
    return [_method_arm(method, baseline) for method in methods]


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
        default = getattr(RunSettings(), settings_field.name)
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
    except (ValueError, UnsupportedVerlVersion) as error:
        print(f"maspo_verl.sandbox.compare: error: {error}", file=sys.stderr)
        return 2

    from maspo_verl.sandbox.tiny.warmup import WarmupSettings, cached_warmup

    warmup_settings = WarmupSettings()
    runs_total = len(arms) * len(seeds)
    print(
        f"[compare] preset {args.preset}: {len(arms)} arm(s) x {len(seeds)} seed(s) = {runs_total} main_ppo runs, "
        f"{jobs} at a time; output {output_dir}"
    )
    print(f"[compare] why these settings: {preset.reason if not args.methods else 'chosen on the command line'}")
    started = time.monotonic()
    model_dir, warmup, reused = cached_warmup(warmup_settings, args.cache_dir)
    print(
        f"[compare] warm-up model {'reused from' if reused else 'trained into'} {model_dir} "
        f"(greedy val accuracy {warmup['val_greedy_accuracy']:.2f})"
    )
    data = write_comparison_data(output_dir / "data", warmup_settings, settings)

    jobs_list = [(arm, seed) for seed in seeds for arm in arms]  # interleaved: drift hits all arms alike
    progress = Progress(sum(arm.run_settings(settings).steps for arm, _ in jobs_list), enabled=not args.no_progress)
    results: list[RunResult] = []
    interrupted = False
    _interrupt_on_sigterm()
    executor = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = [
            executor.submit(
                _run_one,
                arm,
                seed,
                arm.run_settings(settings),
                data,
                model_dir,
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

    analysis = analyse(arms, results, settings, None if args.methods else preset.pilot_seed_sd)
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
        "warmup": warmup,
        "step0_identical_within_seed": pairing,
        "report_environment": machine_and_packages(),  # where this report was written; each run's is in runs[]
        "environment_identical_within_seed": environments,
        "runs": [asdict(r) for r in results],
        "analysis": analysis,
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
        (output_dir / "comparison.md").write_text(format_table(arms, analysis, settings) + "\n")
        print(format_terminal_table(arms, analysis))
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

"""The GPU smoke check of the production path (scripts/gpu_smoke.sh): its reward and its verdict.

scripts/gpu_smoke.sh trains through the experiment scripts' own config (flash-attn with remove-padding,
dynamic batch size, FSDP, vLLM as the scripts set it) on a small real model, in four short runs:

    maspo_dp1        MASPO, 1 step, one PPO mini-batch per step (fully on-policy: r = 1 up to numerics)
    vanilla_dp1      verl's vanilla loss, the same run with the same seed
    maspo_dp2        MASPO as maspo_dp1 on two data-parallel ranks (when two GPUs are there)
    maspo_offpolicy  MASPO, 3 steps, four mini-batches per step (later mini-batches are off-policy)

and then `python -m maspo_verl.experiments.smoke check` reads the runs' metrics files (verl's file
logger, `{"step": N, "data": {...}}` per line) and asserts:

  1. on-policy identity: with r = 1, MASPO's and vanilla's per-token loss are both -A, so the logged
     `actor/pg_loss` (verl's global token-mean over the mini-batch, summed over micro-batches and
     averaged over ranks) equals minus `critic/advantages/mean` (the batch's token-mean advantage);
  2. MASPO equals vanilla: both runs satisfy 1, and when their rollouts coincide (same scores,
     lengths and advantages) their pg_loss and grad_norm agree;
  3. data-parallel invariance: maspo_dp1 and maspo_dp2 both satisfy 1 (a loss scaled by the rank
     count would be off by that factor), and agree directly when their rollouts coincide;
  4. the gate acts: every step of maspo_offpolicy has `actor/maspo/gated_frac_pos + _neg` > 0 and
     `actor/maspo/gate_weight_mean` < 1, with nonzero advantages;
and writes the seconds per training step of each run (`timing_s/step`) to a JSON file.

The reward, `compute_score`, is the math reward (`maspo_verl.experiments.reward`) plus a bonus in
[0, 0.5) from a hash of the response text, so every group of different responses gets different
scores and nonzero advantages, whatever the model solves; `acc` stays the math reward's verdict.

This module reads metrics files only; it imports neither the sandbox nor the command line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "FINGERPRINT_KEYS",
    "RUN_NAMES",
    "Check",
    "check_runs",
    "compute_score",
    "hash_bonus",
    "load_metrics",
    "main",
    "seconds_per_step",
]

RUN_NAMES = ("maspo_dp1", "vanilla_dp1", "maspo_dp2", "maspo_offpolicy")
# Two runs whose rollouts gave these the same values trained on the same batch.
FINGERPRINT_KEYS = (
    "critic/score/mean",
    "critic/advantages/mean",
    "critic/advantages/max",
    "critic/advantages/min",
    "response_length/mean",
    "prompt_length/mean",
)
PG_LOSS = "actor/pg_loss"
ADVANTAGE_MEAN = "critic/advantages/mean"
GRAD_NORM = "actor/grad_norm"
GATED_POS, GATED_NEG = "actor/maspo/gated_frac_pos", "actor/maspo/gated_frac_neg"
GATE_WEIGHT = "actor/maspo/gate_weight_mean"
STEP_SECONDS = "timing_s/step"


def hash_bonus(text: Any) -> float:
    """A deterministic number in [0, 1) from a response's text (sha256), the same in every process."""
    digest = hashlib.sha256(str("" if text is None else text).encode("utf-8", "replace")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def compute_score(
    data_source: Any, solution_str: Any, ground_truth: Any, extra_info: Any = None, **kwargs: Any
) -> dict[str, Any]:
    """verl reward function of the smoke runs: score = math reward (0 or 1) + 0.5 * hash_bonus(response).

    Args: as `maspo_verl.experiments.reward.compute_score` (verl's custom reward signature).

    Returns:
        that function's dict ({"score", "acc", "pred", "data_source"}) with "score" raised by the bonus
        and "smoke_bonus" added; "acc" is the math verdict alone (evaluation reads it).
    """
    from maspo_verl.experiments.reward import compute_score as math_score

    result = dict(math_score(data_source, solution_str, ground_truth, extra_info, **kwargs))
    bonus = 0.5 * hash_bonus(solution_str)
    result["score"] = float(result["score"]) + bonus
    result["smoke_bonus"] = bonus
    return result


def load_metrics(path: str | Path) -> dict[int, dict[str, Any]]:
    """{step: metrics} of one verl file-logger JSONL (later lines of a step update earlier ones)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file not found: {path}")
    steps: dict[int, dict[str, Any]] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            step, data = int(record["step"]), dict(record["data"])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}:{number}: not a verl file-logger line ({error})") from error
        steps.setdefault(step, {}).update(data)
    if not steps:
        raise ValueError(f"{path}: no metrics logged")
    return steps


def _value(metrics: dict[str, Any], key: str, where: str) -> float:
    if key not in metrics:
        raise KeyError(f"{where}: metric {key!r} was not logged")
    value = float(metrics[key])
    if not math.isfinite(value):
        raise ValueError(f"{where}: metric {key!r} is {value}")
    return value


def _training_steps(name: str, steps: dict[int, dict[str, Any]]) -> list[int]:
    """The steps that logged an actor update (validation-only lines are left out)."""
    trained = sorted(step for step, metrics in steps.items() if PG_LOSS in metrics)
    if not trained:
        raise ValueError(f"run {name}: no step logged {PG_LOSS!r} (did the actor update run?)")
    return trained


@dataclass(frozen=True)
class Check:
    """One assertion of the smoke check: its name, verdict and the numbers behind it."""

    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.name}: {self.detail}"


def _first_step(name: str, runs: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    return runs[name][_training_steps(name, runs[name])[0]]


def _identity(name: str, metrics: dict[str, Any], atol: float) -> tuple[Check, float]:
    """Check 1 on a run's first step; returns it and |token-mean advantage| (how telling it is)."""
    where = f"run {name}, first step"
    loss, advantage = _value(metrics, PG_LOSS, where), _value(metrics, ADVANTAGE_MEAN, where)
    residual = loss + advantage
    check = Check(
        f"{name}: on-policy loss = -token-mean advantage",
        abs(residual) <= atol,
        f"{PG_LOSS} {loss:.6g}, {ADVANTAGE_MEAN} {advantage:.6g}, difference {residual:.3g} (tolerance {atol:g})",
    )
    return check, abs(advantage)


def _paired(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two runs' first steps trained on the same rollouts (equal fingerprint metrics)."""
    for key in FINGERPRINT_KEYS:
        if key not in a or key not in b:
            return False
        x, y = float(a[key]), float(b[key])
        if not math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12):
            return False
    return True


def _compare(
    title: str, names: tuple[str, str], runs: dict[str, dict[int, dict[str, Any]]], atol: float, rtol: float
) -> list[Check]:
    """Checks 2 and 3: both runs satisfy the identity; equal values when their rollouts coincide;
    and at least one of these tells the two losses apart from a wrong one."""
    first = [_first_step(name, runs) for name in names]
    checks, magnitudes = [], []
    for name, metrics in zip(names, first, strict=True):
        check, magnitude = _identity(name, metrics, atol)
        checks.append(check)
        magnitudes.append(magnitude)
    telling = min(magnitudes) >= 10 * atol
    if _paired(*first):
        where = [f"run {name}, first step" for name in names]
        losses = [_value(m, PG_LOSS, w) for m, w in zip(first, where, strict=True)]
        norms = [_value(m, GRAD_NORM, w) for m, w in zip(first, where, strict=True)]
        close = abs(losses[0] - losses[1]) <= atol and math.isclose(norms[0], norms[1], rel_tol=rtol, abs_tol=atol)
        checks.append(
            Check(
                f"{title}: same rollouts, same loss and gradient norm",
                close,
                f"{PG_LOSS} {losses[0]:.6g} vs {losses[1]:.6g}, {GRAD_NORM} {norms[0]:.6g} vs {norms[1]:.6g} "
                f"(tolerances {atol:g} absolute, {rtol:g} relative)",
            )
        )
        telling = telling or norms[0] > atol
    checks.append(
        Check(
            f"{title}: the comparison can tell",
            telling,
            "rollouts coincide"
            if _paired(*first)
            else f"rollouts differ; |token-mean advantage| {min(magnitudes):.3g} must be >= {10 * atol:g} "
            "for the identity to tell a wrong loss apart (longer responses or more of them raise it)",
        )
    )
    return checks


def _gate_acts(name: str, steps: dict[int, dict[str, Any]]) -> list[Check]:
    """Check 4: every training step of an off-policy MASPO run gates some tokens with a weight < 1."""
    checks = []
    for step in _training_steps(name, steps):
        where = f"run {name}, step {step}"
        metrics = steps[step]
        gated = _value(metrics, GATED_POS, where) + _value(metrics, GATED_NEG, where)
        weight = _value(metrics, GATE_WEIGHT, where)
        spread = _value(metrics, "critic/advantages/max", where) - _value(metrics, "critic/advantages/min", where)
        checks.append(
            Check(
                f"{name}: the gate acts at step {step}",
                gated > 0 and weight < 1.0 and spread > 0,
                f"gated fraction {gated:.4g} (pos + neg), gate weight mean {weight:.6g}, advantage range {spread:.3g}",
            )
        )
    return checks


def seconds_per_step(runs: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """{run: {"seconds_per_step": [...], "tokens_per_step": [...], ...}} from `timing_s/step` and
    `perf/total_num_tokens`; the first step includes warm-up (kernel compilation, vLLM graphs)."""
    table: dict[str, Any] = {}
    for name, steps in runs.items():
        trained = _training_steps(name, steps)
        seconds = [_value(steps[s], STEP_SECONDS, f"run {name}, step {s}") for s in trained]
        tokens = [steps[s].get("perf/total_num_tokens") for s in trained]
        entry: dict[str, Any] = {"steps": trained, "seconds_per_step": seconds, "tokens_per_step": tokens}
        later = seconds[1:]
        entry["mean_seconds_after_first_step"] = sum(later) / len(later) if later else None
        for key in ("perf/throughput", "response_length/mean", "perf/max_memory_allocated_gb"):
            values = [steps[s][key] for s in trained if key in steps[s]]
            if values:
                entry[key] = values
        table[name] = entry
    return table


def check_runs(
    metrics_files: dict[str, str | Path], atol: float = 2e-3, rtol: float = 1e-2
) -> tuple[list[Check], dict[str, Any]]:
    """All smoke assertions over the runs given ({run name: metrics file}); returns them and the timing table.

    `maspo_dp1`, `vanilla_dp1` and `maspo_offpolicy` are required, `maspo_dp2` is checked when given.
    """
    unknown = sorted(set(metrics_files) - set(RUN_NAMES))
    if unknown:
        raise ValueError(f"unknown run name(s) {unknown}; expected some of {list(RUN_NAMES)}")
    missing = [name for name in ("maspo_dp1", "vanilla_dp1", "maspo_offpolicy") if name not in metrics_files]
    if missing:
        raise ValueError(f"metrics of run(s) {missing} are required")
    runs = {name: load_metrics(path) for name, path in metrics_files.items()}
    checks = _compare("MASPO vs vanilla, on-policy", ("maspo_dp1", "vanilla_dp1"), runs, atol, rtol)
    if "maspo_dp2" in runs:
        checks += [
            c
            for c in _compare("DP1 vs DP2", ("maspo_dp1", "maspo_dp2"), runs, atol, rtol)
            if "maspo_dp1:" not in c.name
        ]
    checks += _gate_acts("maspo_offpolicy", runs["maspo_offpolicy"])
    return checks, seconds_per_step(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m maspo_verl.experiments.smoke check",
        description="the GPU smoke check's assertions over its runs' metrics files (scripts/gpu_smoke.sh)",
    )
    parser.add_argument("command", choices=["check"])
    parser.add_argument("--run", action="append", default=[], metavar="NAME=METRICS_JSONL", help=f"NAME in {RUN_NAMES}")
    parser.add_argument("--output", required=True, help="JSON file for the seconds per step and the verdicts")
    parser.add_argument("--atol", type=float, default=2e-3, help="absolute tolerance of the loss comparisons")
    parser.add_argument("--rtol", type=float, default=1e-2, help="relative tolerance of the gradient-norm comparison")
    args = parser.parse_args(argv)
    files = {}
    for item in args.run:
        name, separator, path = item.partition("=")
        if not separator or not path:
            parser.error(f"--run {item!r}: expected NAME=METRICS_JSONL")
        files[name] = path
    try:
        checks, timing = check_runs(files, atol=args.atol, rtol=args.rtol)
    except (ValueError, KeyError, FileNotFoundError) as error:
        print(f"FAIL smoke check: {error}", file=sys.stderr)
        return 1
    for check in checks:
        print(check.line())
    failed = sum(not c.passed for c in checks)
    report = {
        "passed": failed == 0,
        "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in checks],
        "runs": timing,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(f"smoke check: {len(checks) - failed}/{len(checks)} assertions hold; seconds per step in {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

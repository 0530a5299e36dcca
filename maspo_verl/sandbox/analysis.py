"""The analysis of a comparison at the level of its replication unit, the training seed.

`analyse` turns finished runs into per-arm means over seeds and per-arm paired differences against the arm's
baseline (maspo_verl.sandbox.statistics), under these rules, fixed before the runs (docs/results/README.md):

- Verdicts only on the preset's declared primary outcome; the secondary outcomes (the other held-out accuracy,
  pass@k, the area under the training curve) are descriptive: a difference and its interval, no verdict.
- The methods' comparisons on the primary outcome form one Holm family; the controls (arms with `expected`) are
  judged apart, in a family of their own, and the lr-0 sanity lines each alone: a control is a check of the
  testbed, not a claim about a method, and must not loosen or tighten the methods' threshold.
- The planned minimum detectable difference (exact noncentral t, from the preset's pilot standard deviation) is
  printed with the realised one (from the drawn per-seed differences). A design whose planned MDE exceeds
  `MDE_LIMIT`, or which has no planned MDE, is a screen: its methods get no verdicts.
- Beside the between-seed standard deviation of each difference, the problem-level standard error of a
  within-seed difference says how much of it is evaluation noise.

`step0_check` and `environment_check` check the pairing of the arms of each seed.
"""

from __future__ import annotations

import json
import math
import statistics

from maspo_verl.sandbox import statistics as stats
from maspo_verl.sandbox.presets import Arm, Contrast, RunSettings
from maspo_verl.sandbox.runs import RunResult

__all__ = ["ALPHA", "MDE_LIMIT", "analyse", "environment_check", "ok_runs", "step0_check"]

ALPHA = 0.05
POWER = 0.8
# A design that cannot detect 10 points of held-out accuracy with 80% power is a screen: no verdicts.
MDE_LIMIT = 0.10
SCREEN_VERDICT = "screen: no verdict"
PER_ARM_METRICS = (
    "val_acc_start",
    "val_acc_final",
    "val_acc_last_k",
    "val_acc_rise",
    "train_reward_mean",
    "train_reward_first_quarter",
    "train_reward_last_quarter",
    "train_reward_quarter_rise",
    "entropy_last",
    "pg_clipfrac_mean",
    "ppo_kl_mean",
    "ratio/max_pos_mean",
    "ratio/max_neg_mean",
    "ratio/p99_pos_mean",
    "ratio/p99_neg_mean",
    "maspo/gated_frac_mean",
    "maspo/gate_weight_mean_mean",
    "step_seconds_median",
)


def ok_runs(results: list[RunResult]) -> dict[str, dict[int, RunResult]]:
    """{arm: {seed: run}} of the runs that finished."""
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


def role(arm: Arm) -> str:
    """'method' (judged in the methods' Holm family), 'control' (apart) or 'sanity' (each alone)."""
    if arm.expected is None:
        return "method"
    return "sanity" if arm.sanity else "control"


def _problem_noise(pair_runs: list[tuple[RunResult, RunResult]]) -> dict | None:
    """Problem-level standard error of each seed's within-seed difference of val_acc_last_k, and their root mean
    square, from the per-problem accuracies of the validations the outcome averages."""
    per_seed = []
    for method, baseline in pair_runs:
        a, b = method.summary.get("val_problem_acc_last_k"), baseline.summary.get("val_problem_acc_last_k")
        if not a or not b or set(a) != set(b) or len(a) < 2:
            return None
        per_seed.append(stats.problem_level_standard_error(a, b))
    return {
        "problem_se_per_seed": per_seed,
        "problem_se": math.sqrt(statistics.fmean(se * se for se in per_seed)),
    }


def _judge(paired: dict, names: list[str], primary: str, screen: bool) -> None:
    """Holm over `names` on the primary outcome; the verdict from the adjusted p (none in a screen)."""
    family = {name: paired[name][primary]["p_value"] for name in names}
    adjusted = stats.holm_adjust({k: math.nan if p is None else p for k, p in family.items()})
    for name in names:
        comparison = paired[name][primary]
        comparison["p_holm"] = adjusted[name] if math.isfinite(adjusted[name]) else None
        comparison["holm_family_size"] = sum(p is not None for p in family.values())
        untested = comparison.get("untested", "")
        comparison["verdict"] = stats.verdict(comparison["difference"], adjusted[name], ALPHA, untested or "1 seed")
        if screen and not untested:
            comparison["verdict_if_tested"] = comparison["verdict"]
            comparison["verdict"] = SCREEN_VERDICT


def _control_detected(expected: str, verdict: str) -> bool:
    return verdict in ("better", "worse") if expected == "different" else verdict == expected


def analyse(
    arms: list[Arm],
    results: list[RunResult],
    settings: RunSettings,
    pilot_seed_sd: float | None = None,
    primary: str = "val_acc_final",
    contrasts: tuple[Contrast, ...] = (),
) -> dict:
    """Per arm: means over seeds with 95% t-intervals; per arm vs its baseline: the paired t over seeds.

    Args:
        arms: the compared arms (each with its baseline, role and expected effect).
        results: one RunResult per arm and seed; failed runs are left out.
        settings: the comparison's shared settings (pass@k's k).
        pilot_seed_sd: the standard deviation of a per-seed difference of the primary outcome from a pilot, fixed
            before the runs; None: no planned power, so the methods get no verdicts (a screen).
        primary: the declared primary outcome, the only one with verdicts.
        contrasts: paired differences between two arms (not an arm and its baseline), descriptive.

    Returns {"primary", "per_arm", "paired", "planned", "realised", "design", "instrument", "contrasts"}.
    `paired[arm]` holds per outcome the `SeedDifference` as a dict; the primary's also `p_holm`,
    `holm_family_size`, `verdict`, `between_seed_sd` and the problem-level standard error (`problem_se`).
    `instrument` says whether the testbed can see: does each baseline learn (its held-out rise from step 0, its
    training reward from first to last quarter), is each control detected. `contrasts[name]`: each contrast's
    paired difference on the primary outcome.
    """
    by_arm = ok_runs(results)
    pass_key = f"val_pass@{settings.pass_k}_final"
    secondaries = tuple(m for m in ("val_acc_final", "val_acc_last_k", pass_key, "train_reward_mean") if m != primary)
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
    for arm in arms:
        if arm.baseline is None or arm.name not in by_arm or arm.baseline not in by_arm:
            continue
        seeds = sorted(set(by_arm[arm.name]) & set(by_arm[arm.baseline]))
        if not seeds:
            continue
        paired[arm.name] = {"baseline": arm.baseline, "seeds": seeds, "expected": arm.expected, "role": role(arm)}
        for metric in (primary, *secondaries):
            comparison = _paired_difference(by_arm, arm.name, arm.baseline, seeds, metric)
            if comparison is None:
                continue
            if metric != primary:
                comparison["descriptive"] = True  # a secondary outcome: no verdict
            paired[arm.name][metric] = comparison
        if primary in paired[arm.name]:
            comparison = paired[arm.name][primary]
            comparison["between_seed_sd"] = (
                statistics.stdev(comparison["per_seed"]) if len(comparison["per_seed"]) >= 2 else None
            )
            if primary == "val_acc_last_k" or settings.val_last_k == 1:
                pairs = [(by_arm[arm.name][seed], by_arm[arm.baseline][seed]) for seed in seeds]
                comparison.update(_problem_noise(pairs) or {})

    def members(kind):
        return [name for name, pair in paired.items() if pair["role"] == kind and primary in pair]

    methods = members("method")
    seeds = max((len(pair["seeds"]) for pair in paired.values() if primary in pair), default=0)
    comparisons = max(1, len(methods))
    planned = realised = None
    if pilot_seed_sd is not None and seeds >= 2:
        planned = {
            "pilot_seed_sd": pilot_seed_sd,
            "seeds": seeds,
            "comparisons": comparisons,
            "alpha": ALPHA,
            "power": POWER,
            "minimum_detectable_difference": stats.planned_minimum_detectable_difference(
                pilot_seed_sd, seeds, comparisons, ALPHA, POWER
            ),
        }
    spread = [paired[name][primary]["per_seed"] for name in methods if len(paired[name][primary]["per_seed"]) >= 2]
    drawn_sd = stats.pooled_standard_deviation(spread) if spread else 0.0
    if drawn_sd > 0.0:  # identical per-seed differences have no spread to plan from
        realised = {
            "drawn_seed_sd": drawn_sd,
            "seeds": seeds,
            "comparisons": comparisons,
            "minimum_detectable_difference": stats.planned_minimum_detectable_difference(
                drawn_sd, seeds, comparisons, ALPHA, POWER
            ),
        }
    if seeds < 2:
        design = {"kind": "one seed", "reason": "one seed: no interval, no verdict"}
    elif planned is None:
        design = {"kind": "screen", "reason": "no planned power (no pilot standard deviation): no verdicts"}
    elif planned["minimum_detectable_difference"] > MDE_LIMIT:
        design = {
            "kind": "screen",
            "reason": f"planned MDE {planned['minimum_detectable_difference']:.3f} > {MDE_LIMIT:.2f}: no verdicts",
        }
    else:
        design = {"kind": "test", "reason": f"planned MDE {planned['minimum_detectable_difference']:.3f}"}
    design["mde_limit"] = MDE_LIMIT
    _judge(paired, methods, primary, screen=design["kind"] == "screen")
    _judge(paired, members("control"), primary, screen=False)
    for name in members("sanity"):
        _judge(paired, [name], primary, screen=False)
    for name, pair in paired.items():
        if pair["expected"] and primary in pair:
            pair["control_detected"] = _control_detected(pair["expected"], pair[primary]["verdict"])
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
        "controls_detected": {
            name: pair.get("control_detected") for name, pair in paired.items() if pair["role"] == "control"
        },
        "sanity_detected": {
            name: pair.get("control_detected") for name, pair in paired.items() if pair["role"] == "sanity"
        },
    }
    return {
        "primary": primary,
        "val_last_k": settings.val_last_k,
        "per_arm": per_arm,
        "paired": paired,
        "planned": planned,
        "realised": realised,
        "design": design,
        "instrument": instrument,
        "contrasts": _contrasts(contrasts, by_arm, primary),
    }


def _paired_difference(by_arm: dict, arm: str, other: str, seeds: list[int], metric: str) -> dict | None:
    """`arm` - `other` on `metric` over `seeds` (the paired t, as a dict); None when a run lacks the metric."""
    values = [by_arm[arm][seed].summary.get(metric) for seed in seeds]
    others = [by_arm[other][seed].summary.get(metric) for seed in seeds]
    if None in values or None in others:
        return None
    return stats.paired_seed_difference(values, others, metric=metric).as_dict()


def _contrasts(contrasts: tuple[Contrast, ...], by_arm: dict, primary: str) -> dict:
    """Each contrast's paired difference over the seeds both arms finished, on the primary outcome (descriptive)."""
    drawn = {}
    for contrast in contrasts:
        seeds = sorted(set(by_arm.get(contrast.arm, {})) & set(by_arm.get(contrast.other, {})))
        difference = _paired_difference(by_arm, contrast.arm, contrast.other, seeds, primary) if seeds else None
        if difference is None:
            continue
        drawn[contrast.name] = {
            **difference,
            "arm": contrast.arm,
            "other": contrast.other,
            "label": contrast.label,
            "seeds": seeds,
            "descriptive": True,
        }
    return drawn

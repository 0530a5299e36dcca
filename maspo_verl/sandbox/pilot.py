"""The pilot's rule, which picks the trust-region regime among `PILOT_CANDIDATES` (docs/results/README.md, "Fixed
before the runs": the rule and the grid were written there before any candidate ran).

A candidate passes when, over the pilot seeds,
- learning lasts: GRPO's held-out accuracy rises from step 0 (mean over seeds, its t-interval excluding 0), and
  its rise over the second half of the run (from the validation at steps/2 to the last) is at least
  `SECOND_HALF_SHARE` of its whole rise;
- the no-trust-region control ends detectably apart from GRPO: its verdict on the primary outcome, in the Holm
  family of all the pilot's no-trust-region controls (one per candidate), is better or worse.
The cheapest passing candidate is picked: the smallest mean wall time of its GRPO and control runs. Its planned
seed-level standard deviation is the larger of the sd of GRPO - control per-seed differences and sqrt(2) x GRPO's
between-seed sd of the primary outcome (pairing ignored, as cautious as the earlier pilot), rounded up to 0.005.
"""

from __future__ import annotations

import math
import statistics

from maspo_verl.sandbox.analysis import ok_runs
from maspo_verl.sandbox.presets import PILOT_CANDIDATES, Regime
from maspo_verl.sandbox.runs import RunResult

__all__ = ["SECOND_HALF_SHARE", "apply_pilot_rule", "format_pilot"]

SECOND_HALF_SHARE = 0.25
SD_STEP = 0.005


def _curve_at(run: RunResult, step: int) -> float:
    curve = dict((int(s), v) for s, v in run.summary.get("val_curve", []))
    if step not in curve:
        raise ValueError(f"{run.arm} seed {run.seed}: no validation at step {step} (val_curve steps {sorted(curve)})")
    return curve[step]


def _candidate(candidate: Regime, by_arm: dict, analysis: dict) -> dict:
    grpo, control = f"grpo@{candidate.name}", f"grpo_no_trust_region@{candidate.name}"
    pair = analysis["paired"].get(control, {})
    primary = analysis["primary"]
    if grpo not in by_arm or primary not in pair:
        return {"evaluated": False, "passes": False}
    runs = [by_arm[grpo][seed] for seed in pair["seeds"]]
    start = [_curve_at(run, 0) for run in runs]
    middle = [_curve_at(run, candidate.steps // 2) for run in runs]
    end = [_curve_at(run, candidate.steps) for run in runs]
    whole = statistics.fmean(e - s for s, e in zip(start, end, strict=True))
    second_half = statistics.fmean(e - m for m, e in zip(middle, end, strict=True))
    rise = analysis["per_arm"][grpo].get("val_acc_rise") or {}
    learns = rise.get("low") is not None and rise["low"] > 0
    lasts = learns and whole > 0 and second_half >= SECOND_HALF_SHARE * whole
    verdict = pair[primary]["verdict"]
    apart = verdict in ("better", "worse")
    seconds = [r.seconds for name in (grpo, control) for r in by_arm.get(name, {}).values()]
    grpo_values = [run.summary[primary] for run in runs]
    spreads = [statistics.stdev(pair[primary]["per_seed"]), math.sqrt(2) * statistics.stdev(grpo_values)]
    return {
        "evaluated": True,
        "seeds": pair["seeds"],
        "grpo_rise": whole,
        "grpo_rise_interval_excludes_0": learns,
        "grpo_second_half_rise": second_half,
        "learning_lasts": lasts,
        "control_difference": pair[primary]["difference"],
        "control_p_holm": pair[primary].get("p_holm"),
        "control_verdict": verdict,
        "control_apart": apart,
        "mean_run_seconds": statistics.fmean(seconds) if seconds else None,
        "seed_sd": math.ceil(max(spreads) / SD_STEP - 1e-9) * SD_STEP,
        "passes": lasts and apart,
    }


def apply_pilot_rule(results: list[RunResult], analysis: dict, candidates=PILOT_CANDIDATES) -> dict:
    """The rule above over the pilot's runs and analysis: {"candidates": {name: numbers}, "chosen": name | None}.

    Args:
        results: the pilot's runs (arms `grpo@<name>`, `grpo_no_trust_region@<name>` per candidate).
        analysis: `maspo_verl.sandbox.analysis.analyse` of them, with the pilot preset's primary outcome.
        candidates: the candidate regimes, in the grid's order (ties in cost go to the earlier).
    """
    by_arm = ok_runs(results)
    numbers = {candidate.name: _candidate(candidate, by_arm, analysis) for candidate in candidates}
    passing = [c.name for c in candidates if numbers[c.name]["passes"] and numbers[c.name]["mean_run_seconds"]]
    chosen = min(passing, key=lambda name: numbers[name]["mean_run_seconds"]) if passing else None
    return {"candidates": numbers, "chosen": chosen, "second_half_share": SECOND_HALF_SHARE}


def format_pilot(pilot: dict) -> str:
    """The rule's outcome per candidate and the pick, as lines for the terminal and comparison.md."""
    lines = ["", "Pilot rule (fixed before the runs): learning lasts and the no-trust-region control ends apart."]
    for name, c in pilot["candidates"].items():
        if not c["evaluated"]:
            lines.append(f"- {name}: not evaluated (runs missing)")
            continue
        lines.append(
            f"- {name}: GRPO rise {c['grpo_rise']:+.3f}, second half {c['grpo_second_half_rise']:+.3f} "
            f"(lasts: {'yes' if c['learning_lasts'] else 'no'}); control {c['control_difference']:+.3f}, "
            f"{c['control_verdict']} (apart: {'yes' if c['control_apart'] else 'no'}); "
            f"{c['mean_run_seconds']:.0f} s a run; seed sd {c['seed_sd']:.3f}; {'PASSES' if c['passes'] else 'fails'}"
        )
    chosen = pilot["chosen"]
    lines.append(
        f"Chosen: {chosen} (the cheapest that passes): set REGIME to candidate {chosen} with seed_sd "
        f"{pilot['candidates'][chosen]['seed_sd']:.3f} in maspo_verl/sandbox/presets.py"
        if chosen
        else "No candidate passes: the testbed cannot show a trust region's effect in this grid."
    )
    return "\n".join(lines)

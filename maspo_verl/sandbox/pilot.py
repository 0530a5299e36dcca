"""The pilot's rule, which picks the trust-region regime among `PILOT_CANDIDATES` (docs/results/README.md, "Fixed
before the runs": the rule, the grid and the order of drawing were written there before any candidate ran).

The candidates are drawn one at a time in `DRAW_ORDER`, cheapest first, and the first that passes is the regime.
A candidate passes when, over the pilot seeds,
- learning lasts: GRPO's held-out accuracy rises from step 0 (mean over seeds, its t-interval excluding 0), and
  its rise over the second half of the run (from the validation at steps/2 to the last) is at least
  `SECOND_HALF_SHARE` of its whole rise;
- the no-trust-region control ends detectably apart from GRPO: the paired t over seeds on the primary outcome
  gives p < `CONTROL_ALPHA`, 0.05 / 5 (Bonferroni over the whole grid, however many candidates are drawn, so a
  pick among five is not a chance pass), in either direction.
The second pilot (`PILOT_GRIDS["second_pilot"]`) draws E alone again on fresh seeds, by the same rule at the same
threshold.
Its planned seed-level standard deviation is the larger of the sd of GRPO - control per-seed differences and
sqrt(2) x GRPO's between-seed sd of the primary outcome (pairing ignored, as cautious as the earlier pilot),
rounded up to 0.005.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from maspo_verl.sandbox.analysis import ALPHA, ok_runs
from maspo_verl.sandbox.presets import (
    PILOT_CANDIDATES,
    PILOT_SEEDS,
    SECOND_PILOT_CANDIDATES,
    SECOND_PILOT_SEEDS,
    Regime,
)
from maspo_verl.sandbox.runs import RunResult

__all__ = [
    "CONTROL_ALPHA",
    "DRAW_ORDER",
    "PILOT_GRIDS",
    "SECOND_HALF_SHARE",
    "PilotGrid",
    "apply_pilot_rule",
    "format_pilot",
]

SECOND_HALF_SHARE = 0.25
SD_STEP = 0.005
# Cheapest first by the work of a run: A, B and C train on 16 prompts x 8 responses for 20 steps (one epoch over
# the same 128 responses a step, however many mini-batches) with 11 validations; E trains on twice the responses
# in 20 steps, D on twice the responses over 40 steps, with twice the per-step overhead. Ties: the grid's order.
DRAW_ORDER = ("A", "B", "C", "E", "D")
CONTROL_ALPHA = ALPHA / len(PILOT_CANDIDATES)


@dataclass(frozen=True)
class PilotGrid:
    """One pilot's candidates, the order they are drawn in, the seeds each needs and the control's threshold."""

    candidates: tuple[Regime, ...]
    order: tuple[str, ...]
    seeds: tuple[int, ...]
    control_alpha: float


# Per pilot preset. The second pilot keeps the first's threshold although it has one candidate: E was picked as the
# closest of five on the first pilot's seeds, and passing on fresh seeds at the same bar means what passing the
# first grid would have meant.
PILOT_GRIDS = {
    "pilot": PilotGrid(PILOT_CANDIDATES, DRAW_ORDER, PILOT_SEEDS, CONTROL_ALPHA),
    "second_pilot": PilotGrid(
        SECOND_PILOT_CANDIDATES, tuple(c.name for c in SECOND_PILOT_CANDIDATES), SECOND_PILOT_SEEDS, CONTROL_ALPHA
    ),
}


def _curve_at(run: RunResult, step: int) -> float:
    curve = dict((int(s), v) for s, v in run.summary.get("val_curve", []))
    if step not in curve:
        raise ValueError(f"{run.arm} seed {run.seed}: no validation at step {step} (val_curve steps {sorted(curve)})")
    return curve[step]


def _candidate(candidate: Regime, by_arm: dict, analysis: dict, seeds_needed: int, control_alpha: float) -> dict:
    grpo, control = f"grpo@{candidate.name}", f"grpo_no_trust_region@{candidate.name}"
    pair = analysis["paired"].get(control, {})
    primary = analysis["primary"]
    if grpo not in by_arm or primary not in pair or len(pair["seeds"]) < seeds_needed:
        return {"evaluated": False, "passes": False, "seeds": pair.get("seeds", [])}
    runs = [by_arm[grpo][seed] for seed in pair["seeds"]]
    start = [_curve_at(run, 0) for run in runs]
    middle = [_curve_at(run, candidate.steps // 2) for run in runs]
    end = [_curve_at(run, candidate.steps) for run in runs]
    whole = statistics.fmean(e - s for s, e in zip(start, end, strict=True))
    second_half = statistics.fmean(e - m for m, e in zip(middle, end, strict=True))
    rise = analysis["per_arm"][grpo].get("val_acc_rise") or {}
    learns = rise.get("low") is not None and rise["low"] > 0
    lasts = learns and whole > 0 and second_half >= SECOND_HALF_SHARE * whole
    p_value = pair[primary].get("p_value")
    apart = p_value is not None and math.isfinite(p_value) and p_value < control_alpha
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
        "control_p": p_value,
        "control_apart": apart,
        "mean_run_seconds": statistics.fmean(seconds) if seconds else None,
        "seed_sd": math.ceil(max(spreads) / SD_STEP - 1e-9) * SD_STEP,
        "passes": lasts and apart,
    }


def apply_pilot_rule(
    results: list[RunResult],
    analysis: dict,
    candidates=PILOT_CANDIDATES,
    order=DRAW_ORDER,
    seeds_needed: int = len(PILOT_SEEDS),
    control_alpha: float = CONTROL_ALPHA,
    preset: str = "pilot",
) -> dict:
    """The rule above over the pilot's runs and analysis.

    Args:
        results: the pilot's runs (arms `grpo@<name>`, `grpo_no_trust_region@<name>` per candidate).
        analysis: `maspo_verl.sandbox.analysis.analyse` of them, with the pilot preset's primary outcome.
        candidates: the candidate regimes.
        order: their names in the order they are drawn.
        seeds_needed: a candidate counts as drawn once GRPO and its control finished on this many seeds.
        control_alpha: the control passes at a paired-t p below this.
        preset: the pilot's preset, for the command that draws the next candidate.

    Returns {"candidates": {name: numbers}, "chosen": the first passing candidate in `order` once every one
    before it was drawn and failed, or None, "next": the candidate to draw next when none is chosen (None when
    every one was drawn)}.
    """
    by_arm = ok_runs(results)
    by_name = {candidate.name: candidate for candidate in candidates}
    if sorted(order) != sorted(by_name):
        raise ValueError(f"order {order} must name each candidate {sorted(by_name)} once")
    numbers = {name: _candidate(by_name[name], by_arm, analysis, seeds_needed, control_alpha) for name in order}
    chosen = next_candidate = None
    for name in order:
        if not numbers[name]["evaluated"]:
            next_candidate = name
            break
        if numbers[name]["passes"]:
            chosen = name
            break
    return {
        "candidates": numbers,
        "chosen": chosen,
        "next": next_candidate,
        "order": list(order),
        "control_alpha": control_alpha,
        "second_half_share": SECOND_HALF_SHARE,
        "preset": preset,
    }


def format_pilot(pilot: dict) -> str:
    """The rule's outcome per candidate, in the order drawn, and the pick, as lines for the terminal and
    comparison.md."""
    lines = [
        "\n",  # a blank line: the rule's lines are not part of the table's last note
        f"Pilot rule (fixed before the runs): candidates drawn in the order {', '.join(pilot['order'])}; the first "
        f"where learning lasts and the no-trust-region control ends apart (p < {pilot['control_alpha']:.3f}) is "
        "the regime.",
    ]
    for name, c in pilot["candidates"].items():
        if not c["evaluated"]:
            drawn = f" ({len(c['seeds'])} seeds finished)" if c["seeds"] else ""
            lines.append(f"- {name}: not drawn{drawn}")
            continue
        lines.append(
            f"- {name}: GRPO rise {c['grpo_rise']:+.3f}, second half {c['grpo_second_half_rise']:+.3f} "
            f"(lasts: {'yes' if c['learning_lasts'] else 'no'}); control {c['control_difference']:+.3f}, "
            f"p {'-' if c['control_p'] is None else format(c['control_p'], '.4f')} "
            f"(apart: {'yes' if c['control_apart'] else 'no'}); "
            f"{c['mean_run_seconds']:.0f} s a run; seed sd {c['seed_sd']:.3f}; {'PASSES' if c['passes'] else 'fails'}"
        )
    chosen, next_candidate = pilot["chosen"], pilot["next"]
    if chosen:
        lines.append(
            f"Chosen: {chosen} (the first in the order that passes): set REGIME to candidate {chosen} with seed_sd "
            f"{pilot['candidates'][chosen]['seed_sd']:.3f} in maspo_verl/sandbox/presets.py"
        )
    elif next_candidate:
        up_to = pilot["order"][: pilot["order"].index(next_candidate) + 1]
        arms = ",".join(f"grpo@{name},grpo_no_trust_region@{name}" for name in up_to)
        lines.append(
            f"None chosen yet: draw candidate {next_candidate} next with every candidate before it, whose runs are "
            f"reused (--preset {pilot.get('preset', 'pilot')} --arms {arms})."
        )
    else:
        lines.append("No candidate passes: the testbed cannot show a trust region's effect in this grid.")
    return "\n".join(lines)

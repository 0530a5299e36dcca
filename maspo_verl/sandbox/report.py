"""The report of a comparison: the Markdown table of comparison.md, the terminal table, the learning curves.

Every number comes from `maspo_verl.sandbox.analysis.analyse`. The verdict column is the declared primary
outcome's (controls and sanity lines judged apart from the methods); the secondary outcomes are differences with
intervals, no verdicts; a screen says so in its verdict column and its notes.
"""

from __future__ import annotations

import statistics
import textwrap
from pathlib import Path

from maspo_verl.sandbox.presets import METHODS, OUTCOMES, Arm, RunSettings
from maspo_verl.sandbox.runs import RunResult

__all__ = ["format_contrasts", "format_table", "format_terminal_table", "plot"]


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


def _verdict_cell(pair: dict, primary: str) -> str:
    comparison = pair.get(primary)
    if not comparison:
        return "-"
    text = comparison["verdict"]
    if pair.get("expected"):
        kind = "sanity" if pair.get("role") == "sanity" else "control"
        text += (
            f" ({kind}: detected)"
            if pair.get("control_detected")
            else f" ({kind} NOT detected: this testbed cannot judge the methods)"
        )
    return text


def _ratio(numbers: dict, statistic: str, sign: str) -> str:
    """A ratio statistic (p99 or max) of one advantage sign, mean over steps and seeds (actor/ratio/: every arm's
    loss logs it)."""
    return _mean(numbers, f"ratio/{statistic}_{sign}_mean")


def _trust_region_cells(arm: Arm, numbers: dict) -> list[str]:
    """Clip fraction (verl's pg_clipfrac: for MASPO the share of tokens whose gradient the gate reduces), the ratio
    p99 and max per advantage sign, MASPO's gated fraction and gate weight."""
    is_maspo = METHODS[arm.method].loss_mode == "maspo"
    return [
        _mean(numbers, "pg_clipfrac_mean"),
        f"{_ratio(numbers, 'p99', 'pos')} / {_ratio(numbers, 'p99', 'neg')}",
        f"{_ratio(numbers, 'max', 'pos')} / {_ratio(numbers, 'max', 'neg')}",
        _mean(numbers, "maspo/gated_frac_mean") if is_maspo else "-",
        _mean(numbers, "maspo/gate_weight_mean_mean") if is_maspo else "-",
    ]


def _outcome_name(analysis: dict) -> str:
    """The primary outcome's name, with k (the validations averaged) filled in when the analysis records it."""
    name = OUTCOMES[analysis.get("primary", "val_acc_final")]
    return name.replace("last k ", f"last {analysis['val_last_k']} ") if "val_last_k" in analysis else name


def format_table(arms: list[Arm], analysis: dict, settings: RunSettings) -> str:
    """The Markdown table of comparison.md: every number of the report, one row per arm."""
    k = settings.pass_k
    primary = analysis.get("primary", "val_acc_final")
    secondary_acc = "val_acc_final" if primary != "val_acc_final" else "val_acc_last_k"
    header = [
        "arm",
        "seeds",
        "val acc start",
        f"{_outcome_name(analysis)} [95% CI]",
        "rise from step 0 [95% CI]",
        "train reward 1st -> last quarter",
        f"pass@{k} final",
        "Δ primary vs baseline [95% CI]",
        "p",
        "p (Holm)",
        "verdict (primary)",
        "between-seed sd / problem SE of Δ",
        f"Δ {secondary_acc} [95% CI]",
        "Δ train reward AUC [95% CI]",
        f"Δ pass@{k} [95% CI]",
        "clip frac",
        "ratio p99 A>0 / A<0",
        "ratio max A>0 / A<0",
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
        main = pair.get(primary)
        noise = "-"
        if main and main.get("between_seed_sd") is not None:
            noise = f"{main['between_seed_sd']:.3f}"
        if main and main.get("problem_se") is not None:
            noise += f" / {main['problem_se']:.3f}"
        cells = [
            arm.label + (f" (vs {arm.baseline})" if arm.baseline else " (baseline)"),
            str(len(numbers["seeds"])),
            _mean(numbers, "val_acc_start"),
            _with_interval(numbers.get(primary)),
            _with_interval(numbers.get("val_acc_rise"), signed=True),
            f"{_mean(numbers, 'train_reward_first_quarter')} -> {_mean(numbers, 'train_reward_last_quarter')}",
            _mean(numbers, f"val_pass@{k}_final"),
            _with_interval(main, signed=True),
            _p(main["p_value"]) if main else "-",
            _p(main["p_holm"]) if main else "-",
            _verdict_cell(pair, primary),
            noise,
            _with_interval(pair.get(secondary_acc), signed=True),
            _with_interval(pair.get("train_reward_mean"), signed=True),
            _with_interval(pair.get(f"val_pass@{k}_final"), signed=True),
            *_trust_region_cells(arm, numbers),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + _notes(analysis))


def telescoping_chain(contrasts: list[dict]) -> list[dict]:
    """The leading contrasts that link up, each starting at the arm where the one before ended: their per-seed
    differences add up to the first one's arm minus the last one's other."""
    chain = contrasts[:1]
    for contrast in contrasts[1:]:
        if contrast["arm"] != chain[-1]["other"]:
            break
        chain.append(contrast)
    return chain


def format_contrasts(analysis: dict) -> str:
    """The preset's contrasts (arm - other per seed on the primary outcome, descriptive), with their sum: lines for
    comparison.md and the terminal; empty when the preset has none."""
    contrasts = analysis.get("contrasts") or {}
    if not contrasts:
        return ""
    primary = OUTCOMES[analysis.get("primary", "val_acc_final")]
    lines = ["\n", f"Contrasts ({primary}, per seed, descriptive: no verdicts):"]  # a blank line after the notes
    for name, contrast in contrasts.items():
        lines.append(
            f"- {name}: {contrast['arm']} - {contrast['other']} ({contrast['label']}): "
            f"{_with_interval(contrast, signed=True)} over {len(contrast['seeds'])} seeds, per seed "
            + ", ".join(f"{value:+.3f}" for value in contrast["per_seed"])
        )
    chain = telescoping_chain(list(contrasts.values()))
    if len(chain) > 1 and all(c["seeds"] == chain[0]["seeds"] for c in chain):
        total = [sum(values) for values in zip(*(c["per_seed"] for c in chain), strict=True)]
        names = " + ".join(list(contrasts)[: len(chain)])  # the chain is the contrasts' prefix
        lines.append(
            f"- sum of {names} per seed: " + ", ".join(f"{value:+.3f}" for value in total) + " (telescoping: "
            f"{chain[0]['arm']} - {chain[-1]['other']})"
        )
    return "\n".join(lines)


def _notes(analysis: dict) -> list[str]:
    notes = []
    primary = analysis.get("primary", "val_acc_final")
    design = analysis.get("design") or {}
    pairs = analysis["paired"].values()
    if any(pair.get(primary, {}).get("untested") == "1 seed" for pair in pairs):
        notes.append(
            "One seed: a difference but no interval and no p. One training run says nothing about how a "
            "rerun with another seed would differ; run more seeds (e.g. --preset full)."
        )
    if any(pair.get(primary, {}).get("untested") not in (None, "", "1 seed") for pair in pairs):
        notes.append(
            "Identical per-seed differences: no spread to estimate a standard error from, so no interval, no p "
            "and no verdict."
        )
    if design.get("kind") == "screen":
        notes.append(f"A SCREEN, not a test: {design['reason']}. Differences and intervals only.")
    notes.append(
        "Ratio p99 and max per advantage sign: pi_theta / pi_old over the tokens of each sign in a step's updates, "
        "averaged over steps and seeds (every arm logs them under actor/ratio/)."
    )
    notes.append(
        f"Primary outcome: {_outcome_name(analysis)} (the only one with verdicts; the methods form one Holm family, "
        "controls and sanity lines are judged apart). Secondary outcomes are descriptive."
    )
    planned, realised = analysis.get("planned"), analysis.get("realised")
    if planned:
        text = (
            f"Minimum detectable difference of the primary outcome at {planned['power']:.0%} power, "
            f"{planned['seeds']} seeds, Holm family of {planned['comparisons']}: planned "
            f"{planned['minimum_detectable_difference']:.3f} (pilot seed-level sd {planned['pilot_seed_sd']:.3f}, "
            "fixed before the runs)"
        )
        if realised:
            text += (
                f"; realised {realised['minimum_detectable_difference']:.3f} (drawn seed-level sd "
                f"{realised['drawn_seed_sd']:.3f})"
            )
        notes.append(text + ".")
    noise = [pair[primary]["problem_se"] for pair in pairs if pair.get(primary, {}).get("problem_se") is not None]
    spread = [
        pair[primary]["between_seed_sd"] for pair in pairs if pair.get(primary, {}).get("between_seed_sd") is not None
    ]
    if noise:
        against = ""
        if spread:
            against = f", against a between-seed sd of the difference of {min(spread):.3f}-{max(spread):.3f}"
        notes.append(
            f"Evaluation noise: the problem-level SE of a within-seed difference is {min(noise):.3f}-"
            f"{max(noise):.3f}{against}."
        )
    for name, learns in analysis["instrument"]["baselines_learn"].items():
        rise, quarters = learns["val_acc_rise"], learns["train_reward_quarter_rise"]
        if rise:
            if rise.get("low") is None:
                verdict = "rise not tested (one seed: no interval)"
            elif rise["low"] > 0:
                verdict = "learns (the rise's interval excludes 0)"
            else:
                verdict = "NOT shown to learn (the rise's interval includes 0)"
            notes.append(
                f"{name}: {verdict}: val acc rise from step 0 {_with_interval(rise, signed=True)}; training "
                f"reward last minus first quarter {_with_interval(quarters, signed=True)}."
            )
    for name, detected in analysis["instrument"]["controls_detected"].items():
        if detected is False:
            notes.append(
                f"The control {name} was NOT detected: the testbed cannot see a known effect, so "
                "a null result for a method here is no evidence of no effect."
            )
    return [""] + [f"- {note}" for note in notes] if notes else []


TERMINAL_COLUMNS = (
    (22, "arm"),
    (5, "seeds"),
    (13, "acc 0->prim."),
    (24, "Δ primary vs base [95% CI]"),
    (7, "p Holm"),
    (24, "verdict"),
)


def format_terminal_table(arms: list[Arm], analysis: dict) -> str:
    """The comparison in <= 100 columns for a terminal: arm (by name), its primary outcome, the difference and
    verdict."""
    primary = analysis.get("primary", "val_acc_final")

    def row(cells):
        return " ".join(
            str(cell)[:width].ljust(width) for (width, _), cell in zip(TERMINAL_COLUMNS, cells, strict=True)
        ).rstrip()

    lines = [row([title for _, title in TERMINAL_COLUMNS])]
    for arm in arms:
        numbers = analysis["per_arm"].get(arm.name)
        if numbers is None:
            lines.append(row([arm.name, 0, "no finished run", "", "", ""]))
            continue
        pair = analysis["paired"].get(arm.name, {})
        main = pair.get(primary)
        verdict = _verdict_cell(pair, primary)
        for kind in ("control", "sanity"):
            verdict = verdict.replace(f"({kind}: detected)", f"({kind} ok)").replace(
                f" ({kind} NOT detected: this testbed cannot judge the methods)", f" ({kind} MISSED)"
            )
        lines.append(
            row(
                [
                    arm.name,
                    len(numbers["seeds"]),
                    f"{_mean(numbers, 'val_acc_start')}->{_mean(numbers, primary)}",
                    _with_interval(main, signed=True) if main else "(baseline)",
                    _p(main["p_holm"]) if main else "",
                    verdict if main else "",
                ]
            )
        )
    return "\n".join(lines + [textwrap.fill(line, 100, subsequent_indent="  ") for line in _notes(analysis)])


def plot(arms: list[Arm], results: list[RunResult], output: Path) -> None:
    """Learning curves, each arm's series averaged over its seeds."""
    from maspo_verl.experiments.evaluation.plot import load_log, plot_runs
    from maspo_verl.sandbox.analysis import ok_runs

    by_arm = ok_runs(results)
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

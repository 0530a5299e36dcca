"""Plot a run's training dynamics (reward, entropy, response length, validation accuracy and MASPO's
gate metrics) from its logs to one PNG; several runs overlay for comparison.

    python -m maspo_verl.experiments.evaluation.plot outputs/maspo/maspo-r1-distill-1.5b/metrics.jsonl \
        outputs/maspo/grpo-r1-distill-1.5b/metrics.jsonl --label MASPO --label GRPO -o dynamics.png

A log is verl's file-logger JSONL (`{"step": N, "data": {metric: value}}` per line, written to
$VERL_FILE_LOGGER_PATH, which the run scripts set to <run dir>/metrics.jsonl) or a TensorBoard
folder (verl's `tensorboard` logger, $TENSORBOARD_DIR). The `metrics.part<N>.jsonl` files a resumed
run keeps beside `metrics.jsonl` are read with it, oldest first.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections import defaultdict

from maspo_verl.experiments.evaluation.jsonl import log_parts, parse_jsonl

__all__ = ["DEFAULT_PANELS", "load_log", "panels_for", "plot_runs"]

# (title, metric key or prefix ending in "*"); the MASPO gate metrics come from maspo_verl.loss.
DEFAULT_PANELS = (
    ("Training reward", "critic/score/mean"),
    ("Policy entropy", "actor/entropy"),
    ("Response length (tokens)", "response_length/mean"),
    ("Validation accuracy, mean over benchmarks", "val-core/*/acc/mean@*"),
    ("Clipped / gated fraction", "actor/pg_clipfrac"),
    ("MASPO", "actor/maspo/*"),
)

Series = dict[str, list[tuple[int, float]]]


def _load_jsonl(path: str) -> Series:
    """All parts of a (resumed) run's metrics; a step logged again by a later part keeps the later value."""
    values: dict[str, dict[int, float]] = defaultdict(dict)
    for part in log_parts(path):
        for step, data in parse_jsonl(part, lambda record: (int(record["step"]), dict(record["data"]))):
            for key, value in data.items():
                if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                    values[key][step] = float(value)
    return {key: sorted(by_step.items()) for key, by_step in values.items()}


def _load_tensorboard(folder: str) -> Series:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(folder, size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]
    }


def load_log(path: str) -> Series:
    """{metric: [(step, value), ...]} from a verl file-logger JSONL or a TensorBoard folder."""
    if os.path.isdir(path):
        series = _load_tensorboard(path)
    elif log_parts(path):
        series = _load_jsonl(path)
    else:
        raise FileNotFoundError(f"{path}: no such log file or TensorBoard folder")
    if not series:
        raise ValueError(f"{path}: no scalar metrics in this log")
    return {key: sorted(points) for key, points in series.items()}


def _matches(pattern: str, key: str) -> bool:
    if "*" not in pattern:
        return key == pattern
    parts = pattern.split("*")
    if not (key.startswith(parts[0]) and key.endswith(parts[-1])):
        return False
    position = len(parts[0])
    for part in parts[1:-1]:
        found = key.find(part, position)
        if found < 0:
            return False
        position = found + len(part)
    return position <= len(key) - len(parts[-1])


def panels_for(runs: list[Series], panels=DEFAULT_PANELS) -> list[tuple[str, list[str], bool]]:
    """(title, keys, average the keys?) for each panel some run has data for.

    A `val-core` pattern is averaged over benchmarks into one line; other patterns get one panel per key.
    """
    present = sorted({key for run in runs for key in run})
    result = []
    for title, pattern in panels:
        keys = [key for key in present if _matches(pattern, key)]
        if not keys:
            continue
        if pattern.startswith("val-core"):
            result.append((title, keys, True))
        elif "*" in pattern:
            result += [(f"{title}: {key.rsplit('/', 1)[-1]}", [key], False) for key in keys]
        else:
            result.append((title, keys, False))
    return result


def _averaged(run: Series, keys: list[str]) -> list[tuple[int, float]]:
    by_step = defaultdict(list)
    for key in keys:
        for step, value in run.get(key, []):
            by_step[step].append(value)
    return [(step, sum(values) / len(values)) for step, values in sorted(by_step.items())]


def plot_runs(runs: list[Series], labels: list[str], output: str, panels=DEFAULT_PANELS) -> list[str]:
    """Write the PNG; return the titles of the panels drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = panels_for(runs, panels)
    if not chosen:
        wanted = ", ".join(pattern for _, pattern in panels)
        raise ValueError(f"none of the plotted metrics ({wanted}) is in the log(s)")
    columns = min(3, len(chosen))
    rows = math.ceil(len(chosen) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.4 * rows), squeeze=False)
    # One colour per run in every panel (the legend is drawn once), also in panels some runs lack.
    palette = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20")
    colors = [palette(index % palette.N) for index in range(len(runs))]
    for axis, (title, keys, average) in zip(axes.flat, chosen, strict=False):
        for run, label, color in zip(runs, labels, colors, strict=True):
            points = _averaged(run, keys) if average else run.get(keys[0], [])
            if points:
                steps, values = zip(*points, strict=True)
                axis.plot(
                    steps, values, label=label, color=color, marker="o" if len(points) < 20 else None, markersize=3
                )
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(chosen) :]:
        axis.set_visible(False)
    if len(runs) > 1:
        axes.flat[0].legend(fontsize=8)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return [title for title, _, _ in chosen]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m maspo_verl.experiments.evaluation.plot", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("logs", nargs="+", help="metrics.jsonl files (verl file logger) or TensorBoard folders")
    parser.add_argument(
        "--label", action="append", default=[], help="legend label per log, in order (default: file name)"
    )
    parser.add_argument("-o", "--output", default="training_dynamics.png", help="PNG to write")
    args = parser.parse_args(argv)
    if args.label and len(args.label) != len(args.logs):
        parser.error(f"got {len(args.label)} --label for {len(args.logs)} logs")
    labels = args.label or [os.path.basename(os.path.normpath(log)) for log in args.logs]
    try:
        titles = plot_runs([load_log(log) for log in args.logs], labels, args.output)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.output} ({len(titles)} panels: {', '.join(titles)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

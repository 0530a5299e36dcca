"""Avg@k and unbiased Pass@k from verl's validation dumps, in the layout of the MASPO paper's table.

    python -m maspo_verl.experiments.evaluation.pass_at_k outputs/maspo/maspo-r1-distill-1.5b/val_generations \
        [--label MASPO] [more dumps ...] [--k 32] [--step N]

verl writes one `<step>.jsonl` per validation into `trainer.validation_data_dir`, one line per
response with at least `input`, `output`, `score`, `step` and every key the reward function returned
(ours adds `acc`, `pred` and `data_source`) plus `uid` = `<prompt uid>_<session>_<index>`.

Avg@k (the paper's Avg@32, verl's val-core/<data_source>/acc/mean@32) is the mean accuracy over all
responses. Pass@k is the unbiased estimator of Chen et al. 2021 (arXiv 2107.03374, Eq. 1) averaged
over problems: 1 - C(n - c, k) / C(n, k) for a problem with n samples of which c are correct. verl's
own best@k metric is a bootstrap estimate, not this.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections import defaultdict
from dataclasses import dataclass

from maspo_verl.experiments.evaluation.jsonl import parse_jsonl

__all__ = [
    "is_correct",
    "BENCHMARK_ORDER",
    "BenchmarkResult",
    "format_table",
    "latest_dump",
    "load_generations",
    "pass_at_k",
    "summarize",
]

# Column order of the paper's main table.
BENCHMARK_ORDER = ("aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench")
_TITLES = {
    "aime24": "AIME24",
    "aime25": "AIME25",
    "amc23": "AMC23",
    "math500": "MATH500",
    "minerva": "Minerva",
    "olympiadbench": "Olympiad",
}


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021, arXiv 2107.03374, Eq. 1): 1 - C(n-c, k) / C(n, k).

    Computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i), which stays exact in floating point for large n.
    """
    if not 0 <= num_correct <= num_samples:
        raise ValueError(f"num_correct must be in [0, num_samples={num_samples}], got {num_correct}")
    if not 1 <= k <= num_samples:
        raise ValueError(f"k must be in [1, num_samples={num_samples}], got {k}")
    if num_samples - num_correct < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(num_samples - num_correct + 1, num_samples + 1))


@dataclass
class BenchmarkResult:
    """Scores of one benchmark: Avg@k and Pass@k in percent."""

    name: str
    num_problems: int
    samples_per_problem: int
    average: float
    pass_k: float


def latest_dump(path: str, step: int | None = None) -> str:
    """The `<step>.jsonl` of a validation_data_dir (the highest step unless `step` is given), or `path` itself."""
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such validation dump file or folder")
    steps = {
        int(name[: -len(".jsonl")]): name
        for name in os.listdir(path)
        if name.endswith(".jsonl") and name[: -len(".jsonl")].isdigit()
    }
    if not steps:
        raise FileNotFoundError(f"{path}: no <step>.jsonl validation dumps (set trainer.validation_data_dir)")
    if step is not None and step not in steps:
        raise FileNotFoundError(f"{path}: no dump for step {step}; steps present: {sorted(steps)}")
    return os.path.join(path, steps[step if step is not None else max(steps)])


def is_correct(record: dict) -> bool:
    """Whether one line of verl's validation dump scored its response correct (`acc`, else `score` > 0)."""
    value = record.get("acc", record.get("score"))
    if value is None:
        raise ValueError("a dump line has neither 'acc' nor 'score'")
    return float(value) > 0


def load_generations(path: str) -> dict[str, dict[str, list[bool]]]:
    """{data_source: {problem: [correct, ...]}} from one dump file.

    A problem is the prompt uid verl writes (`uid` minus its `_<session>_<index>` suffix), else the input text.
    """

    def outcome(record: dict) -> tuple[str, str, bool]:
        uid = record.get("uid")
        problem = str(uid).rsplit("_", 2)[0] if uid is not None else str(record.get("input"))
        return str(record.get("data_source", "unknown")), problem, is_correct(record)

    grouped: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for data_source, problem, correct in parse_jsonl(path, outcome):
        grouped[data_source][problem].append(correct)
    return grouped


def summarize(generations: dict[str, dict[str, list[bool]]], k: int) -> list[BenchmarkResult]:
    """Avg@k and Pass@k per benchmark, in the paper's column order, then any other data_source."""
    results = []
    names = [name for name in BENCHMARK_ORDER if name in generations] + sorted(set(generations) - set(BENCHMARK_ORDER))
    for name in names:
        problems = generations[name]
        samples = [len(outcomes) for outcomes in problems.values()]
        if min(samples) < k:
            raise ValueError(
                f"{name}: a problem has only {min(samples)} samples, fewer than k={k} "
                "(raise actor_rollout_ref.rollout.val_kwargs.n or lower --k)"
            )
        flat = [outcome for outcomes in problems.values() for outcome in outcomes]
        pass_values = [pass_at_k(len(outcomes), sum(outcomes), k) for outcomes in problems.values()]
        results.append(
            BenchmarkResult(
                name=name,
                num_problems=len(problems),
                samples_per_problem=min(samples),
                average=100.0 * sum(flat) / len(flat),
                pass_k=100.0 * sum(pass_values) / len(pass_values),
            )
        )
    return results


def format_table(rows: list[tuple[str, list[BenchmarkResult]]], k: int) -> str:
    """Markdown table: one row per run, one column per benchmark plus their mean, cells 'Avg@k / Pass@k'."""
    names = []
    for _, results in rows:
        names += [result.name for result in results if result.name not in names]
    header = ["Method", *[_TITLES.get(name, name) for name in names], "Avg."]
    lines = [
        f"Avg@{k} / Pass@{k} (%)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for label, results in rows:
        by_name = {result.name: result for result in results}
        cells = [f"{by_name[n].average:.1f} / {by_name[n].pass_k:.1f}" if n in by_name else "-" for n in names]
        mean_average = sum(r.average for r in results) / len(results)
        mean_pass = sum(r.pass_k for r in results) / len(results)
        lines.append("| " + " | ".join([label, *cells, f"{mean_average:.1f} / {mean_pass:.1f}"]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m maspo_verl.experiments.evaluation.pass_at_k", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("dumps", nargs="+", help="validation_data_dir folders or <step>.jsonl files, one per run")
    parser.add_argument("--label", action="append", default=[], help="row label per dump, in order (default: the path)")
    parser.add_argument("--k", type=int, default=32, help="k of Avg@k / Pass@k (default 32, the paper's)")
    parser.add_argument("--step", type=int, default=None, help="validation step to read (default: the latest)")
    args = parser.parse_args(argv)
    if args.label and len(args.label) != len(args.dumps):
        parser.error(f"got {len(args.label)} --label for {len(args.dumps)} dumps")
    rows = []
    try:
        for index, dump in enumerate(args.dumps):
            path = latest_dump(dump, args.step)
            label = args.label[index] if args.label else dump
            rows.append((label, summarize(load_generations(path), args.k)))
            print(f"{label}: {path}", file=sys.stderr)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(format_table(rows, args.k))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

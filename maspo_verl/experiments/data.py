"""Write verl RL parquet for the MASPO math experiments (arXiv 2602.17550).

    python -m maspo_verl.experiments.data --dataset all --output-dir ~/data/maspo
    python -m maspo_verl.experiments.data --dataset aime24 --input path/to/test.parquet --output-dir ~/data/maspo

Datasets: the training set DAPO-Math-17k and the paper's six evaluation sets (AIME24, AIME25,
AMC23, MATH500, Minerva, OlympiadBench). `--input` is a hub dataset name (downloaded with the
`datasets` library when the command runs, never at import) or a local .parquet/.jsonl/.json/.csv file
or a folder of them. A mixed file such as the authors' xuekai/flowrl-data-collection
`math_data/test.parquet` works too: rows whose `data_source` names the requested benchmark are kept.

Each output row follows verl's RL schema:
    data_source   the benchmark name (aime24, ...; dapo_math for training)
    prompt        [{"role": "user", "content": <problem> + R1 instruction}]
    ability       "math"
    reward_model  {"style": "rule", "ground_truth": <answer>}
    extra_info    {"split": "train" | "test", "index": <row number>}
The prompt is DeepSeek-R1's recommended one: no system prompt, the problem followed by
"Please reason step by step, and put your final answer within \\boxed{}." (arXiv 2501.12948).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DATASETS",
    "EVALUATION_SETS",
    "R1_INSTRUCTION",
    "DatasetSpec",
    "benchmark_of",
    "build_rows",
    "main",
    "normalize_answer",
    "prepare",
    "problem_text",
    "read_records",
]

R1_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset comes from by default and which split it becomes."""

    name: str
    hub_name: str
    hub_split: str
    split: str


DATASETS = {
    spec.name: spec
    for spec in (
        DatasetSpec("dapo_math", "BytedTsinghua-SIA/DAPO-Math-17k", "train", "train"),
        DatasetSpec("aime24", "HuggingFaceH4/aime_2024", "train", "test"),
        DatasetSpec("aime25", "math-ai/aime25", "test", "test"),
        DatasetSpec("amc23", "math-ai/amc23", "test", "test"),
        DatasetSpec("math500", "HuggingFaceH4/MATH-500", "test", "test"),
        DatasetSpec("minerva", "math-ai/minervamath", "test", "test"),
        DatasetSpec("olympiadbench", "math-ai/olympiadbench", "test", "test"),
    )
}
EVALUATION_SETS = ("aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench")

_QUESTION_KEYS = ("problem", "question", "Problem", "Question", "prompt", "input")
_ANSWER_KEYS = ("answer", "Answer", "final_answer", "expected_answer", "ground_truth", "gt", "target")
_SOLUTION_KEYS = ("solution", "Solution")
_LOCAL_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv")

# Instructions other recipes wrap around a problem; stripped so the R1 instruction is the only one.
_DAPO_PREFIX = re.compile(r"^\s*Solve the following math problem step by step\..*?\n\n", re.DOTALL)
_DAPO_SUFFIX = re.compile(r"\n\nRemember to put your answer on its own line after \"Answer:\"\.?\s*$")
_TRAILING_INSTRUCTIONS = re.compile(
    r"\s*(Please reason step by step, and put your final answer within \\boxed\{\}\.?"
    r"|Let's think step by step and output the final answer within \\boxed\{\}\.?)\s*$"
)


def benchmark_of(data_source: Any) -> str | None:
    """Our dataset name for a `data_source` label from another pipeline (e.g. "AIME 2024" -> "aime24")."""
    key = re.sub(r"[^a-z0-9]", "", str(data_source).lower())
    if "aime" in key:
        if "2025" in key or "aime25" in key:
            return "aime25"
        if "2024" in key or "aime24" in key:
            return "aime24"
        return None
    for marker, name in (
        ("amc", "amc23"),
        ("math500", "math500"),
        ("minerva", "minerva"),
        ("olympiad", "olympiadbench"),
        ("dapo", "dapo_math"),
    ):
        if marker in key:
            return name
    return None


def _last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} in `text`, braces balanced; None if there is none."""
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0:
        return None
    depth = 0
    for index in range(brace, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return text[brace + 1 : index]
    return None


def normalize_answer(value: Any) -> str | None:
    """A ground-truth answer as a string: numbers without a spurious ".0", `$...$` stripped,
    several accepted answers (OlympiadBench lists) joined by ", ". None for an empty answer."""
    if value is None:
        return None
    if hasattr(value, "tolist"):  # numpy scalars/arrays from parquet
        value = value.tolist()
    if isinstance(value, list | tuple):
        parts = [part for part in (normalize_answer(item) for item in value) if part]
        return ", ".join(parts) or None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    text = str(value).strip()
    if len(text) >= 2 and text.startswith("$") and text.endswith("$"):
        text = text.strip("$").strip()
    if re.fullmatch(r"-?\d+\.0+", text):  # "27.0" from a float column saved as text (AMC23)
        text = text.split(".")[0]
    return text or None


def problem_text(record: dict[str, Any]) -> str | None:
    """The bare problem statement of a record, without any other recipe's instructions."""
    text = None
    prompt = record.get("prompt")
    if hasattr(prompt, "tolist"):
        prompt = prompt.tolist()
    if isinstance(prompt, list) and prompt:
        user_turns = [m.get("content") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        text = user_turns[-1] if user_turns else None
    if text is None:
        for key in _QUESTION_KEYS:
            if isinstance(record.get(key), str) and record[key].strip():
                text = record[key]
                break
    if text is None:
        return None
    text = _DAPO_SUFFIX.sub("", _DAPO_PREFIX.sub("", text))
    return _TRAILING_INSTRUCTIONS.sub("", text).strip() or None


def answer_of(record: dict[str, Any]) -> str | None:
    """The record's ground truth: verl's reward_model.ground_truth, an answer column, or a solution's last \\boxed{}."""
    reward_model = record.get("reward_model")
    if isinstance(reward_model, dict) and reward_model.get("ground_truth") is not None:
        return normalize_answer(reward_model["ground_truth"])
    for key in _ANSWER_KEYS:
        if record.get(key) is not None:
            answer = normalize_answer(record[key])
            if answer:
                return answer
    for key in _SOLUTION_KEYS:
        if isinstance(record.get(key), str):
            return normalize_answer(_last_boxed(record[key]))
    return None


def _read_local_file(path: str) -> list[dict[str, Any]]:
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if path.endswith(".jsonl"):
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as handle:
            content = json.load(handle)
        if isinstance(content, dict):  # {"data": [...]} or {"test": [...]}
            lists = [value for value in content.values() if isinstance(value, list)]
            if len(lists) != 1:
                raise ValueError(f"{path}: expected a JSON list of records or an object holding one list")
            content = lists[0]
        return list(content)
    if path.endswith(".csv"):
        with open(path, encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle))
    raise ValueError(f"{path}: unsupported file type (use one of {', '.join(_LOCAL_SUFFIXES)})")


def read_records(source: str, hub_split: str) -> list[dict[str, Any]]:
    """Records from a local file, a local folder of files, or (else) a hub dataset name."""
    path = os.path.expanduser(source)
    if os.path.isdir(path):
        files = sorted(os.path.join(path, name) for name in os.listdir(path) if name.endswith(_LOCAL_SUFFIXES))
        if not files:
            raise ValueError(f"--input {source}: no {'/'.join(_LOCAL_SUFFIXES)} files in this folder")
        return [record for file in files for record in _read_local_file(file)]
    if os.path.isfile(path):
        return _read_local_file(path)
    looks_like_path = source.endswith(_LOCAL_SUFFIXES) or source.startswith((".", "/", "~")) or source.count("/") != 1
    if looks_like_path:
        raise ValueError(f"--input {source}: no such file or folder (a hub dataset name looks like 'org/name')")
    from datasets import load_dataset  # only now: a hub download is an explicit user request

    return [dict(record) for record in load_dataset(source, split=hub_split)]


def _select_benchmark(records: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """Keep the rows of a mixed file that belong to `name`; an input without recognisable
    `data_source` labels is taken whole, one whose labels name only other datasets is an error."""
    labels = {benchmark_of(record.get("data_source", "")) for record in records}
    if name in labels:
        return [record for record in records if benchmark_of(record.get("data_source", "")) == name]
    if labels - {None}:
        found = sorted({str(record.get("data_source")) for record in records})[:20]
        raise ValueError(f"--dataset {name}: the input's rows are labelled for other datasets (data_source: {found})")
    return records


def build_rows(records: Iterable[dict[str, Any]], name: str, split: str) -> Iterator[dict[str, Any]]:
    """verl RL rows for `records`; duplicates (same problem) and rows without problem or answer are dropped."""
    seen = set()
    index = 0
    for record in records:
        problem, answer = problem_text(record), answer_of(record)
        if problem is None or answer is None or problem in seen:
            continue
        seen.add(problem)
        yield {
            "data_source": name,
            "prompt": [{"role": "user", "content": f"{problem}\n{R1_INSTRUCTION}"}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": answer},
            "extra_info": {"split": split, "index": index},
        }
        index += 1


def prepare(
    name: str, source: str | None, output_dir: str, hub_split: str | None = None, max_rows: int | None = None
) -> tuple[str, int]:
    """Write `<output_dir>/<name>.parquet`; return its path and row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if name not in DATASETS:
        raise ValueError(f"--dataset {name!r} is unknown; choose one of {sorted(DATASETS)} or 'all'")
    spec = DATASETS[name]
    records = _select_benchmark(read_records(source or spec.hub_name, hub_split or spec.hub_split), name)
    rows = list(build_rows(records, name, spec.split))
    if max_rows is not None:
        rows = rows[:max_rows]
    if not rows:
        raise ValueError(
            f"--dataset {name}: no usable rows in {source or spec.hub_name} (need a problem column such as "
            f"{_QUESTION_KEYS[:2]} or a verl prompt, and an answer column such as {_ANSWER_KEYS[:3]})"
        )
    os.makedirs(os.path.expanduser(output_dir), exist_ok=True)
    path = os.path.join(os.path.expanduser(output_dir), f"{name}.parquet")
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path, len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maspo_verl.experiments.data", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset", required=True, help=f"one of {', '.join(DATASETS)}, or 'all' (training + six evaluation sets)"
    )
    parser.add_argument(
        "--input", default=None, help="hub dataset name, or local file/folder (default: each dataset's hub name)"
    )
    parser.add_argument("--output-dir", required=True, help="writes <output-dir>/<dataset>.parquet")
    parser.add_argument("--split", default=None, help="hub split to read (default: each dataset's own)")
    parser.add_argument("--max-rows", type=int, default=None, help="keep at most this many rows (smoke tests)")
    args = parser.parse_args(argv)
    names = list(DATASETS) if args.dataset == "all" else [args.dataset]
    try:
        for name in names:
            path, count = prepare(name, args.input, args.output_dir, args.split, args.max_rows)
            print(f"{name}: {count} rows -> {path}")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

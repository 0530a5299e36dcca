"""Reading the JSON-lines files verl writes (validation dumps, file-logger metrics)."""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Callable
from typing import TypeVar

__all__ = ["log_parts", "parse_jsonl"]

T = TypeVar("T")


def parse_jsonl(path: str, parse_record: Callable[[dict], T]) -> list[T]:
    """`parse_record(record)` for every non-empty line; a line that is not JSON, or that
    `parse_record` rejects (KeyError/TypeError/ValueError), raises ValueError naming `path:line`."""
    parsed = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                parsed.append(parse_record(json.loads(line)))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                raise ValueError(f"{path}:{number}: {type(error).__name__}: {error}") from error
    return parsed


def log_parts(path: str) -> list[str]:
    """A metrics file and the earlier parts a resumed run kept beside it, oldest first.

    verl's FileLogger truncates VERL_FILE_LOGGER_PATH when a run (or a resumed run) starts, so the
    run scripts move a non-empty `metrics.jsonl` to the next `metrics.part<N>.jsonl` first
    (examples/run_scripts/common.sh, maspo_keep_metrics_parts): [part1, part2, ..., metrics.jsonl].
    """
    stem = path[: -len(".jsonl")] if path.endswith(".jsonl") else path
    pattern = re.compile(re.escape(os.path.basename(stem)) + r"\.part(\d+)\.jsonl$")
    numbered = []
    for candidate in glob.glob(glob.escape(stem) + ".part*.jsonl"):
        match = pattern.match(os.path.basename(candidate))
        if match:
            numbered.append((int(match.group(1)), candidate))
    parts = [candidate for _, candidate in sorted(numbered)]
    return parts + ([path] if os.path.isfile(path) else [])

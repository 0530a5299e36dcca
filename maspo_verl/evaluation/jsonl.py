"""Reading the JSON-lines files verl writes (validation dumps, file-logger metrics)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypeVar

__all__ = ["parse_jsonl"]

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

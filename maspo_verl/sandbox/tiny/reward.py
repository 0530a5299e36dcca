"""verl custom reward function for the tiny arithmetic task (`reward.custom_reward_function`).

    reward.custom_reward_function.path=<this file> reward.custom_reward_function.name=compute_score

Score 1.0 when the last `\\boxed{...}` in the response holds exactly the ground truth, else
0.0; `acc` is the same as a bool (verl reports it as `val-core/<data_source>/acc/mean@N`).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["compute_score", "extract_boxed"]

_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def extract_boxed(response: str) -> str | None:
    """The content of the last `\\boxed{...}` in `response`, stripped, or None."""
    matches = _BOXED.findall(response)
    return matches[-1].strip() if matches else None


def compute_score(data_source: str, solution_str: str, ground_truth: str, extra_info: Any = None, **kwargs) -> dict:
    """verl's custom-reward signature; returns {"score": float, "acc": bool}."""
    correct = extract_boxed(solution_str) == str(ground_truth).strip()
    return {"score": 1.0 if correct else 0.0, "acc": correct}

"""The embedded task: multi-digit arithmetic with a boxed answer, generated in code.

A prompt is `"<a><op><b>="` (e.g. `"57+8="`); the checkable answer is `\\boxed{<result>}`
(e.g. `\\boxed{65}`). Train and validation problems come from disjoint sets of (a, op, b)
triples drawn under one seed, so validation is held out. `write_parquet` writes verl's RL
data schema; `supervised_pairs` gives (prompt, response) text for a supervised warm-up.
The task is fixed here once and is not tuned toward any method.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from maspo_verl.tiny.tokenizer import BOXED_OPEN

__all__ = [
    "DATA_SOURCE",
    "ArithmeticProblem",
    "ArithmeticTask",
    "boxed_answer",
    "make_problems",
    "supervised_pairs",
    "write_parquet",
]

DATA_SOURCE = "tiny_arithmetic"


@dataclass(frozen=True)
class ArithmeticTask:
    """Which problems exist: operands of 1..`max_digits` digits, operators `operators`.

    Subtraction keeps the larger operand first, so every answer is a non-negative integer.
    """

    max_digits: int = 2
    operators: tuple[str, ...] = ("+", "-")

    def __post_init__(self):
        if not 1 <= self.max_digits <= 4:
            raise ValueError(f"task.max_digits must be in 1..4, got {self.max_digits}")
        unknown = sorted(set(self.operators) - {"+", "-", "*"})
        if not self.operators or unknown:
            raise ValueError(f"task.operators must be a non-empty subset of ['+', '-', '*'], got {list(self.operators)}")


@dataclass(frozen=True)
class ArithmeticProblem:
    prompt: str
    answer: str


def _solve(left: int, operator: str, right: int) -> int:
    return {"+": left + right, "-": left - right, "*": left * right}[operator]


def boxed_answer(answer: str) -> str:
    """The response text a correct policy writes: `\\boxed{<answer>}`."""
    return f"{BOXED_OPEN}{answer}}}"


def make_problems(
    task: ArithmeticTask = ArithmeticTask(), num_train: int = 512, num_val: int = 64, seed: int = 0
) -> tuple[list[ArithmeticProblem], list[ArithmeticProblem]]:
    """Disjoint train and validation problems, drawn without replacement under `seed`."""
    upper = 10**task.max_digits
    num_triples = upper * upper * len(task.operators)
    if num_train + num_val > num_triples:
        raise ValueError(f"num_train + num_val = {num_train + num_val} exceeds the {num_triples} distinct problems")
    rng = random.Random(seed)
    chosen: set[tuple[int, str, int]] = set()
    problems = []
    while len(problems) < num_train + num_val:
        left, right, operator = rng.randrange(upper), rng.randrange(upper), rng.choice(task.operators)
        if operator == "-" and right > left:
            left, right = right, left
        if (left, operator, right) in chosen:
            continue
        chosen.add((left, operator, right))
        problems.append(ArithmeticProblem(f"{left}{operator}{right}=", str(_solve(left, operator, right))))
    return problems[:num_train], problems[num_train:]


def supervised_pairs(problems: list[ArithmeticProblem]) -> list[tuple[str, str]]:
    """(user prompt, assistant response) text pairs for a supervised warm-up."""
    return [(problem.prompt, boxed_answer(problem.answer)) for problem in problems]


def _rows(problems: list[ArithmeticProblem], split: str) -> list[dict]:
    return [
        {
            "data_source": DATA_SOURCE,
            "prompt": [{"role": "user", "content": problem.prompt}],
            "ability": "arithmetic",
            "reward_model": {"style": "rule", "ground_truth": problem.answer},
            "extra_info": {"split": split, "index": index},
        }
        for index, problem in enumerate(problems)
    ]


def write_parquet(
    directory: str | Path,
    task: ArithmeticTask = ArithmeticTask(),
    num_train: int = 512,
    num_val: int = 64,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Write `train.parquet` and `val.parquet` in verl's RL data schema; return their paths."""
    import pandas as pd

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    train, val = make_problems(task, num_train, num_val, seed)
    paths = directory / "train.parquet", directory / "val.parquet"
    for path, problems, split in zip(paths, (train, val), ("train", "val"), strict=True):
        pd.DataFrame(_rows(problems, split)).to_parquet(path)
    return paths

"""The embedded tasks, generated in code, each with a boxed answer a rule can check.

- `ArithmeticTask`: a prompt `"<a><op><b>="` (e.g. `"57+8="`), answer `\\boxed{65}`. Each problem
  is a fact of its own: the CPU script's default data.
- `SortingTask`: a prompt of digits then `=` (e.g. `"3142="`), answer the digits in ascending order
  (`\\boxed{1234}`). One skill shared by all 10^length inputs, so what RL teaches on the training
  problems carries over to held-out ones: the task of the CPU comparisons (`maspo_verl.sandbox.compare`).

Train and validation problems come from disjoint sets of prompts drawn under one seed, so
validation is held out. `write_parquet` writes verl's RL data schema; `supervised_pairs` gives
(prompt, response) text for a supervised warm-up. The tasks are fixed here once and are not tuned
toward any method.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from maspo_verl.sandbox.tiny.tokenizer import BOXED_OPEN

__all__ = [
    "DATA_SOURCE",
    "ArithmeticProblem",
    "ArithmeticTask",
    "SortingTask",
    "Task",
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
    data_source: ClassVar[str] = DATA_SOURCE

    def __post_init__(self):
        if not 1 <= self.max_digits <= 4:
            raise ValueError(f"task.max_digits must be in 1..4, got {self.max_digits}")
        unknown = sorted(set(self.operators) - {"+", "-", "*"})
        if not self.operators or unknown:
            raise ValueError(
                f"task.operators must be a non-empty subset of ['+', '-', '*'], got {list(self.operators)}"
            )

    def num_distinct(self) -> int:
        return (10**self.max_digits) ** 2 * len(self.operators)

    def draw(self, rng: random.Random) -> ArithmeticProblem:
        upper = 10**self.max_digits
        left, right, operator = rng.randrange(upper), rng.randrange(upper), rng.choice(self.operators)
        if operator == "-" and right > left:
            left, right = right, left
        return ArithmeticProblem(f"{left}{operator}{right}=", str(_solve(left, operator, right)))


@dataclass(frozen=True)
class SortingTask:
    """Sort `length` digits (repeats allowed) in ascending order: `"3142="` -> `\\boxed{1234}`."""

    length: int = 4
    data_source: ClassVar[str] = "tiny_sort"

    def __post_init__(self):
        # `\boxed`, `{`, the digits, `}` and the end of turn must fit the CPU runs' 8-token responses
        if not 2 <= self.length <= 4:
            raise ValueError(f"task.length must be in 2..4, got {self.length}")

    def num_distinct(self) -> int:
        return 10**self.length

    def draw(self, rng: random.Random) -> ArithmeticProblem:
        digits = [rng.randrange(10) for _ in range(self.length)]
        return ArithmeticProblem("".join(map(str, digits)) + "=", "".join(map(str, sorted(digits))))


Task = ArithmeticTask | SortingTask


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
    task: Task = ArithmeticTask(), num_train: int = 512, num_val: int = 64, seed: int = 0
) -> tuple[list[ArithmeticProblem], list[ArithmeticProblem]]:
    """Disjoint train and validation problems, drawn without replacement under `seed`."""
    if num_train + num_val > task.num_distinct():
        raise ValueError(
            f"num_train + num_val = {num_train + num_val} exceeds the {task.num_distinct()} distinct problems"
        )
    rng = random.Random(seed)
    chosen: set[str] = set()
    problems = []
    while len(problems) < num_train + num_val:
        problem = task.draw(rng)
        if problem.prompt not in chosen:
            chosen.add(problem.prompt)
            problems.append(problem)
    return problems[:num_train], problems[num_train:]


def supervised_pairs(problems: list[ArithmeticProblem]) -> list[tuple[str, str]]:
    """(user prompt, assistant response) text pairs for a supervised warm-up."""
    return [(problem.prompt, boxed_answer(problem.answer)) for problem in problems]


def _rows(problems: list[ArithmeticProblem], split: str, data_source: str) -> list[dict]:
    return [
        {
            "data_source": data_source,
            "prompt": [{"role": "user", "content": problem.prompt}],
            "ability": data_source.removeprefix("tiny_"),
            "reward_model": {"style": "rule", "ground_truth": problem.answer},
            "extra_info": {"split": split, "index": index},
        }
        for index, problem in enumerate(problems)
    ]


def write_parquet(
    directory: str | Path,
    task: Task = ArithmeticTask(),
    num_train: int = 512,
    num_val: int = 64,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Write `train.parquet` and `val.parquet` in verl's RL data schema; return their paths."""
    train, val = make_problems(task, num_train, num_val, seed)
    return write_problem_parquet(directory, train, val, task.data_source)


def write_problem_parquet(
    directory: str | Path, train: list[ArithmeticProblem], val: list[ArithmeticProblem], data_source: str
) -> tuple[Path, Path]:
    """Write given train and validation problems as `train.parquet` / `val.parquet` in verl's RL data schema."""
    import pandas as pd

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "train.parquet", directory / "val.parquet"
    for path, problems, split in zip(paths, (train, val), ("train", "val"), strict=True):
        pd.DataFrame(_rows(problems, split, data_source)).to_parquet(path)
    return paths

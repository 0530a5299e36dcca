"""The tiny embedded task for CPU runs of verl: arithmetic prompts, a reward function, a tiny Qwen2.

`prepare_workdir(directory)` writes everything a `main_ppo` run needs: `data/train.parquet`,
`data/val.parquet` and `model/` (random-weight Qwen2 + local tokenizer). The reward function
is `maspo_verl/sandbox/tiny/reward.py:compute_score` (see `REWARD_FILE`).
"""

from __future__ import annotations

from pathlib import Path

from maspo_verl.sandbox.tiny.model import TinyModelSize, build_tiny_model, write_tiny_model
from maspo_verl.sandbox.tiny.task import ArithmeticTask, make_problems, supervised_pairs, write_parquet

__all__ = [
    "CPU_BACKEND_SCRIPT",
    "REWARD_FILE",
    "ArithmeticTask",
    "TinyModelSize",
    "build_tiny_model",
    "make_problems",
    "prepare_workdir",
    "supervised_pairs",
    "write_parquet",
    "write_tiny_model",
]

REWARD_FILE = Path(__file__).with_name("reward.py")
# What every CPU run of verl's trainer needs (sourced by train_cpu.sh and by the run scripts' REHEARSE=cpu).
CPU_BACKEND_SCRIPT = Path(__file__).with_name("cpu_backend.sh")


def prepare_workdir(
    directory: str | Path,
    task: ArithmeticTask = ArithmeticTask(),
    size: TinyModelSize = TinyModelSize(),
    num_train: int = 512,
    num_val: int = 64,
    seed: int = 0,
) -> dict[str, Path]:
    """Write data/ and model/ under `directory`; return their paths and the reward file."""
    directory = Path(directory)
    train, val = write_parquet(directory / "data", task, num_train, num_val, seed)
    model = write_tiny_model(directory / "model", size, seed)
    return {"train": train, "val": val, "model": model, "reward": REWARD_FILE}

"""Shared fixtures for the tests that run verl itself on CPU (import them into a test module).

    from conftest_cpu import cpu_platform, tiny_workdir  # noqa: F401  (pytest fixtures)

Everything here builds data and a random-weight model in temp dirs; nothing is downloaded.
"""

from __future__ import annotations

import os
import socket
from contextlib import closing
from pathlib import Path

import pytest

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

# verl on CPU: FSDP2, torch's sdpa attention (verl defaults to flash-attn), padded inputs (verl's
# remove-padding path calls flash-attn's varlen kernels), no torch.compile (minutes on CPU).
CPU_ACTOR_OVERRIDES = (
    "actor_rollout_ref.actor.strategy=fsdp2",
    "actor_rollout_ref.model.use_remove_padding=false",
    "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
    "actor_rollout_ref.actor.use_torch_compile=false",
    "actor_rollout_ref.actor.fsdp_config.use_torch_compile=false",
    "actor_rollout_ref.model.enable_gradient_checkpointing=false",
)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (each test run gets its own)."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def compose_maspo_config(*overrides: str):
    """configs/maspo.yaml composed over verl's ppo_trainer with `overrides`, as verl's main_ppo would."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name="maspo", overrides=list(overrides))


@pytest.fixture(scope="session")
def tiny_workdir(tmp_path_factory) -> dict[str, Path]:
    """data/{train,val}.parquet and model/ (tiny random-weight Qwen2 + tokenizer) in a temp dir."""
    from maspo_verl.tiny import prepare_workdir

    return prepare_workdir(tmp_path_factory.mktemp("tiny_task"))


@pytest.fixture(scope="session")
def cpu_platform():
    """verl's CPU platform patch applied in this process (it stays applied for the session)."""
    from maspo_verl.patches.cpu_platform import apply_cpu_platform

    apply_cpu_platform()


@pytest.fixture(scope="module")
def single_process_group():
    """The env verl's workers read for a world of one, on a free port; the group is destroyed after."""
    import torch.distributed

    names = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(WORLD_SIZE="1", RANK="0", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    yield
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value

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

# verl on CPU, as in examples/run_scripts/cpu/train_maspo_cpu.sh: FSDP2, float32 compute (verl's
# default bf16 autocast is slower on CPU and blurs rollout/actor log-prob comparisons), torch's sdpa
# attention (verl defaults to flash-attn), padded inputs (verl's remove-padding path calls
# flash-attn's varlen kernels), no torch.compile (minutes on CPU).
CPU_ACTOR_OVERRIDES = (
    "actor_rollout_ref.actor.strategy=fsdp2",
    "++actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype=fp32",
    "actor_rollout_ref.model.use_remove_padding=false",
    "++actor_rollout_ref.model.override_config.attn_implementation=sdpa",
    "actor_rollout_ref.actor.use_torch_compile=false",
    "actor_rollout_ref.actor.fsdp_config.use_torch_compile=false",
    "actor_rollout_ref.model.enable_gradient_checkpointing=false",
)


def build_actor_worker(model_path, role: str, *overrides: str):
    """verl's `ActorRolloutRefWorker(role=...)` built in this process on the CPU platform, model initialised."""
    from verl.workers.engine_workers import ActorRolloutRefWorker

    config = compose_maspo_config(*CPU_ACTOR_OVERRIDES, f"actor_rollout_ref.model.path={model_path}", *overrides)
    worker = ActorRolloutRefWorker(config=config.actor_rollout_ref, role=role)
    worker.init_model()
    return worker


def to_verl_batch(prompts: list[list[int]], responses: list[list[int]], pad_token_id: int, **per_token):
    """Token lists -> the TensorDict verl's trainer hands its workers (left-padded prompts,
    right-padded responses, then verl's `left_right_2_no_padding`).

    `per_token` tensors (e.g. old_log_probs, advantages) have shape (batch, longest response).
    """
    import torch
    from tensordict import TensorDict
    from verl.workers.utils.padding import left_right_2_no_padding

    batch_size = len(prompts)
    prompt_width = max(len(prompt) for prompt in prompts)
    response_width = max(len(response) for response in responses)
    input_ids = torch.full((batch_size, prompt_width + response_width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        input_ids[row, prompt_width - len(prompt) : prompt_width] = torch.tensor(prompt)
        input_ids[row, prompt_width : prompt_width + len(response)] = torch.tensor(response)
        attention_mask[row, prompt_width - len(prompt) : prompt_width + len(response)] = 1
    batch = TensorDict(
        {
            "prompts": input_ids[:, :prompt_width],
            "responses": input_ids[:, prompt_width:],
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": (attention_mask.cumsum(-1) - 1).clamp(min=0),
            "response_mask": attention_mask[:, prompt_width:].clone(),
            **per_token,
        },
        batch_size=[batch_size],
    )
    return left_right_2_no_padding(batch)


def mark_for_update(batch, batch_size: int) -> None:
    """The non-tensor fields verl's trainer adds before `update_actor`: one mini-batch, one epoch, no shuffle."""
    from verl.utils import tensordict_utils as tu

    tu.assign_non_tensor(
        batch,
        calculate_entropy=False,
        distillation_use_topk=False,
        distillation_only=False,
        global_batch_size=batch_size,
        mini_batch_size=batch_size,
        epochs=1,
        seed=0,
        dataloader_kwargs={"shuffle": False},
        temperature=1.0,
        compute_loss=True,
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
    from maspo_verl.sandbox.tiny import prepare_workdir

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

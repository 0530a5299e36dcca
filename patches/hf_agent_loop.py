"""The `hf_cpu_single_turn_agent` agent loop: verl's single-turn loop that names the sample it asks for.

verl 0.9.1's V1 trainer runs `rollout.n` sessions per prompt (verl/trainer/ppo/v1/agent_loop_tq.py,
`AgentLoopWorkerTQ._run_prompt`: `session_id=i` for i in range(n), validation too) and passes
`session_id` to the agent loop's `run`, but verl's `SingleTurnAgentLoop.run`
(verl/experimental/agent_loop/single_turn_agent_loop.py) does not forward it: the server only
sees a fresh uuid4 `request_id`. `LLMServerClient.generate` (verl/workers/rollout/llm_server.py)
does forward extra keyword arguments to the server's `generate`, so this loop wraps its client to
add `sample_index=session_id`, from which the hf_cpu server seeds that response's RNG.

`hf_cpu_single_turn_agent_local_reward` is the same loop, scoring its response in its own process:
verl's `AgentLoopWorker._compute_score` (verl/experimental/agent_loop/agent_loop.py) otherwise
packs every single response into a DataProto and sends it by Ray to a `RewardLoopWorker` actor,
which on a 2-core box costs more CPU than the sampling itself (README, "Speed of a CPU run"). verl
skips that call when the agent loop's output already carries `reward_score`, so this loop builds
verl's own `RewardLoopWorker` (a plain class before `ray.remote`) once per process and awaits its
`compute_score` on the one-row DataProto verl would have sent; the configured reward manager and
`reward.custom_reward_function` score it as they would in the actor. With it,
`reward.num_workers=0` starts no reward actors at all. Rule-based rewards only: a reward model
needs verl's reward-model router, and the loop refuses `reward.reward_model.enable=true`.

Registered with verl's public `register` decorator of the agent-loop registry when
`apply_hf_cpu_rollout()` runs (in every process, through the `verl.plugins` entry point with
VERL_PLATFORM=cpu); select one with
`actor_rollout_ref.rollout.agent.default_agent_loop=hf_cpu_single_turn_agent` (or
`...=hf_cpu_single_turn_agent_local_reward`).
"""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict
from verl import DataProto
from verl.experimental.agent_loop.agent_loop import register
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop
from verl.utils.model import compute_position_id_with_mask

__all__ = [
    "AGENT_LOOP_NAME",
    "LOCAL_REWARD_AGENT_LOOP_NAME",
    "HfCpuLocalRewardSingleTurnAgentLoop",
    "HfCpuSingleTurnAgentLoop",
    "reward_input",
]

AGENT_LOOP_NAME = "hf_cpu_single_turn_agent"
LOCAL_REWARD_AGENT_LOOP_NAME = "hf_cpu_single_turn_agent_local_reward"


class _ClientWithSampleIndex:
    """verl's LLMServerClient, with `sample_index` added to every `generate` call."""

    def __init__(self, client, sample_index: int):
        self._client = client
        self._sample_index = sample_index

    async def generate(self, request_id, **kwargs: Any):
        return await self._client.generate(request_id, sample_index=self._sample_index, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._client, name)


@register(AGENT_LOOP_NAME)
class HfCpuSingleTurnAgentLoop(SingleTurnAgentLoop):
    """verl's `SingleTurnAgentLoop`, telling the hf_cpu server which of the prompt's samples it generates.

    verl builds one agent-loop instance per sample (`AgentLoopWorker._run_agent_loop`), so the
    wrapped client belongs to this sample alone.
    """

    registered_name = AGENT_LOOP_NAME

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        backend = self.rollout_config.name
        if backend != "hf_cpu":
            raise ValueError(
                f"actor_rollout_ref.rollout.agent.default_agent_loop={self.registered_name} is for "
                f"actor_rollout_ref.rollout.name=hf_cpu (it sends the hf_cpu server a sample_index), got {backend!r}"
            )

    async def run(self, sampling_params: dict[str, Any], **kwargs):
        if "session_id" not in kwargs:
            raise ValueError(
                f"the {self.registered_name} agent loop needs verl's per-sample `session_id` (sent by verl's V1 "
                "trainer, verl/trainer/ppo/v1/agent_loop_tq.py); this caller sent none"
            )
        self.server_manager = _ClientWithSampleIndex(self.server_manager, int(kwargs["session_id"]))
        return await super().run(sampling_params, **kwargs)


def reward_input(output, sample_fields: dict[str, Any]) -> DataProto:
    """The one-row DataProto verl's `AgentLoopWorker._compute_score` sends a RewardLoopWorker for `output`.

    As verl's V1 trainer sends it (verl/trainer/ppo/v1/agent_loop_tq.py). verl's older
    `AgentLoopWorker` path adds `raw_prompt` to the output's extra fields first, so there a reward
    function also finds it in `extra_info`; the V1 trainer, the only one the CPU backend runs, does not.

    Args:
        output: the agent loop's `AgentLoopOutput` (one turn: `prompt_ids`, `response_ids`).
        sample_fields: the sample's dataset fields, as verl passes them to the agent loop's `run`
            (`data_source`, `reward_model`, `extra_info`, `raw_prompt`, `uid`, `session_id`, ...).

    The tensors are (1, prompt_len), (1, response_len) and (1, prompt_len + response_len); the
    fields become one-row numpy columns as verl builds them. Values are deep-copied: verl's reward
    manager updates `extra_info` in place, and in this process that dict is still the sample's own,
    which verl stores afterwards.
    """
    prompt_ids = torch.tensor(output.prompt_ids, dtype=torch.int64)
    response_ids = torch.tensor(output.response_ids, dtype=torch.int64)
    input_ids = torch.cat([prompt_ids, response_ids]).unsqueeze(0)
    attention_mask = torch.ones_like(input_ids)
    batch = TensorDict(
        {
            "prompts": prompt_ids.unsqueeze(0),
            "responses": response_ids.unsqueeze(0),
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": compute_position_id_with_mask(attention_mask),  # text-only: 0 .. len - 1
        },
        batch_size=1,
    )
    non_tensor_batch = {key: np.array([copy.deepcopy(value)]) for key, value in sample_fields.items()}
    non_tensor_batch["__num_turns__"] = np.array([output.num_turns])
    non_tensor_batch["tool_extra_fields"] = np.array([copy.deepcopy(output.extra_fields)], dtype=object)
    non_tensor_batch["prompt_len"] = np.array([len(output.prompt_ids)])
    non_tensor_batch["response_len"] = np.array([len(output.response_ids)])
    return DataProto(batch=batch, non_tensor_batch=non_tensor_batch)


_reward_worker: tuple[tuple[int, int], Any] | None = None  # (config and event-loop ids, worker)


def _local_reward_worker(config):
    """verl's RewardLoopWorker for this trainer config and running event loop, built once (it loads a tokenizer).

    verl's reward manager keeps the event loop it was built in (for `run_in_executor`), hence the key.
    """
    global _reward_worker
    key = (id(config), id(asyncio.get_running_loop()))
    if _reward_worker is None or _reward_worker[0] != key:
        from verl.experimental.reward_loop import RewardLoopWorker

        _reward_worker = (key, RewardLoopWorker(config, reward_router_address=None))
    return _reward_worker[1]


@register(LOCAL_REWARD_AGENT_LOOP_NAME)
class HfCpuLocalRewardSingleTurnAgentLoop(HfCpuSingleTurnAgentLoop):
    """`hf_cpu_single_turn_agent`, scoring its response with verl's reward manager in this process.

    verl's agent-loop worker computes the score only when the output has none
    (`AgentLoopWorker._compute_score`), so setting `reward_score` and
    `extra_fields["reward_extra_info"]` here replaces that Ray round trip with the same call.
    verl's rate-limited reward manager ("limited") then limits per agent-loop worker process.
    """

    registered_name = LOCAL_REWARD_AGENT_LOOP_NAME

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.config.reward.reward_model.enable:
            raise ValueError(
                f"actor_rollout_ref.rollout.agent.default_agent_loop={LOCAL_REWARD_AGENT_LOOP_NAME} scores with "
                "rule-based rewards only, but reward.reward_model.enable=true; use "
                f"{AGENT_LOOP_NAME} and verl's reward workers for a reward model"
            )
        manager = self.config.reward.reward_manager
        if manager.get("source", "register") == "register" and manager.get("name") == "remote":
            raise ValueError(
                f"actor_rollout_ref.rollout.agent.default_agent_loop={LOCAL_REWARD_AGENT_LOOP_NAME} scores in "
                "process, but reward.reward_manager.name=remote starts reward.num_workers Ray actors of its own "
                f"in every process that builds it; use {AGENT_LOOP_NAME} and verl's reward workers for it"
            )

    async def run(self, sampling_params: dict[str, Any], **kwargs):
        output = await super().run(sampling_params, **kwargs)
        started = time.perf_counter()
        result = await _local_reward_worker(self.config).compute_score(reward_input(output, kwargs))
        output.reward_score = result["reward_score"]
        output.extra_fields["reward_extra_info"] = result["reward_extra_info"]
        output.metrics.compute_score = time.perf_counter() - started
        return output

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
verl's own `RewardLoopWorker` (a plain class before `ray.remote`) once per process and runs verl's
own `AgentLoopWorker._compute_score` with that worker in place of the reward actor: verl builds the
one-row DataProto it would have sent, and the configured reward manager and
`reward.custom_reward_function` score it as they would in the actor. With it,
`reward.num_workers=0` starts no reward actors at all. Rule-based rewards only: a reward model
needs verl's reward-model router, and the loop refuses `reward.reward_model.enable=true`.

Registered with verl's public `register` decorator of the agent-loop registry by
`register_agent_loops()`, which `apply_hf_cpu_rollout()` calls (in every process, through the
`verl.plugins` entry point with VERL_PLATFORM=cpu; importing this module registers nothing, and
`remove_hf_cpu_rollout()` takes both entries out again); select one with
`actor_rollout_ref.rollout.agent.default_agent_loop=hf_cpu_single_turn_agent` (or
`...=hf_cpu_single_turn_agent_local_reward`).
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from verl.experimental.agent_loop import agent_loop as verl_agent_loop
from verl.experimental.agent_loop.agent_loop import AgentLoopWorker, register
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop

__all__ = [
    "AGENT_LOOP_NAME",
    "LOCAL_REWARD_AGENT_LOOP_NAME",
    "HfCpuLocalRewardSingleTurnAgentLoop",
    "HfCpuSingleTurnAgentLoop",
    "register_agent_loops",
    "unregister_agent_loops",
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


class _InProcessRewardActor:
    """verl's `RewardLoopWorker` in this process, called the way verl calls the Ray actor:
    `await handle.compute_score.remote(data)`.

    The DataProto is deep-copied first, as Ray's pickling hands the actor a copy: verl's reward manager
    updates `extra_info` in place, and in this process that dict is still the sample's own, which verl
    stores afterwards.
    """

    def __init__(self, reward_worker):
        async def remote(data):
            return await reward_worker.compute_score(copy.deepcopy(data))

        self.compute_score = type("compute_score", (), {"remote": staticmethod(remote)})


class _ScoringWorker(AgentLoopWorker):
    """verl's `AgentLoopWorker`, holding only what its `_compute_score` reads, to call that method here.

    `_compute_score` is a worker method (it reads the worker's reward actors, processor, tokenizer and
    multi-modal settings) and the agent loop has no handle on the worker running it; verl's
    `AgentLoopWorker.__init__` would load tools, a tokenizer and tracing again, so it is not run. The
    values are the agent loop's own, which verl's worker built it from. `_compute_score` then builds the
    DataProto, picks the one "reward actor" with `random.choice` (a draw from Python's `random`, as in
    verl's worker), awaits it and writes `reward_score`, `reward_extra_info` and the `compute_score`
    timing into the output.
    """

    def __init__(self, agent_loop, reward_worker):  # deliberately not AgentLoopWorker.__init__
        self.processor = agent_loop.processor
        self.tokenizer = agent_loop.tokenizer
        self.mm_processor_kwargs = agent_loop.mm_processor_kwargs
        self.reward_loop_worker_handles = [_InProcessRewardActor(reward_worker)]


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


class HfCpuLocalRewardSingleTurnAgentLoop(HfCpuSingleTurnAgentLoop):
    """`hf_cpu_single_turn_agent`, scoring its response with verl's reward manager in this process.

    verl's agent-loop worker computes the score only when the output has none
    (`AgentLoopWorker._compute_score`), so running that same method here, with verl's reward worker in
    this process in place of the Ray actor, replaces the Ray round trip.
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
        # verl's worker would call this with the same sample fields (`_run_agent_loop` passes `run` and
        # `_agent_loop_postprocess` the same kwargs) after `run` returns.
        await _ScoringWorker(self, _local_reward_worker(self.config))._compute_score([output], kwargs=kwargs)
        return output


_MISSING = object()
# While registered: each name's entry in verl's `_agent_loop_registry` before (or _MISSING), and ours.
_registered: dict[str, tuple[Any, dict]] | None = None


def register_agent_loops() -> None:
    """Register both loops with verl's public `register` (idempotent; `apply_hf_cpu_rollout()` calls it)."""
    global _registered
    if _registered is not None:
        return
    registry = verl_agent_loop._agent_loop_registry
    registered = {}
    for loop in (HfCpuSingleTurnAgentLoop, HfCpuLocalRewardSingleTurnAgentLoop):
        previous = registry.get(loop.registered_name, _MISSING)
        register(loop.registered_name)(loop)
        registered[loop.registered_name] = (previous, registry[loop.registered_name])
    _registered = registered


def unregister_agent_loops() -> None:
    """Give verl's `_agent_loop_registry` back each entry it held before `register_agent_loops()` (verl has
    no unregister; idempotent). An entry replaced since is left alone."""
    global _registered
    if _registered is None:
        return
    registry = verl_agent_loop._agent_loop_registry
    for name, (previous, ours) in _registered.items():
        if registry.get(name) is ours:
            if previous is _MISSING:
                del registry[name]
            else:
                registry[name] = previous
    _registered = None

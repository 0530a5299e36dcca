"""The `hf_cpu_single_turn_agent` agent loop: verl's single-turn loop that names the sample it asks for.

verl 0.9.1's V1 trainer runs `rollout.n` sessions per prompt (verl/trainer/ppo/v1/agent_loop_tq.py,
`AgentLoopWorkerTQ._run_prompt`: `session_id=i` for i in range(n), validation too) and passes
`session_id` to the agent loop's `run`, but verl's `SingleTurnAgentLoop.run`
(verl/experimental/agent_loop/single_turn_agent_loop.py) does not forward it: the server only
sees a fresh uuid4 `request_id`. `LLMServerClient.generate` (verl/workers/rollout/llm_server.py)
does forward extra keyword arguments to the server's `generate`, so this loop wraps its client to
add `sample_index=session_id`, from which the hf_cpu server seeds that response's RNG.

Registered with verl's public `register` decorator of the agent-loop registry when
`apply_hf_cpu_rollout()` runs (in every process, through the `verl.plugins` entry point with
VERL_PLATFORM=cpu); select it with
`actor_rollout_ref.rollout.agent.default_agent_loop=hf_cpu_single_turn_agent`.
"""

from __future__ import annotations

from typing import Any

from verl.experimental.agent_loop.agent_loop import register
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop

__all__ = ["AGENT_LOOP_NAME", "HfCpuSingleTurnAgentLoop"]

AGENT_LOOP_NAME = "hf_cpu_single_turn_agent"


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

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        backend = self.rollout_config.name
        if backend != "hf_cpu":
            raise ValueError(
                f"actor_rollout_ref.rollout.agent.default_agent_loop={AGENT_LOOP_NAME} is for "
                f"actor_rollout_ref.rollout.name=hf_cpu (it sends the hf_cpu server a sample_index), got {backend!r}"
            )

    async def run(self, sampling_params: dict[str, Any], **kwargs):
        if "session_id" not in kwargs:
            raise ValueError(
                f"the {AGENT_LOOP_NAME} agent loop needs verl's per-sample `session_id` (sent by verl's V1 "
                "trainer, verl/trainer/ppo/v1/agent_loop_tq.py); this caller sent none"
            )
        self.server_manager = _ClientWithSampleIndex(self.server_manager, int(kwargs["session_id"]))
        return await super().run(sampling_params, **kwargs)

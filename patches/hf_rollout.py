"""Opt-in patch: the `hf_cpu` rollout backend, a Hugging Face causal LM behind verl's rollout API.

verl 0.9 generates through vLLM, SGLang or TensorRT-LLM servers, none of which runs on a
CPU-only box. `apply_hf_cpu_rollout()` registers a backend named "hf_cpu"
(`actor_rollout_ref.rollout.name=hf_cpu`) made of verl's own extension points:

- `HfCpuReplica`, a verl `RolloutReplica` registered with the public
  `RolloutReplicaRegistry.register("hf_cpu", ...)`: in verl's hybrid (colocated) mode it starts
  one `HfCpuServer` Ray actor per replica, next to the replica's first training worker;
- `HfCpuServer`, the server: `generate(prompt_ids, sampling_params, request_id, sample_index)`
  returns verl's `TokenOutput` (with log-probs when `rollout.calculate_log_probs`). Requests that
  arrive together share one batched sampling loop over the model's KV cache (`sample_token_ids`:
  transformers' own logits processors, greedy tested equal to `generate`), yet each row draws
  from its own `torch.Generator`, seeded from (rollout seed, weights version, prompt ids, sample
  index): a response never depends on batching, timing or arrival order. verl's stock agent loop
  sends no sample index; our `hf_cpu_single_turn_agent` (patches/hf_agent_loop.py) sends verl's
  `session_id`. Its lifecycle methods (sleep, wake_up, abort, kv-cache) are no-ops: there is no
  GPU memory to free;
- `HfCpuServerAdapter`, the `BaseRollout` that verl's `ActorRolloutRefWorker` builds in each
  training worker: verl's "naive" checkpoint-engine path (the V1 sync trainer's, after every
  update) hands it the FSDP2 actor's full weights, which it sends to the server.

The adapter is found by verl through `_ROLLOUT_REGISTRY`, a module-level dict with no public
registration function: `_register_server_adapter()` is the one place this patch writes to it.
`remove_hf_cpu_rollout()` takes every entry the patch wrote out of verl's registries again.

Not covered: tensor/pipeline/data parallel rollout (world size 1 per replica), standalone or
disaggregated rollout (the async trainers), multi-modal inputs, tool-calling agent loops,
OpenAI-compatible HTTP serving, speed. See patches/README.md and docs/cpu.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sys
from collections.abc import Generator
from typing import Any

import ray
import torch
from transformers import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.rollout import base as rollout_base
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica, RolloutReplicaRegistry, TokenOutput

from maspo_verl.patches import CPU_BACKEND_VERL_VERSIONS, require_verl_version

__all__ = [
    "BACKEND_NAME",
    "SUPPORTED_VERL_VERSIONS",
    "HfCpuReplica",
    "HfCpuServer",
    "HfCpuServerAdapter",
    "apply_hf_cpu_rollout",
    "hf_cpu_rollout_applied",
    "logits_processors",
    "remove_hf_cpu_rollout",
    "row_seed",
    "sample_token_ids",
    "server_actor_name",
    "start_hf_cpu_server",
]

logger = logging.getLogger(__name__)

BACKEND_NAME = "hf_cpu"
SUPPORTED_VERL_VERSIONS = CPU_BACKEND_VERL_VERSIONS
# Requests that arrive within this window share one batched sampling loop (for speed only: each
# response has its own RNG, so it does not depend on which requests share its batch).
BATCHING_WINDOW_SECONDS = 0.02


def server_actor_name(replica_rank: int, name_suffix: str = "") -> str:
    """Ray name of replica `replica_rank`'s server: the adapter in each training worker looks it up."""
    return f"{BACKEND_NAME}_server_{replica_rank}{name_suffix}"


def _sampling_key(sampling_params: dict[str, Any]) -> tuple:
    """Requests batch together only when they sample the same way."""
    return tuple(
        sampling_params.get(name)
        for name in ("temperature", "top_p", "top_k", "repetition_penalty", "logprobs", "max_tokens", "max_new_tokens")
    )


def row_seed(rollout_seed: int, weights_version: int | None, prompt_ids: list[int], sample_index: int) -> int:
    """Seed of one response's `torch.Generator`: a stable hash (sha256, not Python's salted `hash`) of
    (rollout seed, weights version = global step of the last weights received or None, prompt token
    ids, index of the sample among that prompt's samples). Returns an int in [0, 2**63)."""
    key = f"{int(rollout_seed)}|{weights_version}|{int(sample_index)}|{','.join(str(int(t)) for t in prompt_ids)}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") >> 1


def logits_processors(
    temperature: float, top_k: int, top_p: float, repetition_penalty: float, vocab_size: int
) -> LogitsProcessorList:
    """Hugging Face's logits processors for these settings, in the order its `generate` applies them:
    repetition penalty, then (when sampling, temperature > 0) temperature, top-k and top-p; greedy keeps
    only the penalty. A setting that is off adds no processor: penalty 1, top_k <= 0 or >= `vocab_size`
    (keeps every token), top_p >= 1. The sampling loop calls them as `generate` does: `(token ids so far, scores)`.
    """
    processors = LogitsProcessorList()
    if repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(float(repetition_penalty)))
    if temperature > 0:
        processors.append(TemperatureLogitsWarper(float(temperature)))
        if 0 < top_k < vocab_size:
            processors.append(TopKLogitsWarper(int(top_k)))
        if top_p < 1.0:
            processors.append(TopPLogitsWarper(float(top_p)))
    return processors


def _inverse_cdf_sample(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Token per row whose CDF interval holds that row's uniform in [0, 1): probs (rows x vocab), uniforms (rows,).
    Tokens of probability 0 are never chosen (side="right"; rounding at the top end falls back to the
    row's last token of positive probability).

    The one step of Hugging Face's sampling done here rather than by transformers: `generate` draws with
    `torch.multinomial(probs, 1)` from one RNG for the whole batch, so a row's token would depend on
    the rows beside it; here each row draws from its own generator (see `sample_token_ids`)."""
    cdf = probs.cumsum(dim=-1)
    chosen = torch.searchsorted(cdf, (uniforms * cdf[:, -1]).unsqueeze(-1), right=True).squeeze(-1)
    vocab = torch.arange(probs.shape[-1])
    last_positive = torch.where(probs > 0, vocab, 0).amax(dim=-1)
    return torch.minimum(chosen, last_positive)


@torch.no_grad()
def sample_token_ids(
    model,
    prompts: list[list[int]],
    generators: list[torch.Generator] | None,
    *,
    max_new_tokens: int,
    eos_token_ids: list[int],
    pad_token_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = -1,
    repetition_penalty: float = 1.0,
) -> tuple[list[list[int]], list[list[float]]]:
    """Batched autoregressive sampling over a Hugging Face causal LM's KV cache, one RNG per row.

    prompts: B token-id lists (left-padded here); generators: B `torch.Generator`s (None when
    temperature == 0: greedy argmax). Each step's logits go through Hugging Face's processors
    (`logits_processors`: repetition penalty, temperature, top-k, top-p, as `generate` applies them).
    Row r draws its `max_new_tokens` uniforms from `generators[r]` up front and takes token t by
    inverse CDF of the processed distribution with uniform t, so its response does not depend on which
    rows share its batch (up to float rounding of batched matmuls, ~1e-7 in a logit). A row stops
    after its first token in `eos_token_ids` (kept) or at `max_new_tokens`. Prompts must not be empty.
    Returns (token ids, log-probs) per row, log-probs = log_softmax(logits / temperature) of the raw
    logits at the chosen token (raw logits when greedy), as verl's actor computes them.
    """
    batch_size = len(prompts)
    sampling = temperature > 0
    if sampling and (generators is None or len(generators) != batch_size):
        got = None if generators is None else len(generators)
        raise ValueError(f"sample_token_ids: generators must hold one generator per prompt ({batch_size}), got {got}")
    if sampling:
        uniforms = torch.stack([torch.rand(max_new_tokens, generator=generator) for generator in generators])
    if any(len(prompt) == 0 for prompt in prompts):
        raise ValueError("sample_token_ids: every prompt needs at least one token")
    longest = max(len(prompt) for prompt in prompts)
    input_ids = torch.full((batch_size, longest), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((batch_size, longest), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, longest - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        attention_mask[row, longest - len(prompt) :] = 1
    # Positions count real tokens only, as Hugging Face's generate does for left padding.
    position_ids = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)
    history = None  # the token ids the repetition penalty sees: each row's own prompt and response
    if repetition_penalty != 1.0:
        # Left padding is not part of a row's prompt: it is filled with the row's first prompt token,
        # which the penalty sees anyway (it penalises a token once however often it occurs).
        first_tokens = input_ids.gather(1, (longest - torch.tensor([len(prompt) for prompt in prompts])).unsqueeze(-1))
        history = torch.where(attention_mask.bool(), input_ids, first_tokens)

    output = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True, logits_to_keep=1
    )
    processors = logits_processors(temperature, top_k, top_p, repetition_penalty, output.logits.shape[-1])
    eos = torch.tensor(eos_token_ids or [-1], dtype=torch.long)
    finished = torch.zeros(batch_size, dtype=torch.bool)
    lengths = torch.zeros(batch_size, dtype=torch.long)
    steps_tokens, steps_log_probs = [], []
    for step in range(max_new_tokens):
        logits = output.logits[:, -1, :].float()
        scaled = logits / temperature if sampling else logits  # the log-prob's distribution: no penalty, no filter
        scores = processors(history, logits)
        if sampling:
            next_tokens = _inverse_cdf_sample(scores.softmax(dim=-1), uniforms[:, step])
        else:
            next_tokens = scores.argmax(dim=-1)
        next_tokens = next_tokens.masked_fill(finished, pad_token_id)
        steps_tokens.append(next_tokens)
        steps_log_probs.append(torch.log_softmax(scaled, dim=-1).gather(-1, next_tokens.unsqueeze(-1)).squeeze(-1))
        lengths += (~finished).long()
        finished = finished | torch.isin(next_tokens, eos)
        if bool(finished.all()) or step == max_new_tokens - 1:
            break
        if history is not None:  # a finished row appends padding here: its further tokens are dropped anyway
            history = torch.cat([history, next_tokens.unsqueeze(-1)], dim=-1)
        attention_mask = torch.cat([attention_mask, torch.ones((batch_size, 1), dtype=torch.long)], dim=-1)
        position_ids = position_ids[:, -1:] + 1
        output = model(
            input_ids=next_tokens.unsqueeze(-1),
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=output.past_key_values,
            use_cache=True,
        )
    token_matrix = torch.stack(steps_tokens, dim=1).tolist()
    log_prob_matrix = torch.stack(steps_log_probs, dim=1).tolist()
    return (
        [token_matrix[row][:length] for row, length in enumerate(lengths.tolist())],
        [log_prob_matrix[row][:length] for row, length in enumerate(lengths.tolist())],
    )


class HfCpuServer:
    """One rollout replica: a Hugging Face causal LM generating on CPU (a Ray actor)."""

    def __init__(self, config, model_config, replica_rank: int = 0):
        from transformers import AutoModelForCausalLM

        self.config = omega_conf_to_dataclass(config)
        self.model_config = omega_conf_to_dataclass(model_config)
        self.replica_rank = replica_rank
        local_path = self.model_config.local_path
        self.model = AutoModelForCausalLM.from_pretrained(local_path, dtype=torch.float32, attn_implementation="sdpa")
        self.model.eval()
        generation_config = self.model.generation_config
        self.eos_token_ids = self._as_list(generation_config.eos_token_id) or self._as_list(
            self.model.config.eos_token_id
        )
        self.pad_token_id = generation_config.pad_token_id
        if self.pad_token_id is None:
            self.pad_token_id = self.eos_token_ids[0] if self.eos_token_ids else 0
        self.weights_version: int | None = None  # global step of the last weights received
        self.num_weight_updates = 0
        # (prompt_ids, sampling_params, sample_index, future) of the requests waiting for the next batch
        self._pending: list[tuple[list[int], dict[str, Any], int, asyncio.Future]] = []
        self._batcher: asyncio.Task | None = None
        self._model_lock = asyncio.Lock()
        # Fallback sample indices by arrival, per prompt, for requests that bring none (reset on new weights).
        self._arrivals: dict[tuple[int, ...], int] = {}
        self._warned_no_sample_index = False

    @staticmethod
    def _as_list(token_ids) -> list[int]:
        if token_ids is None:
            return []
        return list(token_ids) if isinstance(token_ids, (list, tuple)) else [token_ids]

    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: list[Any] | None = None,
        video_data: list[Any] | None = None,
        audio_data: list[Any] | None = None,
        mm_processor_kwargs: dict[str, Any] | None = None,
        sample_index: int | None = None,
        window_seconds: float | None = None,
        **kwargs: Any,
    ):
        """verl's server `generate`: token ids in, `TokenOutput` out (log-probs if `sampling_params["logprobs"]`).

        The response is a function of (rollout seed, weights, `prompt_ids`, `sample_index`, sampling
        params) only. `sample_index` is the request's index among its prompt's samples at this step
        (verl's `session_id`, sent by the `hf_cpu_single_turn_agent` agent loop). Without one, the
        server numbers a prompt's requests in arrival order: the group's set of responses is then
        reproducible, not which session gets which. `window_seconds` (default BATCHING_WINDOW_SECONDS)
        is how long a request that finds no batch forming waits for others to join it.
        """
        if image_data or video_data or audio_data or mm_processor_kwargs:
            raise NotImplementedError("the hf_cpu rollout does not take images, videos or audio")
        prompt_ids = [int(token) for token in prompt_ids]
        if not prompt_ids:
            raise ValueError("hf_cpu generate: prompt_ids is empty")
        if sample_index is None:
            sample_index = self._arrival_index(prompt_ids)
        elif isinstance(sample_index, bool) or not hasattr(sample_index, "__index__") or sample_index < 0:
            raise ValueError(f"hf_cpu generate: sample_index must be an int >= 0, got {sample_index!r}")
        else:
            sample_index = int(sample_index)  # numpy ints too
        future = asyncio.get_running_loop().create_future()
        self._pending.append((prompt_ids, dict(sampling_params), sample_index, future))
        if self._batcher is None or self._batcher.done():
            window = BATCHING_WINDOW_SECONDS if window_seconds is None else window_seconds
            self._batcher = asyncio.create_task(self._run_batches(window))
        return await future

    async def generate_many(self, requests: list[dict[str, Any]]) -> list:
        """`generate` for many requests in one Ray call (the keyword arguments of one `generate` each),
        outputs in request order. They join the pending requests and are batched like them, without
        waiting out the batching window (maspo_verl.patches.batched_agent_loop sends them).

        A request that fails has its exception in its place in the list, so it fails only its own
        agent loop, as one `generate` call per request would."""
        calls = [asyncio.ensure_future(self.generate(**request, window_seconds=0.0)) for request in requests]
        return await asyncio.gather(*calls, return_exceptions=True)

    def _arrival_index(self, prompt_ids: list[int]) -> int:
        if not self._warned_no_sample_index:
            logger.warning(
                "hf_cpu rollout: a request came without sample_index, so a prompt's samples are numbered in "
                "arrival order; set actor_rollout_ref.rollout.agent.default_agent_loop=hf_cpu_single_turn_agent "
                "for responses independent of arrival order"
            )
            self._warned_no_sample_index = True
        key = tuple(prompt_ids)
        index = self._arrivals.get(key, 0)
        self._arrivals[key] = index + 1
        return index

    async def _run_batches(self, window_seconds: float) -> None:
        await asyncio.sleep(window_seconds)
        while self._pending:
            key = _sampling_key(self._pending[0][1])
            batch = [request for request in self._pending if _sampling_key(request[1]) == key]
            batch = batch[: max(1, self.config.max_num_seqs)]
            taken = {id(request) for request in batch}
            self._pending = [request for request in self._pending if id(request) not in taken]
            try:
                async with self._model_lock:
                    outputs = await asyncio.to_thread(
                        self._generate_batch,
                        [request[0] for request in batch],
                        batch[0][1],
                        [request[2] for request in batch],
                    )
            except Exception as error:  # every waiting request learns why
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (*_, future), output in zip(batch, outputs, strict=True):
                if not future.done():
                    future.set_result(output)

    def _generate_batch(
        self, prompts: list[list[int]], sampling_params: dict[str, Any], sample_indices: list[int]
    ) -> list:
        """One batched sampling loop; row r draws from its own generator, seeded by `row_seed` (runs under
        the model lock, so the weights version in the seed is the one that generates)."""
        max_new_tokens = sampling_params.get("max_tokens") or sampling_params.get("max_new_tokens")
        max_new_tokens = min(max_new_tokens or self.config.response_length, self.config.response_length)
        temperature = float(sampling_params.get("temperature", 1.0) or 0.0)
        top_k = sampling_params.get("top_k", -1)
        generators = None
        if temperature > 0:
            generators = [
                torch.Generator().manual_seed(row_seed(self.config.seed, self.weights_version, prompt, index))
                for prompt, index in zip(prompts, sample_indices, strict=True)
            ]
        token_ids, log_probs = sample_token_ids(
            self.model,
            prompts,
            generators,
            max_new_tokens=max_new_tokens,
            eos_token_ids=self.eos_token_ids,
            pad_token_id=self.pad_token_id,
            temperature=temperature,
            top_p=float(sampling_params.get("top_p", 1.0) or 1.0),
            top_k=int(top_k) if top_k is not None else -1,
            repetition_penalty=float(sampling_params.get("repetition_penalty", 1.0) or 1.0),
        )
        return [
            TokenOutput(
                token_ids=row_tokens,
                log_probs=row_log_probs if sampling_params.get("logprobs") else None,
                stop_reason="completed",
                extra_fields={"global_steps": self.weights_version},
            )
            for row_tokens, row_log_probs in zip(token_ids, log_probs, strict=True)
        ]

    async def update_weights(self, named_tensors: dict[str, torch.Tensor], global_steps: int | None = None) -> int:
        """Load the actor's full weights (HF names); refuse names the model does not have."""
        async with self._model_lock:
            model_state = self.model.state_dict()
            unknown = sorted(set(named_tensors) - set(model_state))
            if unknown:
                raise KeyError(f"hf_cpu rollout got weights the model does not have: {unknown[:5]}")
            missing = sorted(set(model_state) - set(named_tensors) - self._tied_parameter_names())
            if missing:
                raise KeyError(f"hf_cpu rollout got no weights for: {missing[:5]}")
            with torch.no_grad():
                for name, tensor in named_tensors.items():
                    model_state[name].copy_(tensor.to(model_state[name].dtype))
            self.weights_version = global_steps
            self.num_weight_updates += 1
            self._arrivals.clear()
            return self.num_weight_updates

    def _tied_parameter_names(self) -> set[str]:
        """Output-embedding names that share storage with the input embedding (absent from the actor's export)."""
        output_embeddings = self.model.get_output_embeddings()
        if output_embeddings is None or output_embeddings.weight is not self.model.get_input_embeddings().weight:
            return set()
        return {
            name
            for name, parameter in self.model.state_dict(keep_vars=True).items()
            if parameter is output_embeddings.weight
        }

    def get_weights_version(self) -> tuple[int | None, int]:
        """(global step of the last weights received, number of weight updates): for tests and debugging."""
        return self.weights_version, self.num_weight_updates

    # verl's lifecycle calls: nothing to free or restore on CPU, no request to abort mid-batch.
    async def wake_up(self):
        return None

    async def sleep(self):
        return None

    async def wait_for_requests_to_drain(self):
        while self._pending or (self._batcher is not None and not self._batcher.done()):
            await asyncio.sleep(BATCHING_WINDOW_SECONDS)

    async def abort_all_requests(self, reject_request: bool = False) -> dict[str, Any]:
        return {"aborted_count": 0, "request_ids": []}

    async def resume_generation(self):
        return None

    async def clear_kv_cache(self):
        return None

    async def release_kv_cache(self):
        return None

    async def resume_kv_cache(self):
        return None

    async def start_profile(self, **kwargs):
        return None

    async def stop_profile(self):
        return None


def start_hf_cpu_server(
    config, model_config, replica_rank: int = 0, name_suffix: str = "", node_id: str | None = None
) -> ray.actor.ActorHandle:
    """Start replica `replica_rank`'s `HfCpuServer` Ray actor (named, on `node_id` when given)."""
    options: dict[str, Any] = {
        "name": server_actor_name(replica_rank, name_suffix),
        "num_cpus": 0,  # shares the cores with the training worker it alternates with
        "max_concurrency": max(1000, getattr(config, "max_num_seqs", 1000) + 16),
        "runtime_env": {"env_vars": {"VERL_PLATFORM": os.environ.get("VERL_PLATFORM", "cpu")}},
    }
    if node_id is not None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
    return ray.remote(HfCpuServer).options(**options).remote(config, model_config, replica_rank)


class HfCpuReplica(RolloutReplica):
    """verl rollout replica served by one `HfCpuServer` (hybrid mode: colocated with the actor workers)."""

    async def launch_servers(self):
        if self.world_size != 1:
            raise ValueError(
                "the hf_cpu rollout serves each replica from one process: set "
                "actor_rollout_ref.rollout.tensor_model_parallel_size=1 (and data/pipeline parallel sizes 1), "
                f"got a replica world size of {self.world_size}"
            )
        node_id = None
        if self.workers:
            node_id = await self.workers[0].__ray_call__.remote(lambda worker: ray.get_runtime_context().get_node_id())
        server = start_hf_cpu_server(self.config, self.model_config, self.replica_rank, self.name_suffix, node_id)
        await server.wait_for_requests_to_drain.remote()  # returns once the model is loaded
        self.servers = [server]
        self._server_handle = server
        self._server_address = server_actor_name(self.replica_rank, self.name_suffix)  # no HTTP endpoint


class HfCpuServerAdapter(BaseRollout):
    """The rollout object verl builds in each training worker: forwards the actor's weights to the server."""

    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1):
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", "0"))
        self.replica_rank = rank if replica_rank == -1 else replica_rank  # one worker per replica
        self._server: ray.actor.ActorHandle | None = None

    def _server_handle(self) -> ray.actor.ActorHandle:
        if self._server is None:
            self._server = ray.get_actor(server_actor_name(self.replica_rank))
        return self._server

    async def resume(self, tags: list[str]):
        return None

    async def release(self):
        return None

    async def update_weights(
        self,
        weights: Generator[tuple[str, torch.Tensor], None, None],
        wire_format: str = "named_tensors",
        global_steps: int | None = None,
        peft_config: dict | None = None,
        **kwargs,
    ):
        """Collect the full weights verl yields and load them into this replica's server."""
        if wire_format != "named_tensors":
            raise NotImplementedError(f"the hf_cpu rollout takes full named tensors, not {wire_format!r}")
        if peft_config is not None:
            raise NotImplementedError(
                "the hf_cpu rollout takes merged weights only: set actor_rollout_ref.model.lora.merge=true with LoRA"
            )
        named_tensors = {name: tensor.detach().to("cpu", copy=True) for name, tensor in weights}
        await self._server_handle().update_weights.remote(named_tensors, global_steps)


def _load_replica_class():
    return HfCpuReplica


_MISSING = object()
# While applied: what `apply_hf_cpu_rollout` wrote, as (registry, key, the entry before or _MISSING, ours).
_applied: list[tuple[dict, Any, Any, Any]] | None = None


def _register_server_adapter() -> tuple[dict, Any, Any, Any]:
    """The one write to a verl internal: `_ROLLOUT_REGISTRY` maps (name, mode) to the adapter class path."""
    key = (BACKEND_NAME, "async")
    previous = rollout_base._ROLLOUT_REGISTRY.get(key, _MISSING)
    rollout_base._ROLLOUT_REGISTRY[key] = f"{__name__}.HfCpuServerAdapter"
    return rollout_base._ROLLOUT_REGISTRY, key, previous, rollout_base._ROLLOUT_REGISTRY[key]


def hf_cpu_rollout_applied() -> bool:
    """True while `apply_hf_cpu_rollout` is in effect in this process."""
    return _applied is not None


def apply_hf_cpu_rollout() -> None:
    """Register the `hf_cpu` rollout backend in this process (version-checked, idempotent).

    The `verl.plugins` entry point calls it in every process when VERL_PLATFORM=cpu; select the
    backend with `actor_rollout_ref.rollout.name=hf_cpu`, and sampling independent of arrival order
    with `actor_rollout_ref.rollout.agent.default_agent_loop=hf_cpu_single_turn_agent`.
    `remove_hf_cpu_rollout()` undoes it.
    """
    global _applied
    require_verl_version("apply_hf_cpu_rollout", SUPPORTED_VERL_VERSIONS)
    if _applied is not None:
        return
    from maspo_verl.patches.hf_agent_loop import register_agent_loops

    replicas = RolloutReplicaRegistry._registry
    previous_replica = replicas.get(BACKEND_NAME, _MISSING)
    RolloutReplicaRegistry.register(BACKEND_NAME, _load_replica_class)
    _applied = [(replicas, BACKEND_NAME, previous_replica, _load_replica_class)]
    try:
        _applied.append(_register_server_adapter())
        register_agent_loops()  # hf_cpu_single_turn_agent and hf_cpu_single_turn_agent_local_reward
    except BaseException:
        remove_hf_cpu_rollout()  # a half-applied patch leaves nothing behind
        raise


def remove_hf_cpu_rollout() -> None:
    """Undo `apply_hf_cpu_rollout` (no-op when it is not applied): verl's rollout-replica registry,
    `_ROLLOUT_REGISTRY` and agent-loop registry hold exactly the entries they held before (verl has no
    unregister functions, so the entries are deleted or put back here). An entry something else has
    replaced since is left alone."""
    global _applied
    if _applied is None:
        return
    agent_loops = sys.modules.get("maspo_verl.patches.hf_agent_loop")  # not imported: nothing was registered
    if agent_loops is not None:
        agent_loops.unregister_agent_loops()
    for registry, key, previous, ours in reversed(_applied):
        if registry.get(key) is ours:
            if previous is _MISSING:
                del registry[key]
            else:
                registry[key] = previous
    _applied = None

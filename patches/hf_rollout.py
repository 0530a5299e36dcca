"""Opt-in patch: the `hf_cpu` rollout backend, Hugging Face `generate` behind verl's rollout API.

verl 0.9 generates through vLLM, SGLang or TensorRT-LLM servers, none of which runs on a
CPU-only box. `apply_hf_cpu_rollout()` registers a backend named "hf_cpu"
(`actor_rollout_ref.rollout.name=hf_cpu`) made of verl's own extension points:

- `HfCpuReplica`, a verl `RolloutReplica` registered with the public
  `RolloutReplicaRegistry.register("hf_cpu", ...)`: in verl's hybrid (colocated) mode it starts
  one `HfCpuServer` Ray actor per replica, next to the replica's first training worker;
- `HfCpuServer`, the server: `generate(prompt_ids, sampling_params, request_id)` returns verl's
  `TokenOutput` (with log-probs when `rollout.calculate_log_probs`), batching the requests that
  arrive together into one padded `generate` call; its lifecycle methods (sleep, wake_up,
  abort, kv-cache) are no-ops: there is no GPU memory to free;
- `HfCpuServerAdapter`, the `BaseRollout` that verl's `ActorRolloutRefWorker` builds in each
  training worker: verl's "naive" checkpoint-engine path (the V1 sync trainer's, after every
  update) hands it the FSDP2 actor's full weights, which it sends to the server.

The adapter is found by verl through `_ROLLOUT_REGISTRY`, a module-level dict with no public
registration function: `_register_server_adapter()` is the one place this patch writes to it.

Not covered: tensor/pipeline/data parallel rollout (world size 1 per replica), standalone or
disaggregated rollout (the async trainers), multi-modal inputs, tool-calling agent loops,
OpenAI-compatible HTTP serving, speed. See patches/README.md and docs/cpu.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Generator, Optional

import ray
import torch
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.rollout import base as rollout_base
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica, RolloutReplicaRegistry, TokenOutput

from maspo_verl.patches import require_verl_version

__all__ = [
    "BACKEND_NAME",
    "SUPPORTED_VERL_VERSIONS",
    "HfCpuReplica",
    "HfCpuServer",
    "HfCpuServerAdapter",
    "apply_hf_cpu_rollout",
    "server_actor_name",
    "start_hf_cpu_server",
]

logger = logging.getLogger(__name__)

BACKEND_NAME = "hf_cpu"
SUPPORTED_VERL_VERSIONS = ("0.9.1",)
# Requests that arrive within this window share one `generate` call.
BATCHING_WINDOW_SECONDS = 0.02

_applied = False


def server_actor_name(replica_rank: int, name_suffix: str = "") -> str:
    """Ray name of replica `replica_rank`'s server: the adapter in each training worker looks it up."""
    return f"{BACKEND_NAME}_server_{replica_rank}{name_suffix}"


def _sampling_key(sampling_params: dict[str, Any]) -> tuple:
    """Requests batch together only when they sample the same way."""
    return tuple(
        sampling_params.get(name)
        for name in ("temperature", "top_p", "top_k", "repetition_penalty", "logprobs", "max_tokens", "max_new_tokens")
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
        self.weights_version: Optional[int] = None  # global step of the last weights received
        self.num_weight_updates = 0
        self._pending: list[tuple[list[int], dict[str, Any], asyncio.Future]] = []
        self._batcher: Optional[asyncio.Task] = None
        self._model_lock = asyncio.Lock()
        torch.manual_seed(self.config.seed + replica_rank)

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
        image_data: Optional[list[Any]] = None,
        video_data: Optional[list[Any]] = None,
        **kwargs: Any,
    ):
        """verl's server `generate`: token ids in, `TokenOutput` out (log-probs if `sampling_params["logprobs"]`)."""
        if image_data or video_data:
            raise NotImplementedError("the hf_cpu rollout does not take images or videos")
        future = asyncio.get_running_loop().create_future()
        self._pending.append((list(prompt_ids), dict(sampling_params), future))
        if self._batcher is None or self._batcher.done():
            self._batcher = asyncio.create_task(self._run_batches())
        return await future

    async def _run_batches(self) -> None:
        await asyncio.sleep(BATCHING_WINDOW_SECONDS)
        while self._pending:
            key = _sampling_key(self._pending[0][1])
            batch = [request for request in self._pending if _sampling_key(request[1]) == key]
            batch = batch[: max(1, self.config.max_num_seqs)]
            taken = {id(request) for request in batch}
            self._pending = [request for request in self._pending if id(request) not in taken]
            try:
                async with self._model_lock:
                    outputs = await asyncio.to_thread(
                        self._generate_batch, [request[0] for request in batch], batch[0][1]
                    )
            except Exception as error:  # every waiting request learns why
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, _, future), output in zip(batch, outputs, strict=True):
                if not future.done():
                    future.set_result(output)

    @torch.no_grad()
    def _generate_batch(self, prompts: list[list[int]], sampling_params: dict[str, Any]) -> list:
        """Left-padded batch through `model.generate`; per-token log-probs of logits / temperature."""
        longest = max(len(prompt) for prompt in prompts)
        input_ids = torch.full((len(prompts), longest), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), longest), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, longest - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            attention_mask[row, longest - len(prompt) :] = 1

        max_new_tokens = sampling_params.get("max_tokens") or sampling_params.get("max_new_tokens")
        max_new_tokens = min(max_new_tokens or self.config.response_length, self.config.response_length)
        temperature = float(sampling_params.get("temperature", 1.0) or 0.0)
        top_k = sampling_params.get("top_k", -1)
        generate_kwargs = dict(
            max_new_tokens=max_new_tokens,
            eos_token_id=self.eos_token_ids or None,
            pad_token_id=self.pad_token_id,
            return_dict_in_generate=True,
            output_logits=True,
            repetition_penalty=float(sampling_params.get("repetition_penalty", 1.0) or 1.0),
        )
        if temperature > 0:
            generate_kwargs.update(
                do_sample=True,
                temperature=temperature,
                top_p=float(sampling_params.get("top_p", 1.0) or 1.0),
                top_k=int(top_k) if top_k is not None and int(top_k) > 0 else 0,
            )
        else:
            generate_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        generated = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **generate_kwargs)
        new_tokens = generated.sequences[:, longest:]

        log_probs = None
        if sampling_params.get("logprobs"):
            # Like verl's actor: log-softmax of the raw logits divided by the sampling temperature.
            logits = torch.stack(generated.logits, dim=1).float()
            if temperature > 0:
                logits = logits / temperature
            log_probs = torch.log_softmax(logits, dim=-1).gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)

        outputs = []
        for row in range(len(prompts)):
            token_ids = new_tokens[row].tolist()
            length = len(token_ids)
            for position, token in enumerate(token_ids):
                if token in self.eos_token_ids:
                    length = position + 1  # the response keeps its end-of-sequence token
                    break
            outputs.append(
                TokenOutput(
                    token_ids=token_ids[:length],
                    log_probs=log_probs[row, :length].tolist() if log_probs is not None else None,
                    stop_reason="completed",
                    extra_fields={"global_steps": self.weights_version},
                )
            )
        return outputs

    async def update_weights(self, named_tensors: dict[str, torch.Tensor], global_steps: Optional[int] = None) -> int:
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
            return self.num_weight_updates

    def _tied_parameter_names(self) -> set[str]:
        """Output-embedding names that share storage with the input embedding (absent from the actor's export)."""
        output_embeddings = self.model.get_output_embeddings()
        if output_embeddings is None or output_embeddings.weight is not self.model.get_input_embeddings().weight:
            return set()
        return {name for name, parameter in self.model.state_dict(keep_vars=True).items() if parameter is output_embeddings.weight}

    def get_weights_version(self) -> tuple[Optional[int], int]:
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
    config, model_config, replica_rank: int = 0, name_suffix: str = "", node_id: Optional[str] = None
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
        self._server: Optional[ray.actor.ActorHandle] = None

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
        global_steps: Optional[int] = None,
        peft_config: Optional[dict] = None,
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


def _register_server_adapter() -> None:
    """The one write to a verl internal: `_ROLLOUT_REGISTRY` maps (name, mode) to the adapter class path."""
    rollout_base._ROLLOUT_REGISTRY[(BACKEND_NAME, "async")] = f"{__name__}.HfCpuServerAdapter"


def apply_hf_cpu_rollout() -> None:
    """Register the `hf_cpu` rollout backend in this process (version-checked, idempotent).

    The `verl.plugins` entry point calls it in every process when VERL_PLATFORM=cpu; select the
    backend with `actor_rollout_ref.rollout.name=hf_cpu`.
    """
    global _applied
    require_verl_version("apply_hf_cpu_rollout", SUPPORTED_VERL_VERSIONS)
    if _applied:
        return
    RolloutReplicaRegistry.register(BACKEND_NAME, _load_replica_class)
    _register_server_adapter()
    _applied = True

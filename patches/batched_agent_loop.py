"""Opt-in patch: verl's V1 agent-loop manager, storing a whole batch of rollouts at once, for the hf_cpu backend.

verl's V1 trainer hands each batch to `AgentLoopManagerTQ` (verl/trainer/ppo/v1/agent_loop_tq.py),
whose `AgentLoopWorkerTQ` runs one agent loop per sample and, per sample, makes one Ray call
through verl's load balancer to the rollout server and one TransferQueue put; per prompt it also
puts a "running" and a "finished" status. On a GPU cluster those calls hide behind seconds of
generation. On a CPU box they are most of a step's `gen`: about 300 of 500 ms at the quick preset
(README, "Speed of a CPU run"), and one TransferQueue message per validation sample.

`HfCpuAgentLoopManager` is that same manager with a worker that keeps verl's agent loops and
changes only how their calls and results travel:

- the agent loops keep verl's own `LLMServerClient`, but its load balancer is in process and hands
  out one batching "server" (`BatchingServers`): the `generate` calls of one batch go to the hf_cpu
  server in one Ray call (`HfCpuServer.generate_many`), collected for `CLIENT_WINDOW_SECONDS` after
  the last one;
- the batch runs through verl's own worker code: `generate_sequences` (sampling parameters, one
  sample per row), `_run_prompt` per prompt (`rollout.n` sessions, the status rule), `_run_agent_loop`
  per session (the registered loop, Hydra-built) and `_agent_loop_postprocess` (scoring, teacher
  log-probs, the TransferQueue rows);
- only their TransferQueue puts are redirected, for the call, to this worker (`_verl_code_with`: the
  functions' own code with the module-level name `tq` resolved to a collector; nothing in verl is
  rebound), and stored in three puts per batch: every prompt's "running" status, all rows, every
  terminal status. A failed session fails its prompt as in verl; its sibling sessions are still stored.

The trainer still polls the replay buffer as before; it sees a batch's prompts finish together.
Select it through verl's documented manager hook (TaskRunnerV1.init_agent_loop_manager, verl's
contract: implement `generate_sequences`, put the outputs into TransferQueue):

    actor_rollout_ref.rollout.agent.agent_loop_manager_class=maspo_verl.patches.batched_agent_loop.HfCpuAgentLoopManager

The CPU backend (maspo_verl/sandbox/tiny/cpu_backend.sh) selects it. Importing the module checks
nothing and changes nothing in verl; when verl builds the manager (or its worker), it checks the verl
version and that verl's two methods still store through the names it redirects (`check_verl`), and
refuses any rollout other than hf_cpu and any trainer but verl's V1 sync one (`check_manager_config`).
The rows it stores are those verl's worker builds (tested field by field against what verl's
`_agent_loop_postprocess` puts), and a training run through it repeats every metric of a run through
verl's manager (tests/test_main_ppo_cpu.py).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import types
from typing import Any

import ray
import transfer_queue as tq
from tensordict import TensorDict

from maspo_verl.patches import CPU_BACKEND_VERL_VERSIONS, UnsupportedVerlVersion, require_verl_version

try:
    from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ, AgentLoopWorkerTQ
except ImportError:
    # verl < 0.9 has no V1 trainer: the import has already failed, so say which verls this module is for
    require_verl_version("HfCpuAgentLoopManager", CPU_BACKEND_VERL_VERSIONS)
    raise
from verl.utils.tensordict_utils import list_of_dict_to_tensordict
from verl.workers.rollout.llm_server import LLMServerClient

from maspo_verl.patches.fast_replay_buffer import canonical_order
from maspo_verl.patches.hf_rollout import BACKEND_NAME, server_actor_name

__all__ = [
    "CLIENT_WINDOW_SECONDS",
    "MANAGER_BANNER",
    "SUPPORTED_VERL_VERSIONS",
    "HfCpuAgentLoopManager",
    "check_manager_config",
    "check_verl",
    "HfCpuAgentLoopWorker",
]

logger = logging.getLogger(__name__)

SUPPORTED_VERL_VERSIONS = CPU_BACKEND_VERL_VERSIONS
# The agent loops of one batch reach `generate` a millisecond or two apart (each first builds its
# prompt tokens); a call waits until none has come for this long, then all go in one Ray call.
CLIENT_WINDOW_SECONDS = 0.005
# Printed once when verl builds the manager, so a run's log shows which manager it ran with.
MANAGER_BANNER = "maspo-verl HfCpuAgentLoopManager: a batch's rollouts in one server call and one TransferQueue put"


class _RayMethod:
    """`handle.method.remote(...)`, run in this process."""

    def __init__(self, function):
        self.remote = function


class BatchingServers:
    """verl's `LLMServerClient` (verl/workers/rollout/llm_server.py) with this as its load balancer: the
    agent loops keep verl's own client, which does what it does around every call (drops the vLLM-only
    `priority` and SGLang-only `mm_processor_output`, sets the output's `min_global_steps` /
    `max_global_steps`), but the balancer is in process (no Ray round trips to acquire and release a
    server) and the one "server" it hands out is this object, which collects the `generate` calls and
    sends them to the hf_cpu servers in one `generate_many` Ray call per server.

    Calls are spread over the replicas' servers in arrival order (a response does not depend on which
    server samples it). `client()` builds the verl client.
    """

    SERVER_ID = "hf_cpu_batch"

    def __init__(self, window_seconds: float = CLIENT_WINDOW_SECONDS):
        self._window_seconds = window_seconds
        self._pending: list[tuple[dict[str, Any], asyncio.Future]] = []
        self._flusher: asyncio.TimerHandle | None = None
        self._servers: list[ray.actor.ActorHandle] | None = None
        self._sends: set[asyncio.Task] = set()  # the event loop keeps only weak references to tasks
        # the load balancer's methods, as verl's client calls them (release is not awaited)
        self.require_acquire_fields = _RayMethod(self._no_fields)
        self.require_release_fields = _RayMethod(self._no_fields)
        self.acquire_server = _RayMethod(self._acquire_server)
        self.release_server = _RayMethod(lambda **fields: None)
        # the server's
        self.generate = _RayMethod(self._generate)

    def client(self, config) -> LLMServerClient:
        """verl's own client, balanced by this object."""
        return LLMServerClient(config, load_balancer_handle=self)

    @staticmethod
    async def _no_fields() -> list[str]:
        return []

    async def _acquire_server(self, request_id, **fields):
        return self.SERVER_ID, self

    def _server_handles(self) -> list[ray.actor.ActorHandle]:
        if self._servers is None:
            servers = []
            while True:
                try:
                    servers.append(ray.get_actor(server_actor_name(len(servers))))
                except ValueError:
                    break
            if not servers:
                raise RuntimeError(f"no hf_cpu server is running (looked for the Ray actor {server_actor_name(0)!r})")
            self._servers = servers
        return self._servers

    async def _generate(
        self,
        *,
        prompt_ids,
        sampling_params,
        request_id,
        image_data=None,
        video_data=None,
        audio_data=None,
        mm_processor_kwargs=None,
        mm_processor_output=None,
        **kwargs: Any,
    ):
        """The server's `generate` as verl's client calls it: waits for this call's output from the batch.
        (verl 0.9.1's client drops `mm_processor_output` itself, verl 0.9.0's and main's pass it on.)"""
        if image_data or video_data or audio_data or mm_processor_kwargs or mm_processor_output:
            raise NotImplementedError("the hf_cpu rollout does not take images, videos or audio")
        request = dict(
            prompt_ids=list(prompt_ids), sampling_params=dict(sampling_params), request_id=request_id, **kwargs
        )
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((request, future))
        if self._flusher is not None:
            self._flusher.cancel()
        self._flusher = loop.call_later(self._window_seconds, self._flush)
        return await future

    def _flush(self) -> None:
        self._flusher = None
        pending, self._pending = self._pending, []
        try:
            servers = self._server_handles()
        except Exception as error:
            _fail_unresolved(pending, error)
            return
        for rank, server in enumerate(servers):
            share = pending[rank :: len(servers)]
            if share:
                task = asyncio.ensure_future(self._send(server, share))
                self._sends.add(task)
                task.add_done_callback(self._sends.discard)
                # A task cancelled before its first step never enters _send's handlers: fail its callers here.
                task.add_done_callback(lambda done, share=share: _fail_if_cancelled(done, share))

    @staticmethod
    async def _send(server, share: list[tuple[dict[str, Any], asyncio.Future]]) -> None:
        """One `generate_many` call; each waiting agent loop gets its output or its request's error.

        Whatever happens (the call fails, returns the wrong number of outputs, or is cancelled), no
        agent loop is left waiting: an unresolved one would keep its prompt "running" for ever."""
        try:
            outputs = await server.generate_many.remote([request for request, _ in share])
            if len(outputs) != len(share):
                raise RuntimeError(f"hf_cpu server returned {len(outputs)} outputs for {len(share)} requests")
            for (_, future), output in zip(share, outputs, strict=True):
                if future.done():
                    continue
                if isinstance(output, BaseException):
                    future.set_exception(output)
                else:
                    future.set_result(output)
        except Exception as error:  # every waiting agent loop learns why
            _fail_unresolved(share, error)
        except BaseException as error:  # cancelled (the worker shuts down): the agent loops fail, not hang
            _fail_unresolved(share, RuntimeError(f"hf_cpu generate_many was interrupted: {error!r}"))
            raise


def _fail_if_cancelled(task: asyncio.Task, requests: list[tuple[dict[str, Any], asyncio.Future]]) -> None:
    if task.cancelled():
        _fail_unresolved(requests, RuntimeError("hf_cpu generate_many was interrupted: cancelled"))


def _fail_unresolved(requests: list[tuple[dict[str, Any], asyncio.Future]], error: BaseException) -> None:
    for _, future in requests:
        if not future.done():
            future.set_exception(error)


class _RecordedPuts:
    """Rows verl's code would put into TransferQueue, recorded instead; any TransferQueue call other than
    the ones a subclass records raises, naming `caller` (the verl function that made it)."""

    caller = "verl"

    def __init__(self):
        self.keys: list[str] = []
        self.fields: list[dict] = []
        self.tags: list[dict] = []
        self.partition_ids: set[str] = set()

    async def async_kv_batch_put(self, *, keys, fields, tags, partition_id) -> None:
        self.keys.extend(keys)
        self.fields.extend(fields)
        self.tags.extend(tags)
        self.partition_ids.add(partition_id)

    def __getattr__(self, name: str):
        raise AttributeError(
            f"verl's {self.caller} called TransferQueue's {name!r}, which HfCpuAgentLoopManager does not "
            "batch: this verl stores rollouts in a way the patch was not written for"
        )


class _SessionRows(_RecordedPuts):
    """What verl's `_agent_loop_postprocess` would put into TransferQueue for one session, kept instead.

    verl's method scores a session's outputs, builds their rows (key `{uid}_{session_id}_{index}`, the
    output's fields with the sample's, `input_ids`, `position_ids`, `loss_mask`, ...; tags with the
    status, lengths and global steps) and stores them itself:
    `tq.async_kv_batch_put(keys=..., fields=list_of_dict_to_tensordict(fields), tags=..., partition_id=...)`.
    The row building is inline there (verl has no function returning the rows), and the put is the
    per-session call this manager exists to batch. So verl's code runs with those two module-level
    names resolved to this object (`_verl_code_with`): `list_of_dict_to_tensordict` hands the row dicts
    through unchanged (verl's own function converts the whole batch's rows in `_store_batch`) and the
    put records them. Any other TransferQueue call from that method raises, naming it.
    """

    caller = "_agent_loop_postprocess"

    @staticmethod
    def list_of_dict_to_tensordict(rows: list[dict]) -> list[dict]:
        return rows

    async def async_kv_batch_put(self, *, keys, fields, tags, partition_id) -> None:
        if not isinstance(fields, list):
            raise TypeError(f"verl's {self.caller} put {type(fields).__name__} fields, not its row dicts")
        await super().async_kv_batch_put(keys=keys, fields=fields, tags=tags, partition_id=partition_id)


class _BatchPuts(_RecordedPuts):
    """Stands in for TransferQueue (`tq`) in verl's own `_run_prompt` for the prompts of one batch (and
    receives their sessions' rows from `_agent_loop_postprocess`), so that `_store_batch` stores them in
    three puts where verl's worker makes two per prompt and one per session.

    verl's `_run_prompt` puts a prompt's "running" status before starting its sessions and its terminal
    status ("finished", or "failure" when a session failed) after they all settle; its session logic sits
    between those puts, so its code runs with `tq` resolved to this object. A "running" put waits until
    the batch's "running" statuses are stored in one put (the sessions then start, as in verl); a
    terminal status is recorded for `_store_batch`. Any other TransferQueue call raises, naming it.
    """

    caller = "_run_prompt"

    def __init__(self):
        super().__init__()
        loop = asyncio.get_running_loop()
        self.running_keys: list[str] = []
        self.running_tags: list[dict] = []
        self.all_running = loop.create_future()  # done once every prompt has asked for its "running" put
        self.running_stored = loop.create_future()  # done once `_store_batch` has stored them
        self.statuses: dict[str, dict] = {}  # uid -> terminal status tag, in the order the prompts finished
        self._expected: int | None = None

    @property
    def partition_id(self) -> str:
        if len(self.partition_ids) != 1:
            raise RuntimeError(f"one batch's rows went to partitions {sorted(self.partition_ids)}")
        return next(iter(self.partition_ids))

    def expect(self, num_prompts: int) -> None:
        self._expected = num_prompts
        self._check_all_running()

    def _check_all_running(self) -> None:
        if self._expected is not None and len(self.running_keys) >= self._expected and not self.all_running.done():
            self.all_running.set_result(None)

    async def async_kv_put(self, *, key, partition_id, tag) -> None:
        self.partition_ids.add(partition_id)
        if tag.get("status") == "running":
            self.running_keys.append(key)
            self.running_tags.append(tag)
            self._check_all_running()
            await asyncio.shield(self.running_stored)
        else:
            self.statuses[key] = tag


_BATCH: contextvars.ContextVar[_BatchPuts] = contextvars.ContextVar("maspo_verl_hf_cpu_batch")


def _require_names(function, names: set[str]) -> None:
    """Refuse a verl whose `function` no longer uses `names`, the module-level names and TransferQueue
    calls `_verl_code_with` redirects for it (checked by `check_verl` when verl builds the manager)."""
    missing = names - set(function.__code__.co_names)
    if missing:
        raise UnsupportedVerlVersion(
            f"HfCpuAgentLoopManager: verl's AgentLoopWorkerTQ.{function.__name__} no longer uses {sorted(missing)} "
            "to store rollouts; the patch must be updated for this verl"
        )


_VERLS_POSTPROCESS = AgentLoopWorkerTQ.__ray_actor_class__._agent_loop_postprocess
_VERLS_RUN_PROMPT = AgentLoopWorkerTQ.__ray_actor_class__._run_prompt


def check_verl() -> str:
    """Refuse a verl this manager was not written for: another version (`UnsupportedVerlVersion` naming the
    supported ones), or one whose `_agent_loop_postprocess` / `_run_prompt` no longer store through the names
    the worker redirects. Run when verl builds the manager and each worker, never at import. Returns the version."""
    version = require_verl_version("HfCpuAgentLoopManager", SUPPORTED_VERL_VERSIONS)
    _require_names(_VERLS_POSTPROCESS, {"tq", "async_kv_batch_put", "list_of_dict_to_tensordict"})
    _require_names(_VERLS_RUN_PROMPT, {"tq", "async_kv_put"})
    return version


def _verl_code_with(function, **names):
    """verl's `function`, its own code, with some module-level names resolved to other objects for one call.
    Nothing in verl's module is rebound: the function gets a copy of its module's globals with those
    entries replaced."""
    redirected = types.FunctionType(
        function.__code__,
        {**function.__globals__, **names},
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )
    redirected.__kwdefaults__ = function.__kwdefaults__
    return redirected


def _rank_in(order: list[str]):
    rank = {key: position for position, key in enumerate(order)}
    return lambda key: rank.get(key, len(rank))


def _rows_by_key_set(fields: list[dict]) -> list[list[int]]:
    """Row indexes grouped by their set of keys, in order of first appearance.

    verl's `list_of_dict_to_tensordict` takes the keys of the first row: a later row with another
    key set would lose a column or fail the put. Which keys a row has depends on its values
    (`AgentLoopOutput.as_dict` leaves unset fields out, e.g. `rm_scores` without a reward), so rows
    of different key sets are put separately, as verl's one put per session does.
    """
    groups: dict[frozenset, list[int]] = {}
    for index, field in enumerate(fields):
        groups.setdefault(frozenset(field), []).append(index)
    return list(groups.values())


MANAGER_KEY = "actor_rollout_ref.rollout.agent.agent_loop_manager_class"
_SELECTED = f"{MANAGER_KEY}=maspo_verl.patches.batched_agent_loop.HfCpuAgentLoopManager"


def check_manager_config(config) -> None:
    """Refuse a configuration the manager was not written for, naming the key to change.

    It sends its calls to hf_cpu servers (actor_rollout_ref.rollout.name=hf_cpu), and it replaces
    verl's V1 sync trainer's manager only: the legacy trainer (trainer.use_v1=false) expects its
    manager to return the batch, and in verl's async modes a batch whose prompts all finish together
    would change which prompts a step trains on. With reward.num_workers=0 only the agent loop that
    scores in the worker can score (verl's own loops would index an empty list of reward actors).
    """
    backend = config.actor_rollout_ref.rollout.name
    if backend != BACKEND_NAME:
        raise ValueError(
            f"{_SELECTED} sends its calls to "
            f"hf_cpu servers, but actor_rollout_ref.rollout.name={backend!r}: "
            f"unset {MANAGER_KEY} for verl's own manager"
        )
    trainer = config.get("trainer", {})
    if not trainer.get("use_v1", False):
        raise ValueError(
            f"{_SELECTED} is for verl's V1 trainer "
            f"(trainer.use_v1=true), got trainer.use_v1={trainer.get('use_v1', None)!r}: unset {MANAGER_KEY}"
        )
    mode = trainer.get("v1", {}).get("trainer_mode", None)
    if mode != "sync":
        raise ValueError(
            f"{_SELECTED} is for verl's V1 sync trainer "
            f"(trainer.v1.trainer_mode=sync), got {mode!r}: unset {MANAGER_KEY} for the async trainers"
        )
    from maspo_verl.patches.hf_agent_loop import LOCAL_REWARD_AGENT_LOOP_NAME

    default_loop = config.actor_rollout_ref.rollout.get("agent", {}).get("default_agent_loop", None)
    if config.get("reward", {}).get("num_workers", None) == 0 and default_loop != LOCAL_REWARD_AGENT_LOOP_NAME:
        raise ValueError(
            f"reward.num_workers=0 starts no reward actor, so only the agent loop {LOCAL_REWARD_AGENT_LOOP_NAME!r}, "
            "which scores in the agent-loop worker, can score a response; got actor_rollout_ref.rollout.agent."
            f"default_agent_loop={default_loop!r} (verl's loops would pick a reward actor from an empty list): "
            f"set reward.num_workers>=1 or default_agent_loop={LOCAL_REWARD_AGENT_LOOP_NAME}"
        )


class HfCpuAgentLoopWorker(AgentLoopWorkerTQ.__ray_actor_class__):
    """verl's `AgentLoopWorkerTQ`, running a batch's agent loops together and storing their rows at once."""

    def __init__(self, config, llm_client, *args, **kwargs):
        check_verl()
        check_manager_config(config)
        # verl's own client class over the in-process batching balancer; `llm_client` (verl's client over
        # its Ray load balancer) goes unused
        super().__init__(config, BatchingServers().client(config), *args, **kwargs)

    async def generate_sequences(self, batch: TensorDict) -> None:
        """verl's own `generate_sequences` (sampling parameters, one sample per row, one `_run_prompt` task
        per prompt, without waiting for them), its TransferQueue puts gathered for the batch (`_BatchPuts`),
        then one task that stores them (`_store_batch`)."""
        if len(batch) == 0:
            return
        puts = _BatchPuts()
        before = set(self.background_tasks)
        token = _BATCH.set(puts)  # the prompt tasks verl creates copy this context, and so their sessions
        try:
            await super().generate_sequences(batch)
        finally:
            _BATCH.reset(token)
        prompts = self.background_tasks - before  # created last in verl's method: none has started yet
        puts.expect(len(prompts))
        task = asyncio.create_task(self._store_batch(puts, prompts))
        self.background_tasks.add(task)
        task.add_done_callback(self.background_tasks.discard)

    async def _run_prompt(self, prompt: dict, sampling_params: dict, trajectory: dict, trace: bool = False) -> None:
        """verl's own `_run_prompt` (`rollout.n` sessions, `__rollout_n__` / `__do_sample__`, a prompt fails when
        a session fails), its status puts going to the batch's `_BatchPuts`."""
        run_prompt = _verl_code_with(_VERLS_RUN_PROMPT, tq=_BATCH.get())
        await run_prompt(self, prompt, sampling_params, trajectory=trajectory, trace=trace)

    @staticmethod
    async def _store_batch(puts: _BatchPuts, prompts: set[asyncio.Task]) -> None:
        """The batch's three puts: every prompt's "running" status once each prompt has asked for it (its
        sessions start when it is stored, as in verl), then all rows, then every terminal status; rows and
        statuses in prompt order (the prompts' "running" order), then session and index. A batch whose rows
        cannot be stored fails every prompt."""
        prompts_done = asyncio.ensure_future(asyncio.gather(*prompts, return_exceptions=True))
        await asyncio.wait({puts.all_running, prompts_done}, return_when=asyncio.FIRST_COMPLETED)
        try:
            if puts.running_keys:
                await tq.async_kv_batch_put(
                    keys=puts.running_keys, partition_id=puts.partition_id, tags=puts.running_tags
                )
        except Exception as error:  # every prompt's running put raises it, as verl's own put would
            puts.running_stored.set_exception(error)
        else:
            puts.running_stored.set_result(None)
        for result in await prompts_done:  # a prompt task that raised (verl's own would go unnoticed too)
            if isinstance(result, BaseException):
                logger.error("Error in verl's _run_prompt", exc_info=(type(result), result, result.__traceback__))
        if not puts.statuses:
            return
        prompt_order = puts.running_keys
        statuses = {key: puts.statuses[key] for key in sorted(puts.statuses, key=_rank_in(prompt_order))}
        try:
            order = canonical_order(puts.keys, prompt_order)
            keys, fields, tags = ([items[i] for i in order] for items in (puts.keys, puts.fields, puts.tags))
            for group in _rows_by_key_set(fields):  # one put in the usual case: every row has the same keys
                await tq.async_kv_batch_put(
                    keys=[keys[i] for i in group],
                    partition_id=puts.partition_id,
                    fields=list_of_dict_to_tensordict([fields[i] for i in group]),
                    tags=[tags[i] for i in group],
                )
        except Exception as error:
            logger.exception(f"Error in HfCpuAgentLoopWorker._store_batch: {error}")
            statuses = {key: {"status": "failure"} for key in statuses}
        await tq.async_kv_batch_put(keys=list(statuses), partition_id=puts.partition_id, tags=list(statuses.values()))

    async def _agent_loop_postprocess(self, output, validate, **kwargs):
        """verl's own `_agent_loop_postprocess` for one session (scoring, teacher log-probs, rows), returning
        the session's TransferQueue keys, fields and tags instead of putting them (`_SessionRows`); None
        for an empty output, which verl only logs."""
        outputs = output if isinstance(output, list) else [output]
        if outputs and outputs[-1].reward_score is None and self.reward_loop_worker_handles == []:
            from maspo_verl.patches.hf_agent_loop import LOCAL_REWARD_AGENT_LOOP_NAME

            raise ValueError(
                f"agent loop {kwargs.get('agent_name')!r} returned an unscored response and reward.num_workers=0 "
                "started no reward actor to score it: set reward.num_workers>=1, or use the agent loop "
                f"{LOCAL_REWARD_AGENT_LOOP_NAME!r}, which scores in the agent-loop worker"
            )
        rows = _SessionRows()
        postprocess = _verl_code_with(
            _VERLS_POSTPROCESS, tq=rows, list_of_dict_to_tensordict=rows.list_of_dict_to_tensordict
        )
        await postprocess(self, output, validate, **kwargs)
        if not rows.keys:
            return None
        partition_id = "val" if validate else "train"
        if rows.partition_ids != {partition_id}:
            raise RuntimeError(
                f"verl's _agent_loop_postprocess put rows into {sorted(rows.partition_ids)}, not {partition_id!r}"
            )
        batch = _BATCH.get(None)
        if batch is not None:  # run by `_run_prompt` for a batch: stored with the batch's other rows
            await batch.async_kv_batch_put(
                keys=rows.keys, fields=rows.fields, tags=rows.tags, partition_id=partition_id
            )
        return rows.keys, rows.fields, rows.tags


class HfCpuAgentLoopManager(AgentLoopManagerTQ):
    """verl's `AgentLoopManagerTQ` with `HfCpuAgentLoopWorker` as its workers (select with
    `actor_rollout_ref.rollout.agent.agent_loop_manager_class`)."""

    def __init__(self, config, *args, **kwargs):
        check_verl()
        check_manager_config(config)
        super().__init__(config, *args, **kwargs)
        self.agent_loop_workers_class = ray.remote(HfCpuAgentLoopWorker)
        print(f"{MANAGER_BANNER}: {self.rollout_config.agent.num_workers} worker(s)", flush=True)

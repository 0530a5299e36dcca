"""The batched agent-loop manager (patches/batched_agent_loop.py), without Ray or a model.

- the TransferQueue rows it stores are the ones verl's own `AgentLoopWorkerTQ._agent_loop_postprocess`
  puts, captured from verl's method: keys, tags, and every field's values and dtypes; verl's method
  itself builds them (its put redirected for the call, nothing in verl's module rebound), and a verl
  that stores rows otherwise is refused;
- a batch runs through verl's own `generate_sequences` and `_run_prompt` (their puts redirected to
  the batch): one put marks its prompts running (sessions start after it), one put stores all rows,
  one put the terminal statuses; a failed session fails its prompt (verl's rule) and its siblings are
  stored anyway;
- rows with different key sets go in separate puts (verl's row-to-TensorDict takes the first row's keys);
- verl's own client over the in-process batching balancer gathers concurrent `generate` calls into one
  `generate_many` per server, returns each caller its own output or its own request's error, never
  leaves a caller waiting, and sets the global steps;
- verl's own `_run_agent_loop` (a registered loop built by Hydra) feeds our rows and puts;
- the manager and its worker refuse another rollout backend, verl's legacy and async trainers, and
  an unsupported verl, naming what to change; importing the module checks nothing.

That a training run through the manager repeats every metric of a run through verl's manager is
tests/test_main_ppo_cpu.py; that `HfCpuServer.generate_many` equals one `generate` per request is
tests/test_hf_rollout.py.
"""

from __future__ import annotations

import asyncio
import copy

import pytest
import torch
import transfer_queue
from tensordict import NonTensorData, NonTensorStack, TensorDict

from maspo_verl.patches import batched_agent_loop
from maspo_verl.patches.batched_agent_loop import BatchingServers, HfCpuAgentLoopWorker

pytestmark = pytest.mark.kind("verl")


def _output(prompt_ids, response_ids, reward=None, global_steps=3):
    from verl.experimental.agent_loop.agent_loop import AgentLoopMetrics, AgentLoopOutput

    output = AgentLoopOutput(
        prompt_ids=prompt_ids,
        response_ids=response_ids,
        response_mask=[1] * len(response_ids),
        response_logprobs=[-0.5 - 0.1 * i for i in range(len(response_ids))],
        num_turns=2,
        metrics=AgentLoopMetrics(generate_sequences=0.01),
        extra_fields={
            "global_steps": global_steps,
            "min_global_steps": global_steps,
            "max_global_steps": global_steps,
            "turn_scores": [],
            "tool_rewards": [],
        },
    )
    if reward is not None:
        output.reward_score = reward
        output.extra_fields["reward_extra_info"] = {"acc": reward}
    return output


SAMPLE = dict(
    raw_prompt=[{"role": "user", "content": "1+1="}],
    uid="u7",
    session_id=2,
    index=4,
    global_steps=3,
    data_source="tiny_arithmetic",
    reward_model={"ground_truth": "2"},
    extra_info={"index": 4},
    agent_name="hf_cpu_single_turn_agent_local_reward",
)


def _bare_worker():
    worker = HfCpuAgentLoopWorker.__new__(HfCpuAgentLoopWorker)  # the methods on a bare instance: no Ray, no model
    worker.processor, worker.mm_processor_kwargs = None, {}
    worker.reward_loop_worker_handles = None
    worker.distillation_enabled = False
    return worker


@pytest.mark.parametrize(
    "outputs",
    [
        [_output([5, 6, 7], [8, 9], reward=1.0)],
        [_output([5, 6], [8], reward=None), _output([5, 6, 8, 3], [4, 2, 9], reward=0.0)],  # two turn outputs
    ],
    ids=["single-turn", "two-outputs"],
)
def test_rows_are_those_verls_worker_puts(outputs, monkeypatch):
    from verl.trainer.ppo.v1 import agent_loop_tq
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    put = []

    async def capture(**kwargs):
        put.append(kwargs)

    monkeypatch.setattr(agent_loop_tq.tq, "async_kv_batch_put", capture)
    verls_worker = agent_loop_tq.AgentLoopWorkerTQ.__ray_actor_class__
    asyncio.run(
        verls_worker._agent_loop_postprocess(_bare_worker(), copy.deepcopy(outputs), False, **copy.deepcopy(SAMPLE))
    )
    keys, fields, tags = asyncio.run(
        _bare_worker()._agent_loop_postprocess(copy.deepcopy(outputs), False, **copy.deepcopy(SAMPLE))
    )

    (verls,) = put  # ours put nothing: verl's method ran with its put redirected to us
    assert agent_loop_tq.tq is transfer_queue and agent_loop_tq.list_of_dict_to_tensordict is list_of_dict_to_tensordict
    assert verls["partition_id"] == "train"
    assert keys == verls["keys"] == [f"u7_2_{i}" for i in range(len(outputs))]
    assert tags == verls["tags"]
    ours, theirs = list_of_dict_to_tensordict(fields), verls["fields"]
    assert sorted(ours.keys()) == sorted(theirs.keys())
    for key in theirs.keys():
        mine, want = ours.get(key), theirs.get(key)
        assert type(mine) is type(want), key
        if isinstance(want, torch.Tensor):
            assert mine.dtype == want.dtype, key
            assert all(torch.equal(a, b) for a, b in zip(mine.unbind(0), want.unbind(0), strict=True)), key
        else:
            assert mine.tolist() == want.tolist(), key
    assert fields[-1]["rm_scores"][-1] == outputs[-1].reward_score  # the score travels into the stored row


def test_an_empty_output_stores_nothing(monkeypatch):
    recorder = _Recorder()
    monkeypatch.setattr(transfer_queue, "async_kv_batch_put", recorder)
    assert asyncio.run(_bare_worker()._agent_loop_postprocess([], False, **copy.deepcopy(SAMPLE))) is None
    assert recorder.calls == []


tq = transfer_queue  # the module-level name verl's `_agent_loop_postprocess` stores through


async def _puts_a_status(self, output, validate, **kwargs):  # a verl storing rows with another TransferQueue call
    await tq.async_kv_put(key=kwargs["uid"], partition_id="train", tag={"status": "x"})


async def _puts_a_tensordict(self, output, validate, **kwargs):  # a verl converting rows with another function
    await tq.async_kv_batch_put(keys=["k"], fields=TensorDict({}, batch_size=1), tags=[{}], partition_id="train")


async def _lists_keys(self, prompt, sampling_params, trajectory, trace=False):  # a verl reading TransferQueue here
    await tq.async_kv_list(partition_id="train")


def test_a_verl_storing_rows_otherwise_is_refused(monkeypatch, caplog):
    """When verl builds the manager or its worker (the names verl's methods must use), and at run time,
    before anything reaches TransferQueue."""
    from maspo_verl.patches import UnsupportedVerlVersion
    from maspo_verl.patches.batched_agent_loop import HfCpuAgentLoopManager

    with pytest.raises(UnsupportedVerlVersion, match=r"_puts_a_status no longer uses \['async_kv_batch_put'"):
        batched_agent_loop._require_names(_puts_a_status, {"tq", "async_kv_batch_put", "list_of_dict_to_tensordict"})
    batched_agent_loop._require_names(_puts_a_status, {"tq", "async_kv_put"})
    with monkeypatch.context() as patched:
        patched.setattr(batched_agent_loop, "_VERLS_RUN_PROMPT", _lists_keys)
        for build in (HfCpuAgentLoopManager, HfCpuAgentLoopWorker):
            with pytest.raises(UnsupportedVerlVersion, match=r"_lists_keys no longer uses \['async_kv_put'\]"):
                build(_manager_config(), llm_client=None)
    recorder = _Recorder()
    monkeypatch.setattr(transfer_queue, "async_kv_batch_put", recorder)
    monkeypatch.setattr(transfer_queue, "async_kv_put", recorder)
    session = dict(output=[_output([5], [6], reward=1.0)], validate=False, **copy.deepcopy(SAMPLE))
    monkeypatch.setattr(batched_agent_loop, "_VERLS_POSTPROCESS", _puts_a_status)
    with pytest.raises(AttributeError, match="called TransferQueue's 'async_kv_put'"):
        asyncio.run(_bare_worker()._agent_loop_postprocess(**session))
    monkeypatch.setattr(batched_agent_loop, "_VERLS_POSTPROCESS", _puts_a_tensordict)
    with pytest.raises(TypeError, match="put TensorDict fields, not its row dicts"):
        asyncio.run(_bare_worker()._agent_loop_postprocess(**session))
    monkeypatch.setattr(batched_agent_loop, "_VERLS_RUN_PROMPT", _lists_keys)
    worker = _worker_with_config()

    async def main():
        await worker.generate_sequences(_batch(["a"]))
        await asyncio.gather(*worker.background_tasks, return_exceptions=True)

    asyncio.run(main())  # the prompt task fails, logged; nothing is stored
    assert "verl's _run_prompt called TransferQueue's 'async_kv_list'" in caplog.text
    assert recorder.calls == []


class _Recorder:
    def __init__(self):
        self.calls = []

    async def __call__(self, **kwargs):
        self.calls.append(kwargs)


def _batch(uids, validate=False):
    batch = TensorDict({"input_ids": torch.zeros(len(uids), 3, dtype=torch.int64)}, batch_size=len(uids))
    batch["uid"] = NonTensorStack(*uids)
    batch["index"] = NonTensorStack(*range(len(uids)))
    batch["global_steps"] = NonTensorData(5)
    if validate:
        batch["validate"] = NonTensorData(True)
    return batch


def _run_batch(worker, batch) -> None:
    """The worker's `generate_sequences`, then the background task it starts, to completion."""

    async def main():
        await worker.generate_sequences(batch)
        await asyncio.gather(*worker.background_tasks)

    asyncio.run(main())


def _agent_loop_for(worker, reward=lambda uid, session_id: 1.0, fail=lambda uid, session_id: False, seen=None):
    """Stands in for verl's `_run_agent_loop` (no agent loop, no server): one output per session, handed to
    the worker's `_agent_loop_postprocess` as verl's `_run_agent_loop` hands it (same kwargs)."""

    async def run_agent_loop(sampling_params, trajectory, trace, session_id, agent_name, **sample):
        if seen is not None:
            seen.append((sample["uid"], session_id, sampling_params, agent_name))
        await asyncio.sleep(0.001 * ((session_id * 7) % 3))  # finish out of order
        if fail(sample["uid"], session_id):
            raise RuntimeError("boom")
        output = _output([5, 6], [session_id + 1], reward=reward(sample["uid"], session_id))
        return await worker._agent_loop_postprocess(output, trajectory["validate"], session_id=session_id, **sample)

    return run_agent_loop


def _worker_with_config(n=3, val_n=2):
    from omegaconf import OmegaConf

    worker = _bare_worker()
    worker.background_tasks = set()
    worker.config = OmegaConf.create(
        {
            "actor_rollout_ref": {
                "rollout": {
                    "n": n,
                    "temperature": 1.0,
                    "top_p": 1.0,
                    "top_k": -1,
                    "calculate_log_probs": True,
                    "val_kwargs": {"n": val_n, "temperature": 0.0, "top_p": 1.0, "top_k": -1},
                    "agent": {"default_agent_loop": "hf_cpu_single_turn_agent_local_reward"},
                }
            }
        }
    )
    return worker


@pytest.mark.parametrize("validate", [False, True], ids=["train", "val"])
def test_a_batch_is_stored_in_three_puts_and_a_failed_session_fails_only_its_prompt(validate, monkeypatch):
    """verl's own generate_sequences / _run_prompt / _agent_loop_postprocess run the batch; the puts are ours."""
    recorder = _Recorder()
    monkeypatch.setattr(batched_agent_loop.tq, "async_kv_batch_put", recorder)
    worker = _worker_with_config()
    seen = []
    run_agent_loop = _agent_loop_for(worker, fail=lambda uid, session_id: (uid, session_id) == ("b", 1), seen=seen)

    async def sessions_start_once_running_is_stored(*args, **kwargs):
        assert len(recorder.calls) == 1 and recorder.calls[0]["tags"][0] == {"status": "running"}
        return await run_agent_loop(*args, **kwargs)

    worker._run_agent_loop = sessions_start_once_running_is_stored
    _run_batch(worker, _batch(["a", "b", "c"], validate))

    partition = "val" if validate else "train"
    n = 2 if validate else 3
    sampling = {
        "temperature": 0.0 if validate else 1.0,
        "top_p": 1.0,
        "top_k": -1,
        "repetition_penalty": 1.0,
        "logprobs": True,
    }  # as verl's generate_sequences builds them
    assert sorted(seen, key=str) == sorted(
        ((uid, s, sampling, "hf_cpu_single_turn_agent_local_reward") for uid in "abc" for s in range(n)), key=str
    )
    running, rows, statuses = recorder.calls
    assert running == {"keys": ["a", "b", "c"], "partition_id": partition, "tags": [{"status": "running"}] * 3}
    expected_keys = [f"{uid}_{s}_0" for uid in "abc" for s in range(n) if (uid, s) != ("b", 1)]
    assert rows["keys"] == expected_keys and rows["partition_id"] == partition  # prompt, then session order
    assert rows["fields"].batch_size[0] == len(expected_keys)
    assert [row.tolist() for row in rows["fields"]["responses"].unbind(0)] == [
        [int(key.split("_")[1]) + 1] for key in expected_keys
    ]
    assert [tag["global_steps"] for tag in rows["tags"]] == [5] * len(expected_keys)
    assert statuses == {
        "keys": ["a", "b", "c"],
        "partition_id": partition,
        "tags": [{"status": "finished"}, {"status": "failure"}, {"status": "finished"}],
    }


def test_verls_per_sample_rollout_n_and_greedy_flag_are_honoured(monkeypatch):
    """`__rollout_n__` and `__do_sample__` are read by verl's own `_run_prompt`, which the worker runs."""
    recorder = _Recorder()
    monkeypatch.setattr(batched_agent_loop.tq, "async_kv_batch_put", recorder)
    worker = _worker_with_config(n=3)
    seen = []
    worker._run_agent_loop = _agent_loop_for(worker, seen=seen)
    batch = _batch(["a", "b"])
    batch["__rollout_n__"] = NonTensorStack(1, 2)
    batch["__do_sample__"] = NonTensorStack(True, False)
    _run_batch(worker, batch)
    sessions = sorted((uid, s, params["temperature"]) for uid, s, params, _ in seen)
    assert sessions == [("a", 0, 1.0), ("b", 0, 0), ("b", 1, 0)]  # b: n=2, greedy
    assert recorder.calls[1]["keys"] == ["a_0_0", "b_0_0", "b_1_0"]


def test_an_empty_batch_puts_nothing(monkeypatch):
    recorder = _Recorder()
    monkeypatch.setattr(batched_agent_loop.tq, "async_kv_batch_put", recorder)
    _run_batch(_worker_with_config(), TensorDict({}, batch_size=0))
    assert recorder.calls == []


def test_a_batch_that_cannot_be_stored_marks_every_prompt_failed(monkeypatch):
    calls = []

    async def failing_put(**kwargs):
        calls.append(kwargs)
        if "fields" in kwargs:
            raise ConnectionError("TransferQueue storage is gone")

    monkeypatch.setattr(batched_agent_loop.tq, "async_kv_batch_put", failing_put)
    worker = _worker_with_config(n=1)
    worker._run_agent_loop = _agent_loop_for(worker)
    _run_batch(worker, _batch(["a", "b"]))
    assert calls[-1]["tags"] == [{"status": "failure"}] * 2


def test_a_failed_running_put_starts_no_session_and_leaves_nothing_waiting(monkeypatch):
    """As in verl's `_run_prompt`, whose running put raises before any session starts."""
    calls = []

    async def failing_put(**kwargs):
        calls.append(kwargs)
        raise ConnectionError("TransferQueue is gone")

    monkeypatch.setattr(batched_agent_loop.tq, "async_kv_batch_put", failing_put)
    worker = _worker_with_config(n=2)
    seen = []
    worker._run_agent_loop = _agent_loop_for(worker, seen=seen)

    async def main():
        await worker.generate_sequences(_batch(["a", "b"]))
        await asyncio.wait_for(asyncio.gather(*worker.background_tasks, return_exceptions=True), timeout=10)

    asyncio.run(main())
    assert seen == [] and len(calls) == 1 and calls[0]["tags"] == [{"status": "running"}] * 2


def _client(servers=None):
    """verl's own LLMServerClient over the batching balancer, as the worker builds it; `servers`: the hf_cpu
    servers' handles (else looked up by name in Ray)."""
    from omegaconf import OmegaConf

    balancer = BatchingServers()
    if servers is not None:
        balancer._servers = servers
    return balancer.client(OmegaConf.create({"actor_rollout_ref": {"rollout": {"name": "hf_cpu"}}})), balancer


class _FakeServer:
    def __init__(self, global_steps=4):
        self.received = []
        self.global_steps = global_steps

        class generate_many:  # noqa: N801  (a Ray method's shape: handle.generate_many.remote(requests))
            @staticmethod
            async def remote(requests):
                from verl.workers.rollout.replica import TokenOutput

                self.received.append(requests)
                return [
                    TokenOutput(
                        token_ids=[r["sample_index"], len(r["prompt_ids"])],
                        log_probs=None,
                        extra_fields={"global_steps": self.global_steps},
                    )
                    for r in requests
                ]

        self.generate_many = generate_many


@pytest.mark.parametrize("num_servers", [1, 2])
def test_the_client_sends_concurrent_calls_in_one_ray_call_per_server(num_servers):
    from verl.workers.rollout.llm_server import LLMServerClient

    servers = [_FakeServer() for _ in range(num_servers)]
    client, _ = _client(servers)
    assert type(client) is LLMServerClient  # verl's own client: it drops priority, sets min/max_global_steps

    async def main():
        calls = [
            client.generate(
                f"r{i}",
                prompt_ids=[1] * (i + 1),
                sampling_params={"temperature": 1.0},
                sample_index=i,
                priority=3,
                mm_processor_output=None,
            )
            for i in range(10)
        ]
        return await asyncio.gather(*calls)

    outputs = asyncio.run(main())
    assert [server_calls for server_calls in map(len, (s.received for s in servers))] == [1] * num_servers
    sent = [request for server in servers for request in server.received[0]]
    assert sorted(request["sample_index"] for request in sent) == list(range(10))
    assert all("priority" not in request and "mm_processor_output" not in request for request in sent)
    assert [output.token_ids for output in outputs] == [[i, i + 1] for i in range(10)]  # each caller its own
    assert all(
        output.extra_fields["min_global_steps"] == output.extra_fields["max_global_steps"] == 4 for output in outputs
    )


def test_the_client_refuses_media_and_passes_a_server_error_to_every_caller():
    client, balancer = _client()
    for media in ({"image_data": ["x"]}, {"audio_data": ["x"]}):
        with pytest.raises(NotImplementedError, match="images, videos or audio"):
            asyncio.run(client.generate("r", prompt_ids=[1], sampling_params={}, **media))

    class BrokenServer:
        class generate_many:  # noqa: N801
            @staticmethod
            async def remote(requests):
                raise RuntimeError("server died")

    balancer._servers = [BrokenServer()]

    async def main():
        calls = [client.generate(f"r{i}", prompt_ids=[1], sampling_params={}, sample_index=i) for i in range(3)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(result, RuntimeError) and "server died" in str(result) for result in results)


def _manager_config(
    name="hf_cpu",
    use_v1=True,
    trainer_mode="sync",
    reward_workers=0,
    agent_loop="hf_cpu_single_turn_agent_local_reward",
):
    from omegaconf import OmegaConf

    return OmegaConf.create(
        {
            "actor_rollout_ref": {"rollout": {"name": name, "agent": {"default_agent_loop": agent_loop}}},
            "trainer": {"use_v1": use_v1, "v1": {"trainer_mode": trainer_mode}},
            "reward": {"num_workers": reward_workers},
        }
    )


@pytest.mark.parametrize(
    "config, message",
    [
        (
            dict(name="vllm"),
            "actor_rollout_ref.rollout.name='vllm'.*unset actor_rollout_ref.rollout.agent.agent_loop_manager_class",
        ),
        (dict(use_v1=False), r"V1 trainer \(trainer.use_v1=true\), got trainer.use_v1=False.*unset actor_rollout_ref"),
        (
            dict(trainer_mode="async"),
            r"V1 sync trainer \(trainer.v1.trainer_mode=sync\), got 'async'.*unset actor_rollout_ref",
        ),
        (
            dict(agent_loop="hf_cpu_single_turn_agent"),
            r"reward.num_workers=0 starts no reward actor.*default_agent_loop='hf_cpu_single_turn_agent'"
            r".*set reward.num_workers>=1",
        ),
    ],
    ids=["vllm", "legacy-trainer", "async-trainer", "no-reward-actor-for-a-scoreless-loop"],
)
@pytest.mark.parametrize("cls", ["manager", "worker"])
def test_the_manager_and_its_worker_refuse_what_they_were_not_written_for(config, message, cls):
    from maspo_verl.patches.batched_agent_loop import HfCpuAgentLoopManager, check_manager_config

    check_manager_config(_manager_config())  # the CPU backend's own settings pass
    check_manager_config(_manager_config(agent_loop="hf_cpu_single_turn_agent", reward_workers=1))
    build = {
        "manager": lambda c: HfCpuAgentLoopManager(c, llm_client=None),
        "worker": lambda c: HfCpuAgentLoopWorker(c, llm_client=None),
    }[cls]
    with pytest.raises(ValueError, match=message):
        build(_manager_config(**config))


def test_an_unscored_response_without_reward_actors_fails_its_session_naming_the_fix():
    """A sample whose agent_name picks a loop that does not score, with reward.num_workers=0."""
    worker = _bare_worker()
    worker.reward_loop_worker_handles = []  # what verl passes with reward.num_workers=0
    sample = {**copy.deepcopy(SAMPLE), "agent_name": "single_turn_agent"}
    with pytest.raises(
        ValueError, match="agent loop 'single_turn_agent' returned an unscored response and reward.num_workers=0"
    ):
        asyncio.run(worker._agent_loop_postprocess([_output([5, 6], [8], reward=None)], False, **sample))


def test_the_module_imports_under_an_unsupported_verl_and_the_manager_refuses_it(monkeypatch):
    """Importing checks nothing (verl's own config loader imports it to find the class); building the
    manager or its worker, what verl does next, refuses the version, naming the supported ones."""
    import importlib
    import sys

    import maspo_verl.integration.versions
    import maspo_verl.patches
    from maspo_verl.patches import UnsupportedVerlVersion

    assert batched_agent_loop.check_verl() == maspo_verl.integration.versions.installed_verl_version()
    monkeypatch.setattr(maspo_verl.integration.versions, "installed_verl_version", lambda: "0.8.0")
    monkeypatch.delitem(sys.modules, batched_agent_loop.__name__)  # put back, with the package attribute, after
    monkeypatch.setattr(maspo_verl.patches, "batched_agent_loop", batched_agent_loop)
    fresh = importlib.import_module(batched_agent_loop.__name__)
    assert fresh is not batched_agent_loop  # the module's code ran again, under verl "0.8.0"
    for module in (fresh, batched_agent_loop):
        for build in (module.HfCpuAgentLoopManager, module.HfCpuAgentLoopWorker):
            with pytest.raises(
                UnsupportedVerlVersion, match=r"HfCpuAgentLoopManager was written and tested for verl 0\.9\.0"
            ):
                build(_manager_config(), llm_client=None)
        with pytest.raises(UnsupportedVerlVersion, match=r"the installed verl is 0\.8\.0"):
            module.check_verl()


def test_rows_with_different_keys_go_in_separate_puts(monkeypatch):
    """verl's list_of_dict_to_tensordict takes the first row's keys: one put of mixed rows would drop a column."""
    recorder = _Recorder()
    monkeypatch.setattr(batched_agent_loop.tq, "async_kv_batch_put", recorder)
    worker = _worker_with_config(n=2)
    worker._run_agent_loop = _agent_loop_for(worker, reward=lambda uid, session_id: 1.0 if session_id == 1 else None)
    _run_batch(worker, _batch(["a", "b"]))
    running, unscored, scored, statuses = recorder.calls
    assert unscored["keys"] == ["a_0_0", "b_0_0"] and "rm_scores" not in unscored["fields"].keys()
    assert scored["keys"] == ["a_1_0", "b_1_0"] and "rm_scores" in scored["fields"].keys()  # only a scored output
    assert set(scored["fields"].keys()) - set(unscored["fields"].keys()) == {"rm_scores"}
    assert statuses["tags"] == [{"status": "finished"}] * 2


class _ServerReturning:
    """A server whose generate_many answers with `answer(requests)`."""

    def __init__(self, answer):
        class generate_many:  # noqa: N801
            @staticmethod
            async def remote(requests):
                return answer(requests)

        self.generate_many = generate_many


def _generate_all(client, count):
    async def main():
        calls = [client.generate(f"r{i}", prompt_ids=[1], sampling_params={}, sample_index=i) for i in range(count)]
        return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), timeout=10)

    return asyncio.run(main())


def test_a_failed_request_fails_only_its_own_caller():
    from verl.workers.rollout.replica import TokenOutput

    def answer(requests):
        return [
            ValueError(f"bad request {r['sample_index']}")
            if r["sample_index"] == 1
            else TokenOutput(token_ids=[r["sample_index"]], log_probs=None, extra_fields={})
            for r in requests
        ]

    client, _ = _client([_ServerReturning(answer)])
    first, second, third = _generate_all(client, 3)
    assert first.token_ids == [0] and third.token_ids == [2]
    assert isinstance(second, ValueError) and "bad request 1" in str(second)


def test_no_caller_is_left_waiting_when_the_server_answers_too_few():
    from verl.workers.rollout.replica import TokenOutput

    one_output = [TokenOutput(token_ids=[0], log_probs=None, extra_fields={})]
    client, _ = _client([_ServerReturning(lambda requests: one_output)])
    results = _generate_all(client, 3)  # wait_for: a caller left waiting would time out here
    assert all(
        isinstance(result, RuntimeError) and "returned 1 outputs for 3 requests" in str(result) for result in results
    )


def test_no_caller_is_left_waiting_when_no_server_is_found(monkeypatch):
    client, balancer = _client()

    def no_server():
        raise RuntimeError("no hf_cpu server is running")

    monkeypatch.setattr(balancer, "_server_handles", no_server)
    results = _generate_all(client, 2)
    assert all(isinstance(result, RuntimeError) and "no hf_cpu server" in str(result) for result in results)


def test_no_caller_is_left_waiting_when_the_server_call_is_cancelled():
    client, balancer = _client([_ServerReturning(None)])

    async def never_answers(requests):
        await asyncio.Event().wait()

    balancer._servers[0].generate_many.remote = never_answers

    async def main():
        calls = [
            asyncio.ensure_future(client.generate(f"r{i}", prompt_ids=[1], sampling_params={}, sample_index=i))
            for i in range(2)
        ]
        while not balancer._sends:  # the batch was flushed: its server call is under way
            await asyncio.sleep(0.01)
        for send in list(balancer._sends):
            send.cancel()
        return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), timeout=10)

    results = asyncio.run(main())
    assert all(isinstance(result, RuntimeError) and "interrupted" in str(result) for result in results)


def test_no_caller_is_left_waiting_when_the_server_call_is_cancelled_before_it_starts():
    client, balancer = _client([_ServerReturning(None)])

    async def main():
        calls = [
            asyncio.ensure_future(client.generate(f"r{i}", prompt_ids=[1], sampling_params={}, sample_index=i))
            for i in range(2)
        ]
        while not balancer._sends:  # the batch was flushed; its task has not run a step yet
            await asyncio.sleep(0)
        for send in list(balancer._sends):
            send.cancel()
        return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), timeout=10)

    results = asyncio.run(main())
    assert all(isinstance(result, RuntimeError) and "interrupted" in str(result) for result in results)


class EchoSampleIndexLoop:
    """A registered agent loop (built by verl's own `_run_agent_loop` through Hydra): asks the server
    for one response and returns it scored, as the CPU backend's scoring loop does."""

    def __init__(self, trainer_config, server_manager, **_):
        self.server_manager = server_manager

    async def run(self, sampling_params, **sample):
        from verl.experimental.agent_loop.agent_loop import AgentLoopMetrics, AgentLoopOutput

        prompt_ids = [5, 6, 7]
        output = await self.server_manager.generate(
            f"{sample['uid']}-{sample['session_id']}",
            prompt_ids=prompt_ids,
            sampling_params=sampling_params,
            sample_index=sample["session_id"],
        )
        result = AgentLoopOutput(
            prompt_ids=prompt_ids,
            response_ids=list(output.token_ids),
            response_mask=[1] * len(output.token_ids),
            num_turns=2,
            metrics=AgentLoopMetrics(),
            extra_fields=dict(output.extra_fields),
        )
        result.reward_score = float(sample["session_id"])
        result.extra_fields["reward_extra_info"] = {"acc": bool(sample["session_id"])}
        return result


def test_verls_own_run_agent_loop_feeds_the_batched_rows_and_puts(monkeypatch):
    """The wiring the other tests fake: verl's `_run_agent_loop` builds the registered loop, runs it
    against the batching client and hands its output to our `_agent_loop_postprocess`, whose rows
    reach the one put. Catches a verl whose `_run_agent_loop` stops returning the postprocess result."""
    from omegaconf import OmegaConf
    from verl.experimental.agent_loop.agent_loop import _agent_loop_registry, register

    monkeypatch.setitem(_agent_loop_registry, "maspo_test_echo_sample_index", None)  # taken out again after
    register("maspo_test_echo_sample_index")(EchoSampleIndexLoop)
    recorder = _Recorder()
    monkeypatch.setattr(batched_agent_loop.tq, "async_kv_batch_put", recorder)
    worker = _worker_with_config(n=2)
    worker.config = OmegaConf.merge(
        worker.config,
        {
            "data": {},
            "actor_rollout_ref": {"rollout": {"agent": {"default_agent_loop": "maspo_test_echo_sample_index"}}},
        },
    )
    worker.tokenizer, worker.hf_model_type, worker.dataset_cls, worker.tools = None, None, None, []
    server = _FakeServer(global_steps=5)
    worker.llm_client, _ = _client([server])

    batch = _batch(["a", "b"])
    batch["raw_prompt"] = NonTensorStack(*([[{"role": "user", "content": "1+1="}]] * 2))
    _run_batch(worker, batch)

    assert len(server.received) == 1 and len(server.received[0]) == 4  # 2 prompts x 2 sessions, one Ray call
    running, rows, statuses = recorder.calls
    assert rows["keys"] == ["a_0_0", "a_1_0", "b_0_0", "b_1_0"]
    assert [tag["status"] for tag in rows["tags"]] == ["success"] * 4
    assert [tag["min_global_steps"] for tag in rows["tags"]] == [5] * 4  # set by the client, as verl's does
    responses = [rows["fields"]["responses"][i].tolist() for i in range(4)]
    assert responses == [[0, 3], [1, 3], [0, 3], [1, 3]]  # [sample_index, prompt length] from the fake server
    scores = [rows["fields"]["rm_scores"][i].tolist()[-1] for i in range(4)]
    assert scores == [0.0, 1.0, 0.0, 1.0]
    assert statuses["tags"] == [{"status": "finished"}] * 2

"""The batched agent-loop manager (patches/batched_agent_loop.py), without Ray or a model.

- the TransferQueue rows it stores are the ones verl's own `AgentLoopWorkerTQ._agent_loop_postprocess`
  puts, captured from verl's method: keys, tags, and every field's values and dtypes;
- a batch: one put marks its prompts running, one put stores all rows, one put the terminal statuses;
  a failed session fails its prompt (verl's rule) and its siblings are stored anyway;
- the client gathers concurrent `generate` calls into one `generate_many` per server, returns each
  caller its own output, and sets the global steps verl's client sets.

That a training run through the manager repeats every metric of a run through verl's manager is
tests/test_main_ppo_cpu.py; that `HfCpuServer.generate_many` equals one `generate` per request is
tests/test_hf_rollout.py.
"""

from __future__ import annotations

import asyncio
import copy

import pytest
import torch
from tensordict import NonTensorData, NonTensorStack, TensorDict

from maspo_verl.patches import batched_agent_loop
from maspo_verl.patches.batched_agent_loop import BatchingServerClient, HfCpuAgentLoopWorker


def _output(prompt_ids, response_ids, reward=None, global_steps=3):
    from verl.experimental.agent_loop.agent_loop import AgentLoopMetrics, AgentLoopOutput

    output = AgentLoopOutput(
        prompt_ids=prompt_ids, response_ids=response_ids, response_mask=[1] * len(response_ids),
        response_logprobs=[-0.5 - 0.1 * i for i in range(len(response_ids))], num_turns=2,
        metrics=AgentLoopMetrics(generate_sequences=0.01),
        extra_fields={"global_steps": global_steps, "min_global_steps": global_steps, "max_global_steps": global_steps,
                      "turn_scores": [], "tool_rewards": []},
    )
    if reward is not None:
        output.reward_score = reward
        output.extra_fields["reward_extra_info"] = {"acc": reward}
    return output


SAMPLE = dict(raw_prompt=[{"role": "user", "content": "1+1="}], uid="u7", session_id=2, index=4, global_steps=3,
              data_source="tiny_arithmetic", reward_model={"ground_truth": "2"}, extra_info={"index": 4},
              agent_name="hf_cpu_single_turn_agent_local_reward")


def _bare_worker():
    worker = HfCpuAgentLoopWorker.__new__(HfCpuAgentLoopWorker)  # the methods on a bare instance: no Ray, no model
    worker.processor, worker.mm_processor_kwargs = None, {}
    worker.reward_loop_worker_handles = None
    worker.distillation_enabled = False
    return worker


@pytest.mark.parametrize("outputs", [
    [_output([5, 6, 7], [8, 9], reward=1.0)],
    [_output([5, 6], [8], reward=None), _output([5, 6, 8, 3], [4, 2, 9], reward=0.0)],  # two turn outputs
], ids=["single-turn", "two-outputs"])
def test_rows_are_those_verls_worker_puts(outputs, monkeypatch):
    from verl.trainer.ppo.v1 import agent_loop_tq
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    put = []

    async def capture(**kwargs):
        put.append(kwargs)

    monkeypatch.setattr(agent_loop_tq.tq, "async_kv_batch_put", capture)
    verls_worker = agent_loop_tq.AgentLoopWorkerTQ.__ray_actor_class__
    asyncio.run(verls_worker._agent_loop_postprocess(_bare_worker(), copy.deepcopy(outputs), False, **copy.deepcopy(SAMPLE)))
    keys, fields, tags = asyncio.run(_bare_worker()._agent_loop_postprocess(copy.deepcopy(outputs), False, **copy.deepcopy(SAMPLE)))

    (verls,) = put
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


def _worker_with_config(n=3, val_n=2):
    from omegaconf import OmegaConf

    worker = _bare_worker()
    worker.background_tasks = set()
    worker.config = OmegaConf.create({"actor_rollout_ref": {"rollout": {
        "n": n, "temperature": 1.0, "top_p": 1.0, "top_k": -1, "calculate_log_probs": True,
        "val_kwargs": {"n": val_n, "temperature": 0.0, "top_p": 1.0, "top_k": -1},
        "agent": {"default_agent_loop": "hf_cpu_single_turn_agent_local_reward"}}}})
    return worker


@pytest.mark.parametrize("validate", [False, True], ids=["train", "val"])
def test_a_batch_is_stored_in_three_puts_and_a_failed_session_fails_only_its_prompt(validate, monkeypatch):
    recorder = _Recorder()
    monkeypatch.setattr(batched_agent_loop.tq, "async_kv_batch_put", recorder)
    worker = _worker_with_config()
    seen = []

    async def run_agent_loop(sampling_params, trajectory, trace, session_id, **sample):
        seen.append((sample["uid"], session_id, sampling_params["temperature"], sample["agent_name"]))
        await asyncio.sleep(0.001 * ((session_id * 7) % 3))  # finish out of order
        if sample["uid"] == "b" and session_id == 1:
            raise RuntimeError("boom")
        return ([f"{sample['uid']}_{session_id}_0"], [{"row": torch.tensor([session_id])}],
                [{"status": "success", "global_steps": sample["global_steps"]}])

    worker._run_agent_loop = run_agent_loop
    _run_batch(worker, _batch(["a", "b", "c"], validate))

    partition = "val" if validate else "train"
    n = 2 if validate else 3
    assert sorted(seen) == sorted((uid, s, 0.0 if validate else 1.0, "hf_cpu_single_turn_agent_local_reward")
                                  for uid in "abc" for s in range(n))
    running, rows, statuses = recorder.calls
    assert running == {"keys": ["a", "b", "c"], "partition_id": partition, "tags": [{"status": "running"}] * 3}
    expected_keys = [f"{uid}_{s}_0" for uid in "abc" for s in range(n) if (uid, s) != ("b", 1)]
    assert rows["keys"] == expected_keys and rows["partition_id"] == partition
    assert rows["fields"].batch_size[0] == len(expected_keys)
    assert statuses == {"keys": ["a", "b", "c"], "partition_id": partition,
                        "tags": [{"status": "finished"}, {"status": "failure"}, {"status": "finished"}]}


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

    async def run_agent_loop(sampling_params, trajectory, trace, session_id, **sample):
        return [f"{sample['uid']}_0_0"], [{"row": torch.tensor([0])}], [{"status": "success"}]

    worker._run_agent_loop = run_agent_loop
    _run_batch(worker, _batch(["a", "b"]))
    assert calls[-1]["tags"] == [{"status": "failure"}] * 2


class _FakeServer:
    def __init__(self, global_steps=4):
        self.received = []
        self.global_steps = global_steps

        class generate_many:  # noqa: N801  (a Ray method's shape: handle.generate_many.remote(requests))
            @staticmethod
            async def remote(requests):
                from verl.workers.rollout.replica import TokenOutput

                self.received.append(requests)
                return [TokenOutput(token_ids=[r["sample_index"], len(r["prompt_ids"])], log_probs=None,
                                    extra_fields={"global_steps": self.global_steps}) for r in requests]

        self.generate_many = generate_many


@pytest.mark.parametrize("num_servers", [1, 2])
def test_the_client_sends_concurrent_calls_in_one_ray_call_per_server(num_servers):
    servers = [_FakeServer() for _ in range(num_servers)]
    client = BatchingServerClient(llm_client=None)
    client._servers = servers

    async def main():
        calls = [client.generate(f"r{i}", prompt_ids=[1] * (i + 1), sampling_params={"temperature": 1.0},
                                 sample_index=i, priority=3, mm_processor_output=None) for i in range(10)]
        return await asyncio.gather(*calls)

    outputs = asyncio.run(main())
    assert [server_calls for server_calls in map(len, (s.received for s in servers))] == [1] * num_servers
    sent = [request for server in servers for request in server.received[0]]
    assert sorted(request["sample_index"] for request in sent) == list(range(10))
    assert all("priority" not in request and "mm_processor_output" not in request for request in sent)
    assert [output.token_ids for output in outputs] == [[i, i + 1] for i in range(10)]  # each caller its own
    assert all(output.extra_fields["min_global_steps"] == output.extra_fields["max_global_steps"] == 4
               for output in outputs)


def test_the_client_refuses_media_and_passes_a_server_error_to_every_caller():
    client = BatchingServerClient(llm_client=None)
    with pytest.raises(NotImplementedError, match="images, videos or audio"):
        asyncio.run(client.generate("r", prompt_ids=[1], sampling_params={}, image_data=["x"]))

    class BrokenServer:
        class generate_many:  # noqa: N801
            @staticmethod
            async def remote(requests):
                raise RuntimeError("server died")

    client._servers = [BrokenServer()]

    async def main():
        calls = [client.generate(f"r{i}", prompt_ids=[1], sampling_params={}, sample_index=i) for i in range(3)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(result, RuntimeError) and "server died" in str(result) for result in results)


def test_a_batch_column_it_cannot_split_raises_to_the_caller_naming_it(monkeypatch):
    """verl's worker logs such a column and drops it; here `generate_sequences` raises, before any put."""
    recorder = _Recorder()
    monkeypatch.setattr(batched_agent_loop.tq, "async_kv_batch_put", recorder)
    worker = _worker_with_config()
    batch = _batch(["a"])
    batch["nested"] = TensorDict({"x": torch.zeros(1)}, batch_size=1)
    with pytest.raises(TypeError, match="'nested'"):
        _run_batch(worker, batch)
    assert recorder.calls == []


def test_the_manager_refuses_another_rollout_backend():
    from omegaconf import OmegaConf

    config = OmegaConf.create({"actor_rollout_ref": {"rollout": {"name": "vllm"}}})
    with pytest.raises(ValueError, match="actor_rollout_ref.rollout.name='vllm'"):
        HfCpuAgentLoopWorker(config, llm_client=None)

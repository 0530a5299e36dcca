"""The hf_cpu rollout backend: batched generation, log-probs, and weight sync from verl's FSDP2 actor.

A verl `ActorRolloutRefWorker(role="actor_rollout")` runs in this process (its rollout object is
our `HfCpuServerAdapter`, built by verl from the backend name), the `HfCpuServer` in a local
Ray actor. Rollout and actor log-probs must agree at the start, diverge once the actor is
updated, and agree again after verl's own `update_weights` (the sync trainer's call).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile

import pytest
import torch
from conftest_cpu import (  # noqa: F401  (pytest fixtures)
    build_actor_worker,
    cpu_platform,
    mark_for_update,
    single_process_group,
    tiny_workdir,
    to_verl_batch,
)

SAMPLING = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": True}
GREEDY = {"temperature": 0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": True}
AGREE, DIVERGED = 1e-4, 5e-2  # max |log-prob difference| per token


@pytest.fixture(scope="module")
def local_ray():
    """A private Ray cluster (own temp dir, Ray-chosen free ports), shut down after the module."""
    import ray

    temp_dir = tempfile.mkdtemp(prefix="ray_hf_", dir="/tmp")  # short: Ray's socket paths have a length limit
    ray.init(num_cpus=4, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False)
    yield ray
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def prompts(tiny_workdir):  # noqa: F811
    from transformers import AutoTokenizer

    from maspo_verl.tiny import make_problems

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_workdir["model"]))
    train, _ = make_problems(num_train=6, num_val=1, seed=1)
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": problem.prompt}], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        for problem in train
    ]


@pytest.fixture(scope="module")
def actor_and_server(cpu_platform, single_process_group, tiny_workdir, local_ray):  # noqa: F811
    from maspo_verl.patches.hf_rollout import apply_hf_cpu_rollout, start_hf_cpu_server

    apply_hf_cpu_rollout()
    worker = build_actor_worker(
        tiny_workdir["model"],
        "actor_rollout",
        "actor_rollout_ref.actor.ppo_mini_batch_size=6",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=6",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=6",
        "actor_rollout_ref.rollout.n=1",
        "actor_rollout_ref.rollout.name=hf_cpu",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "actor_rollout_ref.rollout.response_length=8",
        "actor_rollout_ref.rollout.prompt_length=20",
        "actor_rollout_ref.actor.optim.optimizer=SGD",
        "actor_rollout_ref.actor.optim.lr=1.0",
        "actor_rollout_ref.actor.optim.weight_decay=0.0",
    )
    server = start_hf_cpu_server(worker.config.rollout, worker.config.model, replica_rank=0)
    local_ray.get(server.wait_for_requests_to_drain.remote())
    yield worker, server
    local_ray.kill(server)


def _generate(ray, server, prompts, sampling_params):
    """Concurrent requests, as verl's agent loop sends them (the server batches them)."""
    return ray.get(
        [
            server.generate.remote(prompt_ids=prompt, sampling_params=sampling_params, request_id=f"request-{index}")
            for index, prompt in enumerate(prompts)
        ]
    )


def _actor_log_probs(worker, prompts, outputs) -> list[torch.Tensor]:
    """verl's `compute_log_prob` on the rollout's (prompt, response) pairs, one tensor per response."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import no_padding_2_padding

    batch = to_verl_batch(prompts, [output.token_ids for output in outputs], pad_token_id=0)
    tu.assign_non_tensor(batch, calculate_entropy=False, compute_loss=False, temperature=1.0, global_token_num=None)
    log_probs = no_padding_2_padding(tu.get(worker.compute_log_prob(batch), "log_probs"), batch)
    return [log_probs[row, : len(output.token_ids)] for row, output in enumerate(outputs)]


def _max_difference(worker, prompts, outputs) -> float:
    actor = _actor_log_probs(worker, prompts, outputs)
    return max(
        (torch.tensor(output.log_probs) - actor_row).abs().max().item()
        for output, actor_row in zip(outputs, actor, strict=True)
    )


def _update_actor_once(worker, prompts, outputs) -> None:
    width = max(len(output.token_ids) for output in outputs)
    old_log_probs = torch.zeros(len(outputs), width)
    for row, output in enumerate(outputs):
        old_log_probs[row, : len(output.log_probs)] = torch.tensor(output.log_probs)
    advantages = torch.linspace(-2.0, 2.0, len(outputs)).unsqueeze(1).expand(len(outputs), width).clone()
    batch = to_verl_batch(
        prompts, [output.token_ids for output in outputs], 0, old_log_probs=old_log_probs, advantages=advantages
    )
    mark_for_update(batch, len(outputs))
    worker.update_actor(batch)


@pytest.mark.timeout(120)
def test_batched_greedy_generation_matches_one_request_at_a_time(actor_and_server, prompts, local_ray):
    _, server = actor_and_server
    together = _generate(local_ray, server, prompts, GREEDY)
    alone = [_generate(local_ray, server, [prompt], GREEDY)[0] for prompt in prompts[:3]]
    for batched, single in zip(together, alone):
        assert batched.token_ids == single.token_ids, "left padding in a batch changed greedy generation"
        torch.testing.assert_close(torch.tensor(batched.log_probs), torch.tensor(single.log_probs), atol=1e-4, rtol=0)
    assert all(1 <= len(output.token_ids) <= 8 for output in together), "responses must respect response_length"
    plain = _generate(local_ray, server, prompts[:1], {**GREEDY, "logprobs": False})[0]
    assert plain.log_probs is None and plain.token_ids == together[0].token_ids


@pytest.mark.timeout(240)
def test_rollout_follows_the_actor_only_through_verls_weight_sync(actor_and_server, prompts, local_ray):
    worker, server = actor_and_server
    outputs = _generate(local_ray, server, prompts, SAMPLING)
    assert _max_difference(worker, prompts, outputs) < AGREE, "rollout and actor disagree before any update"

    _update_actor_once(worker, prompts, outputs)
    stale = _generate(local_ray, server, prompts, SAMPLING)
    assert _max_difference(worker, prompts, stale) > DIVERGED, "the actor update did not move its log-probs"
    assert local_ray.get(server.get_weights_version.remote()) == (None, 0)

    asyncio.run(worker.update_weights(global_steps=1))  # verl's naive checkpoint-engine path
    synced = _generate(local_ray, server, prompts, SAMPLING)
    assert _max_difference(worker, prompts, synced) < AGREE, "rollout still differs from the actor after the sync"
    assert local_ray.get(server.get_weights_version.remote()) == (1, 1)
    assert all(output.extra_fields["global_steps"] == 1 for output in synced)

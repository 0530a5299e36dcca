"""The hf_cpu rollout backend: batched generation, log-probs, and weight sync from verl's FSDP2 actor.

A verl `ActorRolloutRefWorker(role="actor_rollout")` runs in this process (its rollout object is
our `HfCpuServerAdapter`, built by verl from the backend name), the `HfCpuServer` in a local
Ray actor. Rollout and actor log-probs must agree at the start, diverge once the actor is
updated, and agree again after verl's own `update_weights` (the sync trainer's call).

Deterministic sampling (issue 10) runs `HfCpuServer` in this process: a response depends on
(rollout seed, weights version, prompt, sample index) only, never on the batching window, the
batch size or the arrival order, and `hf_cpu_single_turn_agent` sends verl's `session_id` as
the sample index.
"""

from __future__ import annotations

import asyncio
import random
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

pytestmark = pytest.mark.kind("verl")

SAMPLING = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": True}
GREEDY = {"temperature": 0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": True}
AGREE, DIVERGED = 1e-4, 5e-2  # max |log-prob difference| per token
# Batched matmuls round differently for other batch shapes (~1e-7 in a logit): log-probs agree to this,
# token ids exactly.
BATCH_ROUNDING = 1e-5


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

    from maspo_verl.sandbox.tiny import make_problems

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
    for batched, single in zip(together[:3], alone, strict=True):  # the first three, one at a time
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


# ---- deterministic sampling: HfCpuServer in this process ----------------------------------------


@pytest.fixture(scope="module")
def make_server(tiny_workdir):  # noqa: F811
    """HfCpuServer(rollout seed, max_num_seqs) on the tiny model, built from our composed verl config."""
    from conftest_cpu import compose_maspo_config

    from maspo_verl.patches.hf_rollout import HfCpuServer

    def make(seed: int = 0, max_num_seqs: int = 1024, backend: str = "hf_cpu", extra: tuple = ()):
        config = compose_maspo_config(
            *extra,
            f"actor_rollout_ref.model.path={tiny_workdir['model']}",
            f"actor_rollout_ref.rollout.name={backend}",
            "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
            "actor_rollout_ref.rollout.response_length=8",
            "actor_rollout_ref.rollout.prompt_length=20",
            f"actor_rollout_ref.rollout.seed={seed}",
            f"actor_rollout_ref.rollout.max_num_seqs={max_num_seqs}",
        )
        return HfCpuServer(config.actor_rollout_ref.rollout, config.actor_rollout_ref.model), config

    return make


@pytest.fixture(scope="module")
def mixed_prompts(prompts):
    """The prompts cut to different lengths, so that batches are left-padded."""
    return [prompt[index % 3 :] for index, prompt in enumerate(prompts)]


def _requests(prompts, samples_per_prompt: int = 4):
    return [(prompt, index) for prompt in prompts for index in range(samples_per_prompt)]


def _record_batch_sizes(server) -> list[int]:
    sizes: list[int] = []
    generate_batch = server._generate_batch

    def recording(prompts, *args):
        sizes.append(len(prompts))
        return generate_batch(prompts, *args)

    server._generate_batch = recording
    return sizes


async def _concurrently(server, requests, sampling_params):
    return await asyncio.gather(
        *[
            server.generate(prompt_ids=prompt, sampling_params=sampling_params, request_id=f"r{i}", sample_index=index)
            for i, (prompt, index) in enumerate(requests)
        ]
    )


async def _one_at_a_time(server, requests, sampling_params):
    return [
        await server.generate(
            prompt_ids=prompt, sampling_params=sampling_params, request_id=f"r{i}", sample_index=index
        )
        for i, (prompt, index) in enumerate(requests)
    ]


def _assert_same_outputs(expected, actual) -> None:
    for want, got in zip(expected, actual, strict=True):
        assert got.token_ids == want.token_ids
        torch.testing.assert_close(
            torch.tensor(got.log_probs), torch.tensor(want.log_probs), atol=BATCH_ROUNDING, rtol=0
        )


@pytest.mark.timeout(120)
def test_samples_do_not_depend_on_batching_window_batch_size_or_arrival_order(make_server, mixed_prompts, monkeypatch):
    from maspo_verl.patches import hf_rollout

    requests = _requests(mixed_prompts)
    one_batch, _ = make_server()
    one_batch_sizes = _record_batch_sizes(one_batch)
    reference = asyncio.run(_concurrently(one_batch, requests, SAMPLING))

    monkeypatch.setattr(hf_rollout, "BATCHING_WINDOW_SECONDS", 0.0)
    small_batches, _ = make_server(max_num_seqs=5)
    small_batch_sizes = _record_batch_sizes(small_batches)
    order = list(range(len(requests)))
    random.Random(0).shuffle(order)
    shuffled = asyncio.run(_concurrently(small_batches, [requests[i] for i in order], SAMPLING))
    unshuffled = [None] * len(requests)
    for position, original in enumerate(order):
        unshuffled[original] = shuffled[position]

    alone, _ = make_server()
    alone_sizes = _record_batch_sizes(alone)
    one_by_one = asyncio.run(_one_at_a_time(alone, requests[::-1], SAMPLING))[::-1]

    assert one_batch_sizes == [len(requests)] and max(small_batch_sizes) == 5 and set(alone_sizes) == {1}
    _assert_same_outputs(reference, unshuffled)
    _assert_same_outputs(reference, one_by_one)
    # the same server asked again gives the same responses
    _assert_same_outputs(reference, asyncio.run(_concurrently(one_batch, requests, SAMPLING)))


@pytest.mark.timeout(120)
def test_generate_many_is_one_generate_per_request_in_one_batch(make_server, mixed_prompts):
    """The batched agent-loop manager's one Ray call per batch (patches/batched_agent_loop.py)."""
    requests = _requests(mixed_prompts)
    server, _ = make_server()
    reference = asyncio.run(_one_at_a_time(server, requests, SAMPLING))
    sizes = _record_batch_sizes(server)
    many = asyncio.run(
        server.generate_many(
            [
                dict(prompt_ids=prompt, sampling_params=SAMPLING, request_id=f"r{i}", sample_index=index)
                for i, (prompt, index) in enumerate(requests)
            ]
        )
    )
    assert sizes == [len(requests)]
    _assert_same_outputs(reference, many)


def test_generate_many_puts_a_bad_requests_error_in_its_place(make_server, mixed_prompts):
    """One bad request fails only its own agent loop, as one `generate` call per request would."""
    requests = _requests(mixed_prompts)[:3]
    server, _ = make_server()
    reference = asyncio.run(_one_at_a_time(server, [requests[0], requests[2]], SAMPLING))
    many = asyncio.run(
        server.generate_many(
            [
                dict(
                    prompt_ids=prompt,
                    sampling_params=SAMPLING,
                    request_id=f"r{i}",
                    sample_index=-1 if i == 1 else index,
                )
                for i, (prompt, index) in enumerate(requests)
            ]
        )
    )
    assert isinstance(many[1], ValueError) and "sample_index must be an int >= 0, got -1" in str(many[1])
    _assert_same_outputs(reference, [many[0], many[2]])


@pytest.mark.timeout(120)
def test_sampled_responses_vary_with_sample_index_seed_and_weights(make_server, mixed_prompts):
    requests = _requests(mixed_prompts)
    server, _ = make_server(seed=0)
    outputs = asyncio.run(_concurrently(server, requests, SAMPLING))
    responses = [tuple(output.token_ids) for output in outputs]
    for start in range(0, len(requests), 4):  # the 4 samples of one prompt are not copies
        assert len(set(responses[start : start + 4])) > 1, "samples of one prompt are identical"

    other_seed, _ = make_server(seed=1)
    reseeded = [tuple(output.token_ids) for output in asyncio.run(_concurrently(other_seed, requests, SAMPLING))]
    assert sum(a != b for a, b in zip(responses, reseeded, strict=True)) >= len(requests) * 3 // 4, (
        "rollout.seed is ignored"
    )

    same_weights = {name: tensor.clone() for name, tensor in server.model.state_dict().items()}
    asyncio.run(server.update_weights(same_weights, global_steps=1))  # new weights version, same values
    next_step = asyncio.run(_concurrently(server, requests, SAMPLING))
    assert sum(a != tuple(b.token_ids) for a, b in zip(responses, next_step, strict=True)) >= len(requests) * 3 // 4, (
        "a new weights version repeated the previous step's samples"
    )
    assert all(output.extra_fields["global_steps"] == 1 for output in next_step)


def _first_token_frequencies(server, prompt, sampling_params, num_samples: int) -> torch.Tensor:
    requests = [(prompt, index) for index in range(num_samples)]
    outputs = asyncio.run(_concurrently(server, requests, {**sampling_params, "max_tokens": 1}))
    assert all(len(output.token_ids) == 1 for output in outputs)
    counts = torch.bincount(
        torch.tensor([output.token_ids[0] for output in outputs]), minlength=server.model.config.vocab_size
    )
    return counts.double() / num_samples


@pytest.mark.timeout(120)
@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, -1, 1.0), (0.3, -1, 1.0), (1.0, 5, 1.0), (1.0, -1, 0.5)])
def test_sampled_first_tokens_follow_the_filtered_model_distribution(make_server, prompts, temperature, top_k, top_p):
    """4000 first tokens of one prompt (sample indices 0..3999) against softmax(filter(logits / T)): chi-square,
    the filter being transformers' own warpers."""
    from scipy.stats import chisquare
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    server, _ = make_server()
    with torch.no_grad():
        logits = server.model(input_ids=torch.tensor([prompts[0]])).logits[:, -1, :].float()
    expected = TemperatureLogitsWarper(temperature)(None, logits)
    if top_k > 0:
        expected = TopKLogitsWarper(top_k)(None, expected)
    if top_p < 1:
        expected = TopPLogitsWarper(top_p)(None, expected)
    expected = expected.softmax(-1)[0].double()
    params = {**SAMPLING, "temperature": temperature, "top_k": top_k, "top_p": top_p}
    num_samples = 4000
    observed = _first_token_frequencies(server, prompts[0], params, num_samples) * num_samples
    support = expected > 0
    assert support.sum() > 2, "the test needs a distribution with several tokens"
    assert observed[~support].sum() == 0, "sampled a token that top-k/top-p removed"
    expected_counts = expected[support] / expected[support].sum() * num_samples
    fit = chisquare(observed[support].numpy(), expected_counts.numpy())
    assert fit.pvalue > 1e-3, f"first tokens do not follow the model's distribution (chi-square p={fit.pvalue:.2g})"
    # the test has power: the same counts reject a uniform draw over the support
    assert chisquare(observed[support].numpy()).pvalue < 1e-6


def test_logits_are_processed_by_transformers_own_processors_in_generates_order():
    """Penalty, then temperature, top-k, top-p (the order of Hugging Face `generate`); greedy: the penalty only;
    a setting that is off adds no processor."""
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    from maspo_verl.patches.hf_rollout import logits_processors

    def described(processors):
        assert isinstance(processors, LogitsProcessorList)
        return [
            (
                type(p),
                getattr(p, "penalty", None)
                or getattr(p, "temperature", None)
                or getattr(p, "top_k", None)
                or getattr(p, "top_p", None),
            )
            for p in processors
        ]

    assert described(logits_processors(0.7, 5, 0.9, 1.2, vocab_size=50)) == [
        (RepetitionPenaltyLogitsProcessor, 1.2),
        (TemperatureLogitsWarper, 0.7),
        (TopKLogitsWarper, 5),
        (TopPLogitsWarper, 0.9),
    ]
    assert described(logits_processors(1.0, -1, 1.0, 1.0, vocab_size=50)) == [(TemperatureLogitsWarper, 1.0)]
    # k = the vocabulary keeps every token
    assert described(logits_processors(1.0, 50, 1.0, 1.0, vocab_size=50)) == [(TemperatureLogitsWarper, 1.0)]
    assert described(logits_processors(0, 5, 0.5, 1.0, vocab_size=50)) == []  # greedy: argmax of the raw logits
    assert described(logits_processors(0, 5, 0.5, 0.8, vocab_size=50)) == [(RepetitionPenaltyLogitsProcessor, 0.8)]


def _prompts_and_responses_seen(monkeypatch, server, requests, sampling_params):
    """Run `requests` in one batch, recording the token ids each step's processors get, per row."""
    from maspo_verl.patches import hf_rollout

    seen = []
    build = hf_rollout.logits_processors

    def recording(*args, **kwargs):
        processors = build(*args, **kwargs)

        class Recording(type(processors)):
            def __call__(self, input_ids, scores, **kw):
                seen.append(input_ids.clone())
                return super().__call__(input_ids, scores, **kw)

        return Recording(processors)

    monkeypatch.setattr(hf_rollout, "logits_processors", recording)
    outputs = asyncio.run(_concurrently(server, requests, sampling_params))
    monkeypatch.setattr(hf_rollout, "logits_processors", build)
    return outputs, seen


@pytest.mark.timeout(120)
def test_repetition_penalty_sees_each_rows_own_tokens_never_the_left_padding(make_server, mixed_prompts, monkeypatch):
    """transformers' penalty is handed the batch's token ids; a row's left padding must not count as seen."""
    server, _ = make_server()
    requests = _requests(mixed_prompts, 2)
    params = {**SAMPLING, "repetition_penalty": 1.3}
    outputs, seen = _prompts_and_responses_seen(monkeypatch, server, requests, params)
    assert len(seen) == max(len(output.token_ids) for output in outputs)
    assert len({len(prompt) for prompt, _ in requests}) > 1, "the test needs left-padded rows"
    assert server.pad_token_id not in {token for prompt, _ in requests for token in prompt}
    for row, ((prompt, _), output) in enumerate(zip(requests, outputs, strict=True)):
        for step in range(len(output.token_ids)):
            assert set(seen[step][row].tolist()) == set(prompt) | set(output.token_ids[:step]), (row, step)


@pytest.mark.timeout(120)
def test_penalised_and_filtered_samples_do_not_depend_on_the_batch(make_server, mixed_prompts):
    """Repetition penalty, top-k and top-p on left-padded batches: each response as when sampled alone."""
    requests = _requests(mixed_prompts, 2)
    params = {**SAMPLING, "temperature": 0.8, "top_k": 20, "top_p": 0.9, "repetition_penalty": 1.2}
    server, _ = make_server()
    sizes = _record_batch_sizes(server)
    batched = asyncio.run(_concurrently(server, requests, params))
    alone = asyncio.run(_one_at_a_time(server, requests, params))
    assert sizes[0] == len(requests) and set(sizes[1:]) == {1}
    _assert_same_outputs(alone, batched)
    unpenalised = asyncio.run(_concurrently(server, requests, {**params, "repetition_penalty": 1.0}))
    changed = [a.token_ids != b.token_ids for a, b in zip(batched, unpenalised, strict=True)]
    assert any(changed), "the penalty changed nothing"


@pytest.mark.timeout(120)
def test_greedy_sampling_loop_equals_hugging_face_generate(make_server, mixed_prompts):
    server, _ = make_server()
    outputs = asyncio.run(_concurrently(server, _requests(mixed_prompts, 1), GREEDY))
    longest = max(len(prompt) for prompt in mixed_prompts)
    input_ids = torch.full((len(mixed_prompts), longest), server.pad_token_id)
    attention_mask = torch.zeros_like(input_ids)
    for row, prompt in enumerate(mixed_prompts):
        input_ids[row, longest - len(prompt) :] = torch.tensor(prompt)
        attention_mask[row, longest - len(prompt) :] = 1
    with torch.no_grad():
        generated = server.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=8,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            eos_token_id=server.eos_token_ids,
            pad_token_id=server.pad_token_id,
            return_dict_in_generate=True,
            output_logits=True,
        )
    log_probs = torch.log_softmax(torch.stack(generated.logits, dim=1).float(), dim=-1)
    for row, output in enumerate(outputs):
        length = len(output.token_ids)
        assert output.token_ids == generated.sequences[row, longest : longest + length].tolist()
        expected = log_probs[row, torch.arange(length), generated.sequences[row, longest : longest + length]]
        torch.testing.assert_close(torch.tensor(output.log_probs), expected, atol=BATCH_ROUNDING, rtol=0)


@pytest.mark.timeout(120)
def test_greedy_with_repetition_penalty_equals_hugging_face_generate_per_prompt(make_server, mixed_prompts):
    """Batched and left-padded here, one unpadded prompt at a time in `generate` (which would count a batch's
    left padding as seen tokens): the same tokens, the same log-probs of the raw logits."""
    server, _ = make_server()
    penalty = 3.0  # the tiny random model's greedy responses change from 3 on
    outputs = asyncio.run(_concurrently(server, _requests(mixed_prompts, 1), {**GREEDY, "repetition_penalty": penalty}))
    unpenalised = asyncio.run(_concurrently(server, _requests(mixed_prompts, 1), GREEDY))
    changed = [a.token_ids != b.token_ids for a, b in zip(outputs, unpenalised, strict=True)]
    assert any(changed), "the penalty changed nothing"
    for prompt, output in zip(mixed_prompts, outputs, strict=True):
        with torch.no_grad():
            generated = server.model.generate(
                input_ids=torch.tensor([prompt]),
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                max_new_tokens=8,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                repetition_penalty=penalty,
                eos_token_id=server.eos_token_ids,
                pad_token_id=server.pad_token_id,
                return_dict_in_generate=True,
                output_logits=True,
            )
        tokens = generated.sequences[0, len(prompt) :]
        assert output.token_ids == tokens.tolist()
        log_probs = torch.log_softmax(torch.stack(generated.logits, dim=1)[0].float(), dim=-1)
        expected = log_probs[torch.arange(len(tokens)), tokens]
        torch.testing.assert_close(torch.tensor(output.log_probs), expected, atol=BATCH_ROUNDING, rtol=0)


def test_empty_prompt_and_media_are_refused(make_server):
    server, _ = make_server()
    with pytest.raises(ValueError, match="prompt_ids is empty"):
        asyncio.run(server.generate(prompt_ids=[], sampling_params=SAMPLING, request_id="r", sample_index=0))
    for media in ({"image_data": ["x"]}, {"audio_data": ["x"]}, {"mm_processor_kwargs": {"sampling_rate": 16000}}):
        with pytest.raises(NotImplementedError, match="images, videos or audio"):  # verl's client forwards them
            asyncio.run(server.generate(prompt_ids=[1], sampling_params=SAMPLING, request_id="r", **media))


def test_bad_sample_index_is_refused(make_server, prompts):
    server, _ = make_server()
    for bad in (-1, "0", 1.5):
        with pytest.raises(ValueError, match="sample_index"):
            asyncio.run(
                server.generate(prompt_ids=prompts[0], sampling_params=SAMPLING, request_id="r", sample_index=bad)
            )


@pytest.mark.timeout(120)
def test_without_sample_index_a_prompts_samples_are_numbered_by_arrival(make_server, prompts):
    server, _ = make_server()

    async def unnumbered(count):
        return await asyncio.gather(
            *[
                server.generate(prompt_ids=prompts[0], sampling_params=SAMPLING, request_id=f"r{i}")
                for i in range(count)
            ]
        )

    without = asyncio.run(unnumbered(4))
    numbered = asyncio.run(_concurrently(server, _requests(prompts[:1]), SAMPLING))
    assert [o.token_ids for o in without] == [o.token_ids for o in numbered]


class _RayMethod:
    """`handle.method.remote(...)` of a Ray actor, run in this process."""

    def __init__(self, function):
        self.remote = function


class _LocalServerHandle:
    """The server's Ray handle as verl's LLMServerClient uses it; records what reaches `generate`."""

    def __init__(self, server):
        self.calls: list[dict] = []

        async def generate(**kwargs):
            self.calls.append(kwargs)
            return await server.generate(**kwargs)

        self.generate = _RayMethod(generate)


class _OneServerBalancer:
    """verl's GlobalRequestLoadBalancer actor reduced to one server (verl/workers/rollout/router.py)."""

    def __init__(self, handle):
        async def no_fields():
            return []

        async def acquire_server(request_id, **fields):
            return "server-0", handle

        self.require_acquire_fields = _RayMethod(no_fields)
        self.require_release_fields = _RayMethod(no_fields)
        self.acquire_server = _RayMethod(acquire_server)
        self.release_server = _RayMethod(lambda **fields: None)


def _instantiate_agent_loop(config, server, tokenizer, name=None):
    """As verl's AgentLoopWorker._run_agent_loop does: hydra.instantiate of the registry entry, talking to
    `server` through verl's LLMServerClient (which forwards extra kwargs of `generate` to the server)."""
    import hydra
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, _agent_loop_registry
    from verl.utils.dataset.rl_dataset import RLHFDataset
    from verl.workers.rollout.llm_server import LLMServerClient

    from maspo_verl.patches.hf_agent_loop import AGENT_LOOP_NAME

    handle = _LocalServerHandle(server)
    client = LLMServerClient(config, load_balancer_handle=_OneServerBalancer(handle))  # verl's own client
    loop = hydra.utils.instantiate(
        config=_agent_loop_registry[name or AGENT_LOOP_NAME],
        trainer_config=DictConfigWrap(config=config),
        server_manager=client,
        tokenizer=tokenizer,
        processor=None,
        hf_model_type="qwen2",
        dataset_cls=RLHFDataset,
        data_config=DictConfigWrap(config.data),
    )
    return loop, handle


@pytest.mark.timeout(120)
def test_agent_loop_sends_verls_session_id_as_the_sample_index(make_server, tiny_workdir):  # noqa: F811
    from transformers import AutoTokenizer

    from maspo_verl.patches.hf_agent_loop import HfCpuSingleTurnAgentLoop
    from maspo_verl.patches.hf_rollout import apply_hf_cpu_rollout
    from maspo_verl.sandbox.tiny import make_problems

    apply_hf_cpu_rollout()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_workdir["model"]))
    server, config = make_server()
    messages = [{"role": "user", "content": make_problems(num_train=1, num_val=1, seed=1)[0][0].prompt}]

    async def run_sessions(session_ids):
        outputs, handles = [], []
        for session_id in session_ids:
            loop, handle = _instantiate_agent_loop(config, server, tokenizer)  # verl: one instance per sample
            assert isinstance(loop, HfCpuSingleTurnAgentLoop)
            outputs.append(await loop.run(dict(SAMPLING), raw_prompt=messages, session_id=session_id, uid="u"))
            handles.append(handle)
        return outputs, handles

    outputs, handles = asyncio.run(run_sessions([3, 0, 3]))
    assert [handle.calls[0]["sample_index"] for handle in handles] == [3, 0, 3]
    prompt_ids = handles[0].calls[0]["prompt_ids"]
    direct = asyncio.run(_concurrently(server, [(prompt_ids, 3), (prompt_ids, 0)], SAMPLING))
    assert outputs[0].response_ids == direct[0].token_ids == outputs[2].response_ids
    assert outputs[1].response_ids == direct[1].token_ids

    with pytest.raises(ValueError, match="session_id"):
        loop, _ = _instantiate_agent_loop(config, server, tokenizer)
        asyncio.run(loop.run(dict(SAMPLING), raw_prompt=messages, uid="u"))
    from hydra.errors import InstantiationException

    _, vllm_config = make_server(backend="vllm")
    with pytest.raises(InstantiationException, match="rollout.name=hf_cpu"):  # verl builds loops with hydra
        _instantiate_agent_loop(vllm_config, server, tokenizer)


ECHO_REWARD = """
def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    return {"score": len(solution_str) + float(ground_truth), "source": data_source, "turns": extra_info["num_turns"],
            "index": extra_info["index"], "tool_rewards": extra_info["tool_rewards"]}
"""


@pytest.mark.timeout(120)
def test_local_reward_agent_loop_scores_with_the_configured_reward_function(make_server, tiny_workdir, tmp_path):  # noqa: F811
    """verl skips its Ray call to a reward actor when the output has a score; ours must be the configured one's."""
    from transformers import AutoTokenizer

    from maspo_verl.patches.hf_agent_loop import LOCAL_REWARD_AGENT_LOOP_NAME, HfCpuLocalRewardSingleTurnAgentLoop
    from maspo_verl.patches.hf_rollout import apply_hf_cpu_rollout
    from maspo_verl.sandbox.tiny import make_problems

    apply_hf_cpu_rollout()
    reward_file = tmp_path / "echo_reward.py"
    reward_file.write_text(ECHO_REWARD)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_workdir["model"]))
    server, config = make_server(
        extra=(f"reward.custom_reward_function.path={reward_file}", "reward.custom_reward_function.name=compute_score")
    )
    messages = [{"role": "user", "content": make_problems(num_train=1, num_val=1, seed=1)[0][0].prompt}]
    extra_info = {"index": 7}
    fields = dict(
        raw_prompt=messages,
        session_id=2,
        uid="u",
        data_source="tiny_arithmetic",
        reward_model={"ground_truth": "40"},
        extra_info=extra_info,
    )

    async def run_one():  # verl builds the loop inside its running event loop
        loop, _ = _instantiate_agent_loop(config, server, tokenizer, name=LOCAL_REWARD_AGENT_LOOP_NAME)
        assert isinstance(loop, HfCpuLocalRewardSingleTurnAgentLoop)
        return await loop.run(dict(SAMPLING), **fields)

    output = asyncio.run(run_one())

    response = tokenizer.decode(output.response_ids, skip_special_tokens=True)
    assert output.reward_score == len(response) + 40.0
    assert output.extra_fields["reward_extra_info"] == {  # the sample's extra_info, with verl's additions
        "score": len(response) + 40.0,
        "source": "tiny_arithmetic",
        "turns": 2,
        "index": 7,
        "tool_rewards": [],
    }
    assert extra_info == {"index": 7}, (
        "verl's reward manager updates extra_info in place: the sample's own must not change"
    )
    assert output.metrics.compute_score > 0

    from hydra.errors import InstantiationException

    _, reward_model_config = make_server(extra=("reward.reward_model.enable=true",))
    with pytest.raises(InstantiationException, match="reward.reward_model.enable"):
        _instantiate_agent_loop(reward_model_config, server, tokenizer, name=LOCAL_REWARD_AGENT_LOOP_NAME)
    _, remote_config = make_server(extra=("reward.reward_manager.name=remote",))
    with pytest.raises(InstantiationException, match="reward.reward_manager.name=remote"):
        _instantiate_agent_loop(remote_config, server, tokenizer, name=LOCAL_REWARD_AGENT_LOOP_NAME)
    _, vllm_config = make_server(backend="vllm")
    with pytest.raises(InstantiationException, match=f"default_agent_loop={LOCAL_REWARD_AGENT_LOOP_NAME} is for"):
        _instantiate_agent_loop(vllm_config, server, tokenizer, name=LOCAL_REWARD_AGENT_LOOP_NAME)


def _verls_reward_request(output, fields):
    """The DataProto verl's own `AgentLoopWorker._compute_score` sends a reward actor for `output`, captured
    with a stand-in actor on a bare worker (no Ray, no model)."""
    import copy

    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker

    sent = []

    class RewardActor:
        class compute_score:  # noqa: N801  (a Ray method's shape: handle.compute_score.remote(data))
            @staticmethod
            async def remote(data):
                sent.append(copy.deepcopy(data))  # what Ray's pickling hands the actor
                return {"reward_score": 1.0, "reward_extra_info": {"acc": 1.0}}

    worker = AgentLoopWorker.__new__(AgentLoopWorker)
    worker.reward_loop_worker_handles = [RewardActor()]
    worker.processor, worker.mm_processor_kwargs = None, {}
    asyncio.run(worker._compute_score([output.model_copy(deep=True)], kwargs=copy.deepcopy(fields)))
    return sent[0]


@pytest.mark.timeout(120)
def test_local_reward_loop_hands_the_reward_worker_verls_own_dataproto(
    make_server,
    tiny_workdir,  # noqa: F811
    monkeypatch,
    tmp_path,
):
    """The loop runs verl's `_compute_score` with verl's reward worker in process: the worker receives,
    tensor for tensor and column for column, what verl's agent-loop worker sends its reward actor, and
    the sample's fields are left as they were."""
    import copy

    from transformers import AutoTokenizer

    from maspo_verl.patches import hf_agent_loop
    from maspo_verl.patches.hf_rollout import apply_hf_cpu_rollout

    apply_hf_cpu_rollout()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_workdir["model"]))
    reward_file = tmp_path / "echo_reward.py"
    reward_file.write_text(ECHO_REWARD)
    server, config = make_server(
        extra=(f"reward.custom_reward_function.path={reward_file}", "reward.custom_reward_function.name=compute_score")
    )
    received = []
    build = hf_agent_loop._local_reward_worker

    def recording_worker(loop_config):
        worker = build(loop_config)

        class Recording:
            async def compute_score(self, data):
                received.append(copy.deepcopy(data))
                return await worker.compute_score(data)

        return Recording()

    monkeypatch.setattr(hf_agent_loop, "_local_reward_worker", recording_worker)
    fields = dict(
        raw_prompt=[{"role": "user", "content": "1+1="}],
        uid="u",
        session_id=3,
        index=4,
        data_source="tiny_arithmetic",
        reward_model={"ground_truth": "2"},
        extra_info={"index": 4},
    )
    sample = copy.deepcopy(fields)

    async def run_one():
        loop, _ = _instantiate_agent_loop(config, server, tokenizer, name=hf_agent_loop.LOCAL_REWARD_AGENT_LOOP_NAME)
        return await loop.run(dict(SAMPLING), **sample)

    output = asyncio.run(run_one())
    assert sample == fields, "verl's reward manager updates extra_info in place: the sample's own must not change"
    unscored = output.model_copy(deep=True)
    unscored.reward_score = None
    unscored.extra_fields.pop("reward_extra_info")
    ours, verls = received[0], _verls_reward_request(unscored, fields)
    assert sorted(ours.batch.keys()) == sorted(verls.batch.keys())
    for key in verls.batch.keys():
        assert torch.equal(ours.batch[key], verls.batch[key]), key
    assert sorted(ours.non_tensor_batch) == sorted(verls.non_tensor_batch)
    for key, column in verls.non_tensor_batch.items():
        assert ours.non_tensor_batch[key].shape == column.shape, key
        assert ours.non_tensor_batch[key].tolist() == column.tolist(), key
    assert output.reward_score is not None and output.metrics.compute_score > 0

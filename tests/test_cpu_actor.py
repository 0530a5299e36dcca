"""verl's real FSDP2 actor update with loss_mode=maspo (and our baselines dac, bapo), in this process, on CPU.

`ActorRolloutRefWorker(role="actor").update_actor` is the call verl's trainer makes on each
worker; here it runs in a world of one over gloo, on the tiny random-weight Qwen2.
"""

from __future__ import annotations

import dataclasses
from functools import partial

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

from maspo_verl.loss import METRIC_KEYS

pytestmark = pytest.mark.kind("verl")

BATCH_SIZE, PROMPT_LENGTH, RESPONSE_LENGTH = 8, 6, 5
MICRO_BATCH_SIZE = 4  # two micro-batches per update: verl aggregates their metrics
LEARNING_RATE = 0.5  # plain SGD: the parameter change is -lr * clipped gradient


@pytest.fixture(scope="module")
def actor_worker(cpu_platform, single_process_group, tiny_workdir):  # noqa: F811
    return build_actor_worker(
        tiny_workdir["model"],
        "actor",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={BATCH_SIZE}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={MICRO_BATCH_SIZE}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={MICRO_BATCH_SIZE}",
        "actor_rollout_ref.rollout.n=1",
        "actor_rollout_ref.actor.optim.optimizer=SGD",
        f"actor_rollout_ref.actor.optim.lr={LEARNING_RATE}",
        "actor_rollout_ref.actor.optim.weight_decay=0.0",
        "actor_rollout_ref.actor.grad_clip=1000.0",
    )


def _batch():
    """A rollout batch of uneven prompt/response lengths, with ratios and advantages far from 1 and 0."""
    generator = torch.Generator().manual_seed(0)
    prompts = [
        torch.randint(0, 30, (PROMPT_LENGTH - row % 3,), generator=generator).tolist() for row in range(BATCH_SIZE)
    ]
    responses = [
        torch.randint(0, 30, (RESPONSE_LENGTH - row % 2,), generator=generator).tolist() for row in range(BATCH_SIZE)
    ]
    advantages = torch.linspace(-3.0, 3.0, BATCH_SIZE).unsqueeze(1).expand(BATCH_SIZE, RESPONSE_LENGTH).clone()
    # Old log-probs far from the random model's (~log 1/57): ratios spread well beyond 1.
    old_log_probs = -4.0 * torch.rand(BATCH_SIZE, RESPONSE_LENGTH, generator=generator)
    batch = to_verl_batch(prompts, responses, pad_token_id=0, old_log_probs=old_log_probs, advantages=advantages)
    mark_for_update(batch, BATCH_SIZE)
    return batch


def _parameters(worker) -> list[torch.Tensor]:
    return [parameter.detach().full_tensor().clone() for parameter in worker.actor.engine.module.parameters()]


def _restore(worker, saved: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for parameter, value in zip(worker.actor.engine.module.parameters(), saved, strict=True):
            parameter.to_local().copy_(value)


def _use_loss(worker, loss_mode: str, **maspo_changes) -> None:
    """Point the worker's verl `ppo_loss` at an actor config with `policy_loss.loss_mode=loss_mode`
    whose `policy_loss.maspo` has `maspo_changes`."""
    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.utils.losses import ppo_loss

    actor_config = omega_conf_to_dataclass(worker.config.actor)
    maspo = dataclasses.replace(actor_config.policy_loss.maspo, **maspo_changes)
    object.__setattr__(actor_config.policy_loss, "maspo", maspo)
    object.__setattr__(actor_config.policy_loss, "loss_mode", loss_mode)
    worker.set_loss_fn(partial(ppo_loss, config=actor_config))


def _update(worker, initial: list[torch.Tensor], loss_mode: str = "maspo", **maspo_changes):
    """One update from `initial` weights; returns (parameter change, verl's metrics)."""
    from verl.utils import tensordict_utils as tu

    _restore(worker, initial)
    _use_loss(worker, loss_mode, **maspo_changes)
    output = worker.update_actor(_batch())
    change = torch.cat([(after - before).flatten() for after, before in zip(_parameters(worker), initial, strict=True)])
    return change, tu.get(output, "metrics")


@pytest.mark.timeout(120)
def test_update_actor_runs_maspo_and_reports_its_metrics_through_verl(actor_worker, monkeypatch):
    from verl.trainer.ppo import core_algos

    calls = []
    maspo = core_algos.get_policy_loss_fn("maspo")

    def recording_maspo(*args, **kwargs):
        loss, metrics = maspo(*args, **kwargs)
        calls.append(metrics)
        return loss, metrics

    monkeypatch.setitem(core_algos.POLICY_LOSS_REGISTRY, "maspo", recording_maspo)
    initial = _parameters(actor_worker)
    change, metrics = _update(actor_worker, initial)

    assert len(calls) == BATCH_SIZE // MICRO_BATCH_SIZE, "verl did not call loss_mode=maspo once per micro-batch"
    assert change.abs().max() > 0, "update_actor left every parameter unchanged"
    for key in METRIC_KEYS:
        assert key in metrics, f"{key} missing from verl's update_actor metrics: {sorted(metrics)}"
        (value,) = metrics[key]  # one mini-batch
        expected = sum(call[key] for call in calls) / len(calls)  # verl's MEAN over micro-batches
        assert value == pytest.approx(expected, rel=1e-5, abs=1e-7), key
    assert 0.0 < metrics["actor/maspo/gate_weight_mean"][0] < 1.0, "the soft gate never attenuated a token"
    assert metrics["grad_norm"][0] > 0


@pytest.mark.timeout(180)
def test_each_ablation_flag_changes_the_update(actor_worker):
    initial = _parameters(actor_worker)
    reference, _ = _update(actor_worker, initial)
    repeated, _ = _update(actor_worker, initial)
    torch.testing.assert_close(repeated, reference, rtol=0, atol=1e-7, msg="the same update is not reproducible")

    scale = reference.abs().max().item()
    for flag in ({"gate": "hard"}, {"mass_adaptive": False}, {"risk_control": False}):
        ablated, metrics = _update(actor_worker, initial, **flag)
        difference = (ablated - reference).abs().max().item()
        assert difference > 1e-4 * scale, f"maspo {flag} gave the same parameter update as the full method"
        assert "actor/maspo/gate_weight_mean" in metrics
    _restore(actor_worker, initial)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("loss_mode", ["dac", "bapo"])
def test_our_baselines_update_through_verls_actor_and_report_their_metrics(actor_worker, loss_mode, monkeypatch):
    """The baselines verl lacks (maspo_verl.baselines) in the same real update_actor call as MASPO."""
    from verl.trainer.ppo import core_algos

    from maspo_verl.baselines import BASELINE_LOSSES

    calls = []
    baseline = core_algos.get_policy_loss_fn(loss_mode)

    def recording(*args, **kwargs):
        loss, metrics = baseline(*args, **kwargs)
        calls.append(metrics)
        return loss, metrics

    monkeypatch.setitem(core_algos.POLICY_LOSS_REGISTRY, loss_mode, recording)
    # building the actor config registers the baselines again (the loss guard's register_baselines()): the
    # recording must be what it registers too
    monkeypatch.setitem(BASELINE_LOSSES, loss_mode, recording)
    initial = _parameters(actor_worker)
    change, metrics = _update(actor_worker, initial, loss_mode=loss_mode)
    _restore(actor_worker, initial)

    assert len(calls) == BATCH_SIZE // MICRO_BATCH_SIZE, f"verl did not call loss_mode={loss_mode} once per micro-batch"
    assert torch.isfinite(change).all() and change.abs().max() > 0, f"{loss_mode}: no finite parameter change"
    assert metrics["grad_norm"][0] > 0
    for key in calls[0]:
        logged = key if key.startswith("actor/") else f"actor/{key}"
        assert logged in metrics, f"{loss_mode}'s {key} missing from verl's update_actor metrics: {sorted(metrics)}"

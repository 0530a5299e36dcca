"""patches/fast_replay_buffer.py against verl's own ReplayBuffer: same batch, shorter waits.

verl's `ReplayBuffer.sample` runs for real; only TransferQueue (`tq` in verl's module) is replaced
by a fake whose prompt finishes on the third poll, and `time.sleep` records the waits.
"""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from verl.trainer.ppo.v1 import replay_buffer as verl_replay_buffer
from verl.utils.import_utils import load_extern_object

from maspo_verl.patches import UnsupportedVerlVersion
from maspo_verl.patches.fast_replay_buffer import POLL_INTERVAL_SECONDS, FastPollReplayBuffer, canonical_order

pytestmark = pytest.mark.kind("unit")

# What the CPU backend passes (maspo_verl/sandbox/tiny/cpu_backend.sh).
CUSTOM_SAMPLER_PATH = "pkg://maspo_verl.patches.fast_replay_buffer"
CUSTOM_SAMPLER_NAME = "FastPollReplayBuffer"


class FakeTransferQueue:
    """One GRPO group (prompt `p0`, two trajectories) that is running for two polls, then finished."""

    def __init__(self, polls_until_finished: int = 2):
        self.polls = 0
        self.polls_until_finished = polls_until_finished
        self.cleared: list[tuple[str, list[str]]] = []

    def kv_list(self):
        self.polls += 1
        status = "finished" if self.polls > self.polls_until_finished else "running"
        prompt = {"is_prompt": True, "status": status, "global_steps": 1}
        trajectories = {f"p0_{session}_0": {"status": status, "global_steps": 1} for session in range(2)}
        return {"train": {"p0": prompt, **(trajectories if status == "finished" else {})}}

    def kv_clear(self, partition_id, keys):
        self.cleared.append((partition_id, list(keys)))


def _build(cls, **extra):
    # The constructor arguments verl's trainer passes a custom sampler (trainer_base._build_replay_buffer).
    return cls(
        trainer_mode="sync",
        trainer_config=OmegaConf.create({}),
        max_off_policy_threshold=None,
        max_off_policy_strategy="drop",
        sampler_kwargs=OmegaConf.create(extra),
        refill_fn=lambda count: None,
    )


def _sample_and_record_sleeps(buffer, monkeypatch):
    fake = FakeTransferQueue()
    sleeps: list[float] = []
    monkeypatch.setattr(verl_replay_buffer, "tq", fake)
    monkeypatch.setattr(verl_replay_buffer.time, "sleep", sleeps.append)
    batch, metrics = buffer.sample(global_steps=1, partition_id="train", batch_size=1)
    return batch, metrics, sleeps, fake


def test_same_batch_as_verls_buffer_with_10_ms_instead_of_2_s_waits(monkeypatch):
    verl_batch, verl_metrics, verl_sleeps, verl_tq = _sample_and_record_sleeps(
        _build(verl_replay_buffer.ReplayBuffer), monkeypatch
    )
    fast_batch, fast_metrics, fast_sleeps, fast_tq = _sample_and_record_sleeps(
        _build(FastPollReplayBuffer), monkeypatch
    )

    assert verl_sleeps == [2.0, 2.0], "verl's unpatched buffer sleeps 2 s per poll (the idle time this patch removes)"
    assert fast_sleeps == [POLL_INTERVAL_SECONDS] * 2 == [0.01, 0.01]
    assert fast_batch.partition_id == verl_batch.partition_id
    assert sorted(zip(fast_batch.keys, map(str, fast_batch.tags), strict=True)) == sorted(
        zip(verl_batch.keys, map(str, verl_batch.tags), strict=True)
    )
    assert fast_batch.keys == ["p0_0_0", "p0_1_0"]
    assert fast_metrics == verl_metrics
    assert fast_tq.cleared == verl_tq.cleared == [("train", ["p0"])]


def test_poll_interval_from_sampler_kwargs(monkeypatch):
    _, _, sleeps, _ = _sample_and_record_sleeps(_build(FastPollReplayBuffer, poll_interval_s=0.05), monkeypatch)
    assert sleeps == [0.05, 0.05]


@pytest.mark.parametrize("bad", [0, -1, 3.0, "fast", float("nan")])
def test_bad_poll_interval_names_the_key(bad):
    with pytest.raises(ValueError, match=r"trainer\.v1\.sampler\.sampler_kwargs\.poll_interval_s"):
        _build(FastPollReplayBuffer, poll_interval_s=bad)


def test_refuses_the_async_trainers():
    with pytest.raises(ValueError, match="trainer.v1.mode=sync"):
        FastPollReplayBuffer(
            trainer_mode="separate_async",
            trainer_config=OmegaConf.create({}),
            max_off_policy_threshold=None,
            max_off_policy_strategy="drop",
            sampler_kwargs=OmegaConf.create({}),
        )


def test_refuses_other_verl_versions(monkeypatch):
    monkeypatch.setattr("maspo_verl.integration.versions.installed_verl_version", lambda: "0.8.0")
    with pytest.raises(
        UnsupportedVerlVersion,
        match="tested for verl 0.9.0, for verl 0.9.1 and for verl 0.10.0.dev0; the installed verl is 0.8.0",
    ):
        _build(FastPollReplayBuffer)


@pytest.mark.verl
def test_verl_finds_it_through_its_custom_sampler_hook():
    """verl's trainer resolves trainer.v1.sampler.custom_sampler.{path,name} with load_extern_object."""
    assert load_extern_object(CUSTOM_SAMPLER_PATH, CUSTOM_SAMPLER_NAME) is FastPollReplayBuffer
    assert issubclass(FastPollReplayBuffer, verl_replay_buffer.ReplayBuffer)


def test_batches_come_in_prompt_submission_order_whatever_order_the_trajectories_finished_in():
    submitted = ["zz", "aa", "mm"]
    finished = ["mm_1_0", "aa_0_0", "zz_1_0", "mm_0_0", "zz_0_0", "aa_1_0"]
    for trajectories in (finished, list(reversed(finished)), sorted(finished)):
        order = canonical_order(trajectories, submitted)
        assert [trajectories[i] for i in order] == ["zz_0_0", "zz_1_0", "aa_0_0", "aa_1_0", "mm_0_0", "mm_1_0"]


def test_the_buffer_reorders_what_verl_materializes(monkeypatch):
    buffer = _build(FastPollReplayBuffer)
    buffer.prompt_global_steps["train"] = {"p1": 1, "p0": 1}  # as the last poll listed them: p1 put first
    snapshot = {"p0_1_0": {"s": 1}, "p1_0_0": {"s": 2}, "p0_0_0": {"s": 3}, "p1_1_0": {"s": 4}}
    monkeypatch.setattr(verl_replay_buffer, "tq", FakeTransferQueue())
    batch = buffer._materialize_batch("train", ["p0", "p1"], snapshot)
    assert batch.keys == ["p1_0_0", "p1_1_0", "p0_0_0", "p0_1_0"]
    assert [tag["s"] for tag in batch.tags] == [2, 4, 3, 1], "tags move with their keys"

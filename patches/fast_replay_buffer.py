"""Opt-in patch: verl's V1 sync replay buffer, polling every 10 ms and handing out batches in a fixed order.

verl 0.9's V1 sync trainer waits for a step's rollouts in `ReplayBuffer.sample`, which checks
TransferQueue and then sleeps `poll_interval` seconds (2.0, hard-wired where the trainer builds the
buffer in verl/trainer/ppo/v1/trainer_base.py). On a GPU cluster a step's generation takes minutes
and 2 s is noise; on a CPU box the tiny task generates a step in a fraction of a second, so every
step (and every validation) idles for up to 2 s.

`FastPollReplayBuffer` is that same `ReplayBuffer`, built with a shorter `poll_interval` (its public
constructor argument). verl's own extension point selects it; nothing in verl is rebound:

    trainer.v1.sampler.custom_sampler.path=pkg://maspo_verl.patches.fast_replay_buffer
    trainer.v1.sampler.custom_sampler.name=FastPollReplayBuffer
    trainer.v1.sampler.sampler_kwargs.poll_interval_s=0.01      # optional, default POLL_INTERVAL_SECONDS

It also hands each batch out in a canonical order: prompts as they were submitted, then each
prompt's sessions and turns. verl's `_materialize_batch` lists trajectories in TransferQueue's
order, i.e. in the order they finished, which on CPU depends on batching and timing. That order
decides which samples share a micro-batch (and so its padding and float sums), and a rerun of
one seed drifted from step 1 (entropy 0.50880927 vs 0.50880933, ppo_kl at step 2 0.0027 vs
0.0037). This is the one verl method the subclass overrides, hence the exact version check.

The CPU backend (maspo_verl/sandbox/tiny/cpu_backend.sh) selects it. It checks the verl version when verl
builds it. Limit, from verl's contract for custom samplers (trainer_base.py `_build_replay_buffer`):
verl passes a custom sampler neither DAPO's `filter_groups` metric nor `sync_refill_failed_groups`,
so with this buffer both are off whatever the config says: keep `algorithm.filter_groups.enable=false`
(the default) and `trainer.v1.sampler.sync_refill_failed_groups=false` when you select it.
"""

from __future__ import annotations

import math

from maspo_verl.patches import CPU_BACKEND_VERL_VERSIONS, require_verl_version

try:
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
except ImportError:
    # verl < 0.9 has no V1 trainer: the import has already failed, so say which verls this module is for
    require_verl_version("FastPollReplayBuffer", CPU_BACKEND_VERL_VERSIONS)
    raise

__all__ = [
    "POLL_INTERVAL_SECONDS",
    "SUPPORTED_VERL_VERSIONS",
    "FastPollReplayBuffer",
    "canonical_order",
    "poll_interval_from",
]

SUPPORTED_VERL_VERSIONS = CPU_BACKEND_VERL_VERSIONS
# Each poll is one TransferQueue `kv_list` call (~1 ms for a few hundred keys here): 10 ms keeps the
# driver's polling under a tenth of a core while a step waits at most 10 ms past its last rollout.
POLL_INTERVAL_SECONDS = 0.01
POLL_INTERVAL_KEY = "poll_interval_s"


def poll_interval_from(sampler_kwargs) -> float:
    """`trainer.v1.sampler.sampler_kwargs.poll_interval_s`, else POLL_INTERVAL_SECONDS; must be in (0, 2]."""
    value = (sampler_kwargs or {}).get(POLL_INTERVAL_KEY, POLL_INTERVAL_SECONDS)
    try:
        interval = float(value)
    except (TypeError, ValueError):
        interval = math.nan
    if not (0 < interval <= 2.0):
        raise ValueError(
            f"trainer.v1.sampler.sampler_kwargs.{POLL_INTERVAL_KEY} must be a number of seconds in (0, 2], "
            f"got {value!r}"
        )
    return interval


def canonical_order(keys: list[str], prompt_order: list[str]) -> list[int]:
    """Indexes that sort a batch's trajectory keys by (prompt submission rank, session id, index).

    verl's keys are `{uid}_{session_id}_{index}` (verl/trainer/ppo/v1/replay_buffer.py); a uid is
    fresh in every run, but its rank in `prompt_order` (the partition's prompts as TransferQueue
    lists them: in the order the trainer put them, the data loader's) is not.
    """
    rank = {uid: position for position, uid in enumerate(prompt_order)}

    def position(i: int) -> tuple[int, int, int]:
        uid, session, index = keys[i].rsplit("_", 2)
        return rank.get(uid, len(rank)), int(session), int(index)

    return sorted(range(len(keys)), key=position)


class FastPollReplayBuffer(ReplayBuffer):
    """verl's sync `ReplayBuffer` with `poll_interval` = `poll_interval_s` (default 10 ms, verl's 2 s), batches in
    `canonical_order`."""

    def __init__(self, trainer_mode: str, *args, sampler_kwargs=None, poll_interval: float | None = None, **kwargs):
        require_verl_version("FastPollReplayBuffer", SUPPORTED_VERL_VERSIONS)
        if trainer_mode != "sync":
            raise ValueError(
                "FastPollReplayBuffer replaces the V1 sync trainer's buffer only (trainer.v1.mode=sync), "
                f"got trainer mode {trainer_mode!r}: unset trainer.v1.sampler.custom_sampler for the async trainers"
            )
        interval = poll_interval if poll_interval is not None else poll_interval_from(sampler_kwargs)
        super().__init__(trainer_mode, *args, sampler_kwargs=sampler_kwargs, poll_interval=interval, **kwargs)

    def _materialize_batch(
        self, partition_id: str, selected_prompt_uids: list[str], partition_snapshot: dict[str, dict]
    ):
        prompt_order = list(self.prompt_global_steps[partition_id])  # TransferQueue's listing, kept by the last poll
        batch = super()._materialize_batch(partition_id, selected_prompt_uids, partition_snapshot)
        batch.reorder(canonical_order(batch.keys, prompt_order))
        return batch

"""Stock `python -m verl.trainer.main_ppo` on CPU, end to end: it trains MASPO, and a rerun repeats it.

Two real runs, side by side, through the packaged CPU script (maspo_verl.sandbox.runner.run_cpu_training: own
work dir, own Ray temp dir, Ray-chosen free ports, the whole process group killed at the end;
2 steps each, ~1.5 min a run on an idle 2-core box), judged from what verl itself wrote (its
file logger's metrics and checkpoint folder):

- `maspo`: MASPO with non-default keys whose effect is exact, loaded into the workers through
  verl's `verl.plugins` entry point (not the legacy env var); it must train, log MASPO's metrics
  from verl's Ray workers and save a checkpoint.
- `maspo_again` repeats `maspo` with the CPU script's two rollout shortcuts swapped back for verl's
  own path, a difference that must not show: `maspo` runs the batch through maspo-verl's agent-loop
  manager (one Ray call to the server and one TransferQueue put per batch,
  patches/batched_agent_loop.py) and scores each response in the agent-loop worker
  (`hf_cpu_single_turn_agent_local_reward`, reward.num_workers=0); `maspo_again` through verl's
  `AgentLoopManagerTQ` (per sample) and verl's own reward actor (one Ray call per response).
  Every training metric of every step must be the same, rewards and validation accuracies included
  (the rollout server's own log-prob diagnostics, computed in batches whose make-up follows
  arrival, may differ at float rounding: docs/results/README.md).

That two loss modes of one seed sample identically (pairing) is checked on the runs of the minimal
comparison in tests/test_compare.py.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.training(minutes=3)

AGENT_LOOP = "actor_rollout_ref.rollout.agent.default_agent_loop"
# How each run gets its rollouts to the trainer: the CPU script's (batched manager, scoring in the
# agent-loop worker), or verl's own (per-sample manager, verl's reward actor).
ROLLOUT_PATH = {
    "maspo": [f"{AGENT_LOOP}=hf_cpu_single_turn_agent_local_reward", "reward.num_workers=0"],
    "maspo_again": [
        f"{AGENT_LOOP}=hf_cpu_single_turn_agent",
        "reward.num_workers=1",
        "++actor_rollout_ref.rollout.agent.agent_loop_manager_class=null",
    ],
}
STEPS = 2
VAL_N = 4
# Not outcomes of the training: wall-clock figures, verl's bootstrap estimates (unseeded), and the
# rollout-vs-actor log-prob diagnostics, whose rollout side is computed in arrival-made batches.
NOT_REPRODUCED = ("timing_s/", "timing_per_token_ms/", "perf/", "best@", "worst@", "rollout_corr/", "training/rollout_")
# Non-default MASPO keys whose effect is exact: with alpha = 0 and beta_pos = beta_neg = 0 both
# trust-region widths equal sigma_base on every token, so the workers' metrics show the config
# crossed from Hydra into the loss running in verl's Ray workers.
SIGMA_BASE = 1.5
MASPO_OVERRIDES = [
    f"actor_rollout_ref.actor.policy_loss.maspo.sigma_base={SIGMA_BASE}",
    "actor_rollout_ref.actor.policy_loss.maspo.alpha=0.0",
    "actor_rollout_ref.actor.policy_loss.maspo.beta_pos=0.0",
    "actor_rollout_ref.actor.policy_loss.maspo.beta_neg=0.0",
]
# The workers must get maspo through verl's `verl.plugins` entry point, not the legacy env var.
PLUGIN_ENVIRONMENT = {"VERL_USE_EXTERNAL_MODULES": "", "VERL_USE_EXTERNAL_PLUGINS": "auto"}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    from maspo_verl.sandbox.runner import run_cpu_training

    def run(name):
        workdir = tmp_path_factory.mktemp(f"run_{name}")
        summary = run_cpu_training(
            workdir,
            steps=STEPS,
            timeout=1500,
            env={
                **PLUGIN_ENVIRONMENT,
                "LOSS_MODE": "maspo",
                "VAL_N": str(VAL_N),
                "PPO_MINI_BATCH_SIZE": "4",
                "SAVE_FREQ": str(STEPS),
            },
            overrides=[
                *MASPO_OVERRIDES,
                *ROLLOUT_PATH[name],
                # sampled validation: the rerun must repeat sampled responses, not only greedy ones
                "actor_rollout_ref.rollout.val_kwargs.do_sample=true",
                "actor_rollout_ref.rollout.val_kwargs.temperature=1.0",
            ],
        )
        if summary.return_code != 0:
            log_tail = summary.log_path.read_text(errors="replace")[-4000:] if summary.log_path.is_file() else ""
            pytest.fail(f"{name}: main_ppo exited with {summary.return_code}; end of {summary.log_path}:\n{log_tail}")
        return name, summary

    with ThreadPoolExecutor(max_workers=2) as pool:  # two at a time: the suite may run another training beside it
        return dict(pool.map(run, ["maspo", "maspo_again"]))


@pytest.mark.timeout(2400)
def test_main_ppo_trains_maspo_on_cpu_end_to_end(two_runs):
    run = two_runs["maspo"]
    assert run.problems(STEPS) == []
    assert run.training_steps == [1, 2]

    assert min(run.validation) == 0 and max(run.validation) == STEPS, "validation before and after training"
    assert all(f"val-core/tiny_arithmetic/acc/mean@{VAL_N}" in metrics for metrics in run.validation.values())

    for step in run.training_steps:
        metrics = run.metrics_by_step[step]
        assert metrics["actor/maspo/sigma_pos_mean"] == pytest.approx(SIGMA_BASE, abs=1e-6)
        assert metrics["actor/maspo/sigma_neg_mean"] == pytest.approx(SIGMA_BASE, abs=1e-6)
        # hf_cpu got the actor's weights after every update: its log-probs match the actor's.
        assert metrics["training/rollout_probs_diff_max"] < 1e-4

    from maspo_verl.patches.batched_agent_loop import MANAGER_BANNER

    assert MANAGER_BANNER in run.log_path.read_text(errors="replace"), "the CPU script's agent-loop manager ran"
    assert MANAGER_BANNER not in two_runs["maspo_again"].log_path.read_text(errors="replace")

    checkpoint_files = os.listdir(run.checkpoint)
    assert any(name.startswith("model_world_size_1") for name in checkpoint_files), checkpoint_files


@pytest.mark.timeout(2400)
def test_a_rerun_of_one_seed_through_verls_own_rollout_path_repeats_every_training_metric(two_runs):
    first, again = two_runs["maspo"], two_runs["maspo_again"]
    assert first.training_steps == again.training_steps == list(range(1, STEPS + 1))
    compared = 0
    for step in sorted(first.metrics_by_step):
        for key, value in first.metrics_by_step[step].items():
            if any(part in key for part in NOT_REPRODUCED):
                continue
            assert again.metrics_by_step[step].get(key) == value, (
                f"step {step} {key}: {value} vs {again.metrics_by_step[step].get(key)}"
            )
            compared += 1
    assert compared > 100, "the comparison covered the losses, MASPO's gate metrics, rewards and validation"

"""Which loss verl's actor workers run with `algorithm.rollout_correction.bypass_mode=true`, settled by training.

verl's legacy trainer rewrites `policy_loss.loss_mode` to "bypass_mode" (rollout_corr_helper.apply_bypass_mode)
in the driver's config inside fit(), after each worker bound `ppo_loss` to the config it was built with.
Two real 1-step runs of stock `python -m verl.trainer.main_ppo` on CPU (the packaged CPU script through
maspo_verl.sandbox.runner.run_cpu_training: own work dir, own Ray temp dir, the process group killed at
the end), one per trainer, read from verl's own metrics which loss computed the update:

- MASPO's gate metrics (`actor/maspo/*`) come only from our loss, in the workers;
- verl's "bypass_mode" loss would have raised there (it needs `policy_loss.rollout_correction`, which only
  the driver's copy gets);
- verl logged none of what its old-log-prob recompute logs (`actor/entropy`, the rollout-vs-actor
  `training/rollout_probs_diff_*`): the rollout's log-probs were p_old;
- the run log carries the guard's one-line note, as `check` and DRY_RUN print it.

The legacy trainer runs through verl's own agent-loop manager and single-turn loop (the CPU script's
batched manager and seeded loop serve the V1 trainer only).
"""

from __future__ import annotations

import pytest

from maspo_verl.sandbox.runner import MASPO_METRIC_PREFIX

pytestmark = pytest.mark.training(minutes=10)  # two runs one after the other: 9.5 min measured on a loaded 2-core box

BYPASS = "algorithm.rollout_correction.bypass_mode=true"
# verl's own rollout path for the legacy trainer: its AgentLoopManager, its single-turn loop, its reward actor.
VERL_ROLLOUT_PATH = [
    "actor_rollout_ref.rollout.agent.default_agent_loop=single_turn_agent",
    "reward.num_workers=1",
    "++actor_rollout_ref.rollout.agent.agent_loop_manager_class=null",
]
TRAINERS = {
    "legacy": ["trainer.use_v1=false", *VERL_ROLLOUT_PATH],
    "v1": ["trainer.use_v1=true"],
}
GUARD_NOTE = "maspo-verl: algorithm.rollout_correction.bypass_mode=true: maspo still runs in the workers"


@pytest.fixture(scope="module")
def bypass_runs(tmp_path_factory):
    from maspo_verl.sandbox.runner import run_cpu_training

    runs = {}
    for name, overrides in TRAINERS.items():  # one after the other: 2 cores
        workdir = tmp_path_factory.mktemp(f"bypass_{name}")
        summary = run_cpu_training(
            workdir,
            steps=1,
            timeout=900,
            env={"LOSS_MODE": "maspo", "TEST_FREQ": "-1"},
            overrides=[BYPASS, "trainer.val_before_train=false", *overrides],
        )
        if summary.return_code != 0:
            log_tail = summary.log_path.read_text(errors="replace")[-4000:] if summary.log_path.is_file() else ""
            pytest.fail(f"{name}: main_ppo exited with {summary.return_code}; end of {summary.log_path}:\n{log_tail}")
        runs[name] = summary
    return runs


@pytest.mark.timeout(2000)
@pytest.mark.parametrize("trainer", list(TRAINERS))
def test_bypass_mode_trains_maspo_in_the_workers_on_the_rollouts_log_probs(bypass_runs, trainer):
    run = bypass_runs[trainer]
    assert run.training_steps == [1]
    metrics = run.metrics_by_step[1]
    maspo_metrics = {key for key in metrics if key.startswith(MASPO_METRIC_PREFIX)}
    assert {f"{MASPO_METRIC_PREFIX}gate_weight_mean", f"{MASPO_METRIC_PREFIX}sigma_pos_mean"} <= maspo_metrics
    assert 0.0 < metrics[f"{MASPO_METRIC_PREFIX}gate_weight_mean"] <= 1.0
    # verl logs these from the actor's old-log-prob recompute, which bypass mode skips
    assert "actor/entropy" not in metrics and "training/rollout_probs_diff_max" not in metrics
    log = run.log_path.read_text(errors="replace")
    assert GUARD_NOTE in log
    if trainer == "legacy":
        assert "driver's copy of the config only" in log
        assert "rollout_correction config not found in policy_loss" not in log

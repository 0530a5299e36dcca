"""ONE end-to-end run of stock `python -m verl.trainer.main_ppo` training MASPO on CPU (~1.5 min).

The run goes through examples/run_scripts/cpu/train_maspo_cpu.sh (own work dir, own Ray temp
dir, Ray-chosen free ports, the whole process group killed at the end) and is judged from what
verl itself wrote: its file logger's metrics and its checkpoint folder.
"""

from __future__ import annotations

import os

import pytest

from maspo_verl.e2e import run_cpu_training

STEPS = 2
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


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    # The workers must get maspo through verl's `verl.plugins` entry point, not the legacy env var.
    environment = {"VERL_USE_EXTERNAL_MODULES": "", "VERL_USE_EXTERNAL_PLUGINS": "auto"}
    summary = run_cpu_training(
        tmp_path_factory.mktemp("main_ppo_cpu"), steps=STEPS, overrides=MASPO_OVERRIDES, timeout=480, env=environment
    )
    if summary.return_code != 0:
        log_tail = summary.log_path.read_text(errors="replace")[-4000:] if summary.log_path.is_file() else ""
        pytest.fail(f"main_ppo exited with {summary.return_code}; end of {summary.log_path}:\n{log_tail}")
    return summary


@pytest.mark.timeout(600)
def test_main_ppo_trains_maspo_on_cpu_end_to_end(cpu_run):
    assert cpu_run.problems(STEPS) == []
    assert cpu_run.training_steps == [1, 2]

    validation = cpu_run.validation
    assert min(validation) == 0 and max(validation) == STEPS, "validation before and after training"
    assert all("val-core/tiny_arithmetic/acc/mean@1" in metrics for metrics in validation.values())

    for step in cpu_run.training_steps:
        metrics = cpu_run.metrics_by_step[step]
        assert metrics["actor/maspo/sigma_pos_mean"] == pytest.approx(SIGMA_BASE, abs=1e-6)
        assert metrics["actor/maspo/sigma_neg_mean"] == pytest.approx(SIGMA_BASE, abs=1e-6)
        # hf_cpu got the actor's weights after every update: its log-probs match the actor's.
        assert metrics["training/rollout_probs_diff_max"] < 1e-4

    checkpoint_files = os.listdir(cpu_run.checkpoint)
    assert any(name.startswith("model_world_size_1") for name in checkpoint_files), checkpoint_files

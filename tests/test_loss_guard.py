"""verl settings that replace a loss of ours are refused, naming the key (maspo_verl.integration.loss_guard), by
`check`, by DRY_RUN and by verl's own driver; settings that change MASPO's inputs are said."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from maspo_verl import cli
from maspo_verl.integration.loss_guard import TRAINER_SETTING_KEYS, loss_path_findings, trainer_settings_of

pytestmark = pytest.mark.kind("verl")

ROOT = Path(__file__).resolve().parents[1]
V1_BYPASS = ["algorithm.rollout_correction.bypass_mode=true", "trainer.use_v1=true"]
DISTILL_VANILLA_ONLY = ["distillation.enabled=true", "distillation.distillation_loss.policy_loss_mode=maspo"]
DISTILL_NO_TASK_REWARDS = ["distillation.enabled=true", "distillation.distillation_loss.use_task_rewards=false"]


def _verl_has(*keys: str) -> bool:
    cfg = cli.compose_trainer_config("maspo")
    return all(OmegaConf.select(cfg, key, default="<absent>") != "<absent>" for key in keys)


def _legacy_bypass() -> list[str]:
    """verl's legacy trainer with bypass mode; verl 0.8 has only that trainer and no trainer.use_v1 key."""
    return [
        "algorithm.rollout_correction.bypass_mode=true",
        *(["trainer.use_v1=false"] if _verl_has("trainer.use_v1") else []),
    ]


@pytest.mark.unit
def test_findings_name_the_key_and_what_to_unset():
    refusals, notes = loss_path_findings("maspo", {"use_v1": False, "rollout_correction_bypass_mode": True})
    assert len(refusals) == 1 and not notes
    assert "algorithm.rollout_correction.bypass_mode=true" in refusals[0] and "'bypass_mode'" in refusals[0]
    assert "algorithm.rollout_correction.bypass_mode=false" in refusals[0] and "trainer.use_v1=true" in refusals[0]

    refusals, notes = loss_path_findings("maspo", {"use_v1": True, "rollout_correction_bypass_mode": True})
    assert not refusals and len(notes) == 1 and "rollout engine's log-probs in place of old_log_probs" in notes[0]

    refusals, _ = loss_path_findings("dac", {"distillation_enabled": True, "distillation_policy_loss_mode": "maspo"})
    assert "distillation.distillation_loss.policy_loss_mode=maspo" in refusals[0] and "only 'vanilla'" in refusals[0]
    refusals, _ = loss_path_findings("maspo", {"distillation_enabled": True, "distillation_use_task_rewards": False})
    assert "distillation.distillation_loss.use_task_rewards=false" in refusals[0]
    refusals, notes = loss_path_findings(
        "maspo",
        {
            "distillation_enabled": True,
            "distillation_use_task_rewards": True,
            "distillation_use_policy_gradient": True,
            "distillation_policy_loss_mode": "vanilla",
        },
    )
    assert not refusals and "verl's vanilla PPO loss" in notes[0]
    # verl's defaults (and keys a verl lacks: None) are neither
    assert loss_path_findings("maspo", dict.fromkeys(TRAINER_SETTING_KEYS)) == ([], [])


@pytest.mark.unit
def test_yaml_mirrors_exactly_the_keys_the_guard_reads():
    cfg = cli.compose_trainer_config("maspo", ["algorithm.rollout_correction.bypass_mode=true"])
    mirrored = OmegaConf.to_container(cfg.actor_rollout_ref.actor.policy_loss.trainer_settings, resolve=True)
    assert mirrored == trainer_settings_of(cfg)
    assert set(mirrored) == set(TRAINER_SETTING_KEYS)


def _check(capsys, overrides):
    code = cli.main(["check", *overrides])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.timeout(300)
def test_check_refuses_every_loss_replacing_setting_naming_the_key(capsys):
    cases = [(_legacy_bypass(), "FAIL: algorithm.rollout_correction.bypass_mode=true with the legacy trainer")]
    if _verl_has("distillation.distillation_loss.policy_loss_mode"):  # verl 0.8 has no distillation trainer
        cases += [
            (DISTILL_VANILLA_ONLY, "FAIL: distillation.distillation_loss.policy_loss_mode=maspo"),
            (
                DISTILL_NO_TASK_REWARDS,
                "FAIL: distillation.enabled=true with distillation.distillation_loss.use_task_rewards=false",
            ),
        ]
    for overrides, message in cases:
        code, out, err = _check(capsys, overrides)
        assert code == 1 and message in err and out.rstrip().endswith("check: FAILED"), (overrides, out, err)


@pytest.mark.timeout(300)
def test_check_passes_v1_bypass_mode_and_says_what_changes(capsys):
    if not _verl_has("trainer.use_v1"):
        code, out, err = _check(capsys, ["algorithm.rollout_correction.bypass_mode=true"])
        assert code == 1 and "legacy trainer" in err  # without a V1 trainer, bypass mode is the legacy one
        return
    code, out, err = _check(capsys, V1_BYPASS)
    assert code == 0, err
    assert "NOTE: algorithm.rollout_correction.bypass_mode=true on the V1 trainer" in out
    assert "MASPO's p_old" in out and out.rstrip().endswith("check: OK")


def test_verl_building_the_actor_config_refuses_and_logs_like_the_driver(caplog):
    """verl's driver builds the policy-loss config from the composed tree (validate_config):
    MaspoPolicyLossConfig reads the mirrored settings there, before any worker starts."""
    from verl.utils.config import omega_conf_to_dataclass

    from maspo_verl import config as maspo_config

    cfg = cli.compose_trainer_config("maspo", _legacy_bypass())
    with pytest.raises(Exception, match=r"algorithm.rollout_correction.bypass_mode=true with the legacy trainer"):
        omega_conf_to_dataclass(cfg.actor_rollout_ref.actor.policy_loss)
    # verl's own loss mode is the user's choice: not guarded
    vanilla = cli.compose_trainer_config(
        "maspo", [*_legacy_bypass(), "actor_rollout_ref.actor.policy_loss.loss_mode=vanilla"]
    )
    assert omega_conf_to_dataclass(vanilla.actor_rollout_ref.actor.policy_loss).loss_mode == "vanilla"

    if _verl_has("trainer.use_v1"):
        maspo_config._logged_notes.clear()
        cfg = cli.compose_trainer_config("maspo", V1_BYPASS)
        with caplog.at_level(logging.WARNING, logger="maspo_verl.config"):
            omega_conf_to_dataclass(cfg.actor_rollout_ref.actor.policy_loss)
        assert any("rollout engine's log-probs in place of old_log_probs" in r.getMessage() for r in caplog.records)


@pytest.mark.timeout(300)
def test_dry_run_of_a_paper_script_refuses_legacy_bypass_mode():
    env = {**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(ROOT / "examples/run_scripts/7b/maspo.sh"), *_legacy_bypass()],
        capture_output=True,
        text=True,
        env=env,
        timeout=280,
    )
    assert result.returncode != 0
    assert "DRY RUN FAILED: algorithm.rollout_correction.bypass_mode=true with the legacy trainer" in result.stderr


@pytest.mark.training(minutes=0.5)
@pytest.mark.timeout(600)
def test_a_cpu_run_with_legacy_bypass_mode_fails_before_its_first_step(tmp_path):
    """verl's own main_ppo (the packaged CPU script) stops in its driver's config validation, before
    Ray or any worker starts, with our message naming the key."""
    env = {
        **os.environ,
        "WORK_DIR": str(tmp_path),
        "PYTHON": sys.executable,
        "TOTAL_STEPS": "1",
        "MASPO_CPU_THREADS": "1",
        "RAY_TMPDIR": str(tmp_path / "ray"),
    }
    result = subprocess.run(
        ["bash", str(ROOT / "examples/run_scripts/cpu/train_maspo_cpu.sh"), *_legacy_bypass()],
        capture_output=True,
        text=True,
        env=env,
        timeout=560,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "algorithm.rollout_correction.bypass_mode=true with the legacy trainer" in output, output[-3000:]
    assert "step:1" not in output and not (tmp_path / "ray").exists()  # no step, no Ray

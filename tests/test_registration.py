"""Registration in fresh processes (as verl's Ray workers start) and the `check` command."""

import os
import subprocess
import sys

import pytest

PROBE = (
    "import verl\n"
    "from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY\n"
    "print('maspo' in POLICY_LOSS_REGISTRY)\n"
)


def _fresh_python(code, **env_overrides):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_USE_EXTERNAL")}
    env.update(env_overrides)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180, cwd="/")


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "env, registered",
    [
        ({}, True),  # verl >= 0.9: the verl.plugins entry point
        ({"VERL_USE_EXTERNAL_PLUGINS": "maspo"}, True),  # entry point selected by name
        ({"VERL_USE_EXTERNAL_PLUGINS": "none", "VERL_USE_EXTERNAL_MODULES": "maspo_verl"}, True),  # verl 0.7/0.8 path
        ({"VERL_USE_EXTERNAL_PLUGINS": "none"}, False),  # proves the probe can fail
    ],
)
def test_fresh_process_registry(env, registered):
    result = _fresh_python(PROBE, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(registered)


@pytest.mark.timeout(300)
def test_selecting_our_config_class_as_target_imports_the_package():
    code = (
        "from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY\n"
        "from verl.utils.config import omega_conf_to_dataclass\n"
        "from omegaconf import OmegaConf\n"
        "assert 'maspo' not in POLICY_LOSS_REGISTRY\n"
        "cfg = OmegaConf.create({'_target_': 'maspo_verl.MaspoPolicyLossConfig', 'maspo': {'alpha': 0.5}})\n"
        "loss_config = omega_conf_to_dataclass(cfg)\n"
        "print(type(loss_config).__name__, loss_config.maspo.alpha, 'maspo' in POLICY_LOSS_REGISTRY)\n"
    )
    result = _fresh_python(code, VERL_USE_EXTERNAL_PLUGINS="none")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "MaspoPolicyLossConfig 0.5 True"


@pytest.mark.timeout(300)
def test_check_command_reports_registration_and_resolved_config():
    result = subprocess.run(
        [sys.executable, "-m", "maspo_verl", "check", "actor_rollout_ref.actor.policy_loss.maspo.alpha=0.5"],
        capture_output=True, text=True, timeout=240, cwd="/",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "'maspo' is registered by `import verl` in a fresh process" in result.stdout
    assert "policy_loss.maspo.alpha = 0.5" in result.stdout
    assert result.stdout.strip().endswith("check: OK")


@pytest.mark.timeout(300)
def test_check_command_fails_clearly_on_a_bad_value():
    result = subprocess.run(
        [sys.executable, "-m", "maspo_verl", "check", "actor_rollout_ref.actor.policy_loss.maspo.sigma_base=-1"],
        capture_output=True, text=True, timeout=240, cwd="/",
    )
    assert result.returncode == 1
    assert "sigma_base must be > 0" in result.stderr
    assert "check: FAILED" in result.stdout


@pytest.mark.timeout(300)
def test_check_command_fails_when_this_environment_would_not_register_maspo():
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_USE_EXTERNAL")}
    env["VERL_USE_EXTERNAL_PLUGINS"] = "none"
    result = subprocess.run(
        [sys.executable, "-m", "maspo_verl", "check"], capture_output=True, text=True, timeout=240, cwd="/", env=env
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "VERL_USE_EXTERNAL_MODULES=maspo_verl" in result.stderr
    env["VERL_USE_EXTERNAL_MODULES"] = "maspo_verl"
    result = subprocess.run(
        [sys.executable, "-m", "maspo_verl", "check"], capture_output=True, text=True, timeout=240, cwd="/", env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "registered by VERL_USE_EXTERNAL_MODULES=maspo_verl" in result.stdout

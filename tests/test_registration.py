"""Registration in fresh processes (as verl's Ray workers start) and the `check` command.

Version-aware (scripts/test_verl_versions.sh runs this file on verl 0.8.0 .. main): verl >= 0.9
registers maspo through the `verl.plugins` entry point, verl 0.8 only through
VERL_USE_EXTERNAL_MODULES; each version is asserted to use exactly its own mechanism.
"""

import os
import subprocess
import sys

import pytest

from maspo_verl.integration.versions import has_plugin_entry_points, installed_verl_version

pytestmark = pytest.mark.kind("verl")

PROBE = (
    "import verl\n"
    "from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY\n"
    "print('maspo' in POLICY_LOSS_REGISTRY)\n"
)
ENTRY_POINTS = has_plugin_entry_points(installed_verl_version())
# What `check` needs in this environment to pass: nothing with entry points, else verl 0.8's mechanism.
CHECK_ENV = {} if ENTRY_POINTS else {"VERL_USE_EXTERNAL_MODULES": "maspo_verl.integration.plugin"}


def _fresh_python(code, **env_overrides):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_USE_EXTERNAL")}
    env.update(env_overrides)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180, cwd="/")


def _check(*arguments, **env_overrides):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_USE_EXTERNAL")}
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "-m", "maspo_verl", "check", *arguments],
        capture_output=True,
        text=True,
        timeout=240,
        cwd="/",
        env=env,
    )


def _check_in_process(monkeypatch, capsys, *arguments, **env_overrides):
    """`python -m maspo_verl check` run through its main() here, with this environment; its registry
    probes are still fresh processes. Returns (exit code, stdout, stderr)."""
    from maspo_verl.cli import main

    for name in [name for name in os.environ if name.startswith("VERL_USE_EXTERNAL")]:
        monkeypatch.delenv(name)
    for name, value in env_overrides.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    code = main(["check", *arguments])
    output = capsys.readouterr()
    return code, output.out, output.err


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "env, registered",
    [
        ({}, ENTRY_POINTS),  # verl >= 0.9: the verl.plugins entry point; verl 0.8 loads none
        ({"VERL_USE_EXTERNAL_PLUGINS": "maspo"}, ENTRY_POINTS),  # entry point selected by name
        ({"VERL_USE_EXTERNAL_PLUGINS": "none", "VERL_USE_EXTERNAL_MODULES": "maspo_verl"}, True),  # verl 0.7/0.8 path
        ({"VERL_USE_EXTERNAL_MODULES": "maspo_verl"}, True),  # verl 0.8 as documented (and harmless on >= 0.9)
        ({"VERL_USE_EXTERNAL_PLUGINS": "none"}, False),  # proves the probe can fail
    ],
)
def test_fresh_process_registry(env, registered):
    result = _fresh_python(PROBE, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(registered)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "target, registered",
    [
        # MASPO's class (configs/maspo.yaml): the method alone, no baseline
        ("maspo_verl.MaspoPolicyLossConfig", "['maspo']"),
        # the baselines' class (+policy_loss=baselines): importing maspo_verl.baselines registers theirs too
        ("maspo_verl.baselines.PolicyLossConfigWithBaselines", "['bapo', 'dac', 'maspo']"),
    ],
)
def test_selecting_our_config_class_as_target_imports_the_package(target, registered):
    code = (
        "from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY\n"
        "from verl.utils.config import omega_conf_to_dataclass\n"
        "from omegaconf import OmegaConf\n"
        "assert 'maspo' not in POLICY_LOSS_REGISTRY\n"
        f"cfg = OmegaConf.create({{'_target_': '{target}', 'maspo': {{'alpha': 0.5}}}})\n"
        "loss_config = omega_conf_to_dataclass(cfg)\n"
        "registered = sorted({'maspo', 'dac', 'bapo'} & set(POLICY_LOSS_REGISTRY))\n"
        "print(type(loss_config).__name__, loss_config.maspo.alpha, registered)\n"
    )
    result = _fresh_python(code, VERL_USE_EXTERNAL_PLUGINS="none")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"{target.rsplit('.', 1)[1]} 0.5 {registered}"


@pytest.mark.timeout(300)
def test_check_command_reports_registration_and_resolved_config():
    result = _check("actor_rollout_ref.actor.policy_loss.maspo.alpha=0.5", **CHECK_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    if ENTRY_POINTS:
        assert "'maspo' is registered by `import verl` in a fresh process" in result.stdout
    else:
        assert "registered by VERL_USE_EXTERNAL_MODULES=maspo_verl.integration.plugin (verl 0.8" in result.stdout
    assert f"verl {installed_verl_version()}," in result.stdout
    assert "policy_loss.maspo.alpha = 0.5" in result.stdout
    assert result.stdout.strip().endswith("check: OK")


@pytest.mark.timeout(300)
def test_check_command_fails_clearly_on_a_bad_value(monkeypatch, capsys):
    code, out, err = _check_in_process(
        monkeypatch, capsys, "actor_rollout_ref.actor.policy_loss.maspo.sigma_base=-1", **CHECK_ENV
    )
    assert code == 1
    assert "sigma_base must be > 0" in err
    assert "check: FAILED" in out


@pytest.mark.timeout(300)
def test_check_command_rejects_an_unregistered_loss_mode_naming_the_registered_ones(monkeypatch, capsys):
    code, out, err = _check_in_process(
        monkeypatch, capsys, "actor_rollout_ref.actor.policy_loss.loss_mode=masp", **CHECK_ENV
    )
    assert code == 1, out + err
    assert "loss_mode='masp' (did you mean 'maspo'?): Unsupported loss mode: masp. Supported modes are:" in err
    registered = err.split("Supported modes are:", 1)[1]
    for mode in ("'vanilla'", "'maspo'", "'dac'", "'bapo'"):  # verl's own and ours
        assert mode in registered, registered
    assert "check: FAILED" in out


@pytest.mark.timeout(300)
def test_check_command_fails_when_this_environment_would_not_register_maspo(monkeypatch, capsys):
    env = {"VERL_USE_EXTERNAL_PLUGINS": "none"} if ENTRY_POINTS else {}
    code, out, err = _check_in_process(monkeypatch, capsys, **env)
    assert code == 1, out + err
    assert "export VERL_USE_EXTERNAL_MODULES=maspo_verl.integration.plugin" in err
    if not ENTRY_POINTS:
        assert "loads no verl.plugins entry points (they exist from verl 0.9.0)" in err
    code, out, err = _check_in_process(monkeypatch, capsys, **env, VERL_USE_EXTERNAL_MODULES="maspo_verl")
    assert code == 0, out + err
    assert "registered by VERL_USE_EXTERNAL_MODULES=maspo_verl" in out

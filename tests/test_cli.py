"""`python -m maspo_verl check | config-dir` and what they say about the installed verl (integration.versions)."""

import importlib.metadata
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from maspo_verl import cli
from maspo_verl.integration import versions as compat

pytestmark = pytest.mark.kind("verl")


@pytest.mark.unit
@pytest.mark.parametrize(
    "verl_version, level",
    [
        ("0.8.0", "tested"),
        ("0.9.0", "tested"),
        ("0.9.1", "tested"),
        ("0.10.0.dev0", "tested"),  # verl main: a pre-release inside the range
        ("0.9.2", "untested"),
        ("0.10.0", "untested"),
        ("0.8.1", "untested"),
        ("0.7.0", "unsupported"),
        ("0.11.0", "unsupported"),
        ("1.0.0", "unsupported"),
        (None, "unsupported"),
        ("not-a-version", "unsupported"),
    ],
)
def test_verl_support_levels(verl_version, level):
    found, message = compat.verl_support(verl_version)
    assert found == level
    if level == "tested":
        assert message == ""
    else:
        assert (verl_version or "not installed") in message
        assert "0.10.0.dev0 (verl main at 1dda039b9)" in message or verl_version is None


@pytest.mark.unit
def test_untested_and_unsupported_messages_say_what_they_mean():
    _, untested = compat.verl_support("0.9.2")
    assert "inside the supported range verl>=0.8,<0.11" in untested
    assert "nothing has proved it on this version" in untested
    assert "scripts/test_verl_versions.sh" in untested
    _, unsupported = compat.verl_support("0.7.0")
    assert "outside maspo-verl's supported range verl>=0.8,<0.11" in unsupported
    assert "expect import or config errors" in unsupported


@pytest.mark.unit
@pytest.mark.parametrize(
    "verl_version, expected",
    [("0.8.0", False), ("0.8.5", False), ("0.9.0", True), ("0.9.0rc1", True), ("0.10.0.dev0", True)],
)
def test_plugin_entry_points_exist_from_verl_0_9(verl_version, expected):
    assert compat.has_plugin_entry_points(verl_version) is expected


@pytest.mark.unit
def test_import_logs_one_warning_per_process_for_an_untested_verl(monkeypatch, caplog):
    monkeypatch.setattr(compat, "_logged", False)
    monkeypatch.setattr(compat, "installed_verl_version", lambda: "0.9.2")
    with caplog.at_level(logging.WARNING, logger="maspo_verl"):
        compat.log_once_if_untested()
        compat.log_once_if_untested()
    warnings = [
        record for record in caplog.records if "verl 0.9.2 is inside the supported range" in record.getMessage()
    ]
    assert len(warnings) == 1
    caplog.clear()
    monkeypatch.setattr(compat, "_logged", False)
    monkeypatch.setattr(compat, "installed_verl_version", lambda: "0.9.1")
    with caplog.at_level(logging.WARNING, logger="maspo_verl"):
        compat.log_once_if_untested()
    assert not caplog.records


def test_the_installed_verl_is_tested_and_import_says_nothing():
    """In CI's environment (pinned verl) importing maspo_verl logs no version warning."""
    code = "import logging; logging.basicConfig(level=logging.WARNING); import maspo_verl"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd="/")
    assert result.returncode == 0, result.stderr
    assert compat.installed_verl_version() in compat.TESTED_VERL_VERSIONS
    assert "maspo-verl: verl" not in result.stderr


def _check_with_verl_version(monkeypatch, capsys, pretended_verl):
    real_version = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda name: pretended_verl if name == "verl" else real_version(name)
    )
    code = cli.main(["check"])
    return code, capsys.readouterr()


@pytest.mark.timeout(300)
def test_check_warns_on_an_untested_verl_and_still_passes(monkeypatch, capsys):
    code, output = _check_with_verl_version(monkeypatch, capsys, "0.9.2")
    assert code == 0, output.out + output.err
    assert "WARNING: verl 0.9.2 is inside the supported range" in output.err
    assert output.out.strip().endswith("check: OK")


@pytest.mark.timeout(300)
def test_check_fails_on_a_verl_outside_the_supported_range(monkeypatch, capsys):
    code, output = _check_with_verl_version(monkeypatch, capsys, "0.7.0")
    assert code == 1
    assert "FAIL: verl 0.7.0 is outside maspo-verl's supported range verl>=0.8,<0.11" in output.err
    assert output.out.strip().endswith("check: FAILED")


def test_unregistered_loss_mode_uses_verls_registry_message():
    assert cli.unregistered_loss_mode("maspo") is None
    assert cli.unregistered_loss_mode("vanilla") is None
    message = cli.unregistered_loss_mode("masp")
    assert message.startswith("Unsupported loss mode: masp. Supported modes are:")
    assert "'maspo'" in message and "'vanilla'" in message


def test_config_dir_prints_the_folder_with_maspo_yaml():
    result = subprocess.run(
        [sys.executable, "-m", "maspo_verl", "config-dir"], capture_output=True, text=True, timeout=180, cwd="/"
    )
    assert result.returncode == 0, result.stderr
    folder = Path(result.stdout.strip())
    assert (folder / "maspo.yaml").is_file()
    assert folder == cli.config_dir()


def test_a_mistyped_loss_mode_is_one_line_with_the_closest_registered_mode():
    assert cli.loss_mode_problem("maspo") is None
    line = cli.loss_mode_problem("masp")
    assert line.startswith(
        "actor_rollout_ref.actor.policy_loss.loss_mode='masp' (did you mean 'maspo'?): Unsupported loss mode"
    )
    assert "\n" not in line
    assert "did you mean" not in cli.loss_mode_problem("zzzzzz")


@pytest.mark.parametrize(
    "override, expected",
    [
        # a value our config rejects: Hydra's InstantiationException unwrapped to our ValueError
        (
            "actor_rollout_ref.actor.policy_loss.maspo.alpha=-1",
            "invalid value: policy_loss.maspo.alpha must be >= 0, got -1",
        ),
        # a mistyped leaf and a mistyped block: the closest existing key
        (
            "actor_rollout_ref.actor.policy_loss.maspo.alhpa=1",
            "actor_rollout_ref.actor.policy_loss.maspo.alhpa: no such key in maspo.yaml "
            "(did you mean 'actor_rollout_ref.actor.policy_loss.maspo.alpha'?)",
        ),
        (
            "actor_rollout_ref.actor.policy_loss.mapo.alpha=1",
            "actor_rollout_ref.actor.policy_loss.mapo.alpha: no such key in maspo.yaml "
            "(did you mean 'actor_rollout_ref.actor.policy_loss.maspo.alpha'?)",
        ),
        # nothing close: how to add a key
        (
            "actor_rollout_ref.actor.policy_loss.zzz=1",
            "actor_rollout_ref.actor.policy_loss.zzz: no such key in maspo.yaml; a new key needs a leading + "
            "(+actor_rollout_ref.actor.policy_loss.zzz=...)",
        ),
    ],
)
def test_a_bad_override_fails_in_one_line_naming_the_key(override, expected):
    from verl.utils.config import omega_conf_to_dataclass

    with pytest.raises(Exception) as raised:
        omega_conf_to_dataclass(cli.compose_trainer_config("maspo", [override]).actor_rollout_ref.actor.policy_loss)
    assert cli.config_error_line(raised.value, "maspo", [override]) == expected


@pytest.mark.timeout(300)
def test_check_with_a_mistyped_loss_mode_prints_no_resolved_config(monkeypatch, capsys):
    monkeypatch.setenv("VERL_USE_EXTERNAL_PLUGINS", "auto")
    code = cli.main(["check", "actor_rollout_ref.actor.policy_loss.loss_mode=masp"])
    output = capsys.readouterr()
    assert code == 1
    assert "policy_loss.maspo.alpha =" not in output.out
    failures = [line for line in output.err.splitlines() if line.startswith("FAIL:")]
    assert len(failures) == 1 and "(did you mean 'maspo'?)" in failures[0], output.err

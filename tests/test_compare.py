"""The main job, `python -m maspo_verl.compare`: bad input fails fast; a minimal comparison runs
verl's real trainer for two methods and writes the JSON, the PNG and the table."""

import json
import os
import subprocess
import sys

import pytest

from omegaconf import OmegaConf

from maspo_verl.compare import METHODS, RunSettings, _parse_methods, _parse_seeds, main
from maspo_verl.e2e import CPU_SCRIPT
from maspo_verl.tiny.warmup import WarmupSettings, cached_warmup


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--methods", "maspo,ppo2"], "unknown method(s) ['ppo2']"),
        (["--methods", "maspo,maspo"], "lists a method twice"),
        (["--seeds", "0,x"], "--seeds must be comma-separated integers"),
        (["--steps", "0"], "--steps must be >= 1"),
        (["--ppo-mini-batch-size", "3"], "must divide --train-batch-size"),
        (["--rollout-n", "1"], "--rollout-n must be >= 2"),
        (["--learning-rate", "-1"], "--learning-rate must be a positive number"),
        (["--output-dir", "/proc/maspo-compare"], "is not writable"),
    ],
)
def test_bad_input_is_one_line_and_nonzero_before_any_run(argv, message, capsys, tmp_path):
    if "--output-dir" not in argv:
        argv = [*argv, "--output-dir", str(tmp_path)]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and error.count("\n") == 0
    assert not (tmp_path / "runs").exists()


def test_parsers_accept_good_values():
    assert _parse_methods("maspo, vanilla,sapo") == ["maspo", "vanilla", "sapo"]
    assert _parse_seeds("0,2") == [0, 2]
    RunSettings().validate()


def test_warmup_is_cached_by_its_inputs(tmp_path):
    settings = WarmupSettings(steps=2, num_train=8, num_val=4)
    first, metadata, reused = cached_warmup(settings, tmp_path)
    again, _, reused_again = cached_warmup(settings, tmp_path)
    assert (reused, reused_again, first) == (False, True, again)
    assert (first / "config.json").is_file() and 0.0 <= metadata["val_greedy_accuracy"] <= 1.0
    other, _, reused_other = cached_warmup(WarmupSettings(steps=3, num_train=8, num_val=4), tmp_path)
    assert other != first and not reused_other


@pytest.mark.timeout(900)
def test_minimal_comparison_end_to_end(tmp_path):
    cache = tmp_path / "cache"
    cached_warmup(WarmupSettings(), cache)  # the comparison must reuse it, not train again
    output = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "maspo_verl.compare", "--methods", "maspo,vanilla", "--seeds", "0",
         "--steps", "2", "--test-freq", "2", "--val-n", "2", "--output-dir", str(output), "--cache-dir", str(cache)],
        capture_output=True, text=True, timeout=840, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "warm-up model reused from" in result.stdout
    report = json.loads((output / "comparison.json").read_text())
    assert set(report["aggregated"]) == {"maspo", "vanilla"}
    for method in ("maspo", "vanilla"):
        numbers = report["aggregated"][method]
        for key in ("val_acc_start", "val_acc_final", "val_pass@2_final", "train_reward_mean", "entropy_last"):
            assert 0.0 <= numbers[key]["mean"] <= (1.0 if key != "entropy_last" else 50.0), (method, key)
    assert "maspo/gate_weight_mean_mean" in report["aggregated"]["maspo"]  # MASPO's metrics came back from verl
    assert "maspo/gate_weight_mean_mean" not in report["aggregated"]["vanilla"]
    assert all(run["summary"]["steps_logged"] == 2 for run in report["runs"])
    assert (output / "learning_curves.png").stat().st_size > 10_000
    assert "| MASPO | 1 |" in result.stdout and "| GRPO (clip 0.2) | 1 |" in result.stdout
    for method in ("maspo", "vanilla"):
        assert (output / "runs" / f"{method}-seed0" / "verl.log").stat().st_size > 0


@pytest.fixture(scope="module")
def cpu_script_arguments():
    """The main_ppo arguments our CPU script builds, as its DRY_RUN=1 prints them (one bash run)."""
    import shlex

    result = subprocess.run(
        ["bash", str(CPU_SCRIPT)], capture_output=True, text=True, timeout=240,
        env={**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    words = shlex.split(result.stdout.splitlines()[0])
    return words[words.index("verl.trainer.main_ppo") + 1 :]


@pytest.fixture
def verl_ppo_loss_restored():
    """Building a config with entropy_advantage.enable=true applies that patch in this process
    (its documented switch); undo it so later tests see verl's own ppo_loss."""
    yield
    from maspo_verl.patches.entropy_advantage import remove_entropy_advantage

    remove_entropy_advantage()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_composes_and_passes_verl_validation(method, cpu_script_arguments, verl_ppo_loss_restored):
    """Each selectable method's overrides exist in the config and pass verl's own checks."""
    from maspo_verl.dry_run import compose_config, dry_run, split_main_ppo_args

    config_path, config_name, overrides = split_main_ppo_args(cpu_script_arguments)
    spec = METHODS[method]
    config = compose_config(
        config_path, config_name,
        [*overrides, f"actor_rollout_ref.actor.policy_loss.loss_mode={spec.loss_mode}", *spec.overrides],
    )
    report = dry_run(config)
    assert report.config.actor_rollout_ref.actor.policy_loss.loss_mode == spec.loss_mode
    for override in spec.overrides:
        key, value = override.split("=", 1)
        assert str(OmegaConf.select(report.config, key)).lower() == value.lower(), override

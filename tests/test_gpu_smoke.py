"""scripts/gpu_smoke.sh and its verdict (maspo_verl.experiments.smoke): what a CPU box can check of it.

The verdict's assertions on metrics files (passing and doctored ones), the smoke reward, the script's
arguments and commands, its refusal without a GPU, every GPU run's config composed and validated by
verl (DRY_RUN=1), and REHEARSE=cpu: the script's own stages on CPU with the tiny model, the verdict
active, then the same verdict on doctored copies of that run's metrics.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from test_run_scripts import composed

from maspo_verl.experiments import smoke
from maspo_verl.experiments.dry_run import dry_run

pytestmark = pytest.mark.kind("unit")

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "scripts" / "gpu_smoke.sh"
SHELLCHECK = Path(sys.executable).with_name("shellcheck")


# ---- the verdict on metrics files -------------------------------------------------------------------


def _on_policy(advantage_mean: float, pg_loss: float | None = None, grad_norm: float = 0.8, **extra) -> dict:
    return {
        "actor/pg_loss": -advantage_mean if pg_loss is None else pg_loss,
        "critic/advantages/mean": advantage_mean,
        "critic/advantages/max": 1.5,
        "critic/advantages/min": -1.2,
        "critic/score/mean": 0.31,
        "response_length/mean": 412.5,
        "prompt_length/mean": 97.0,
        "actor/grad_norm": grad_norm,
        "actor/maspo/gated_frac_pos": 0.001,
        "actor/maspo/gated_frac_neg": 0.0,
        "actor/maspo/gate_weight_mean": 1.0,
        "timing_s/step": 30.0,
        "perf/total_num_tokens": 4100,
        **extra,
    }


def _off_policy(step: int, **extra) -> dict:
    metrics = _on_policy(0.05, pg_loss=-0.04, **{"timing_s/step": 20.0 + step})
    metrics.update({"actor/maspo/gated_frac_pos": 0.12, "actor/maspo/gated_frac_neg": 0.09})
    metrics.update({"actor/maspo/gate_weight_mean": 0.97, **extra})
    return metrics


def write_metrics(path: Path, steps: dict[int, dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"step": step, "data": data}) for step, data in steps.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def good_runs(tmp_path: Path) -> dict[str, Path]:
    return {
        "maspo_dp1": write_metrics(tmp_path / "m1.jsonl", {1: _on_policy(0.06)}),
        "vanilla_dp1": write_metrics(tmp_path / "v1.jsonl", {1: _on_policy(0.06, pg_loss=-0.0601)}),
        "maspo_dp2": write_metrics(tmp_path / "m2.jsonl", {1: _on_policy(0.045, **{"critic/score/mean": 0.4})}),
        "maspo_offpolicy": write_metrics(tmp_path / "off.jsonl", {s: _off_policy(s) for s in (1, 2, 3)}),
    }


def failed(checks) -> list[str]:
    return [c.name for c in checks if not c.passed]


def test_the_verdict_passes_runs_that_meet_every_assertion(tmp_path):
    checks, timing = smoke.check_runs(good_runs(tmp_path))
    assert failed(checks) == [], [c.line() for c in checks]
    names = [c.name for c in checks]
    assert "MASPO vs vanilla, on-policy: same rollouts, same loss and gradient norm" in names
    assert "maspo_dp2: on-policy loss = -token-mean advantage" in names
    assert sum("the gate acts" in n for n in names) == 3
    assert timing["maspo_offpolicy"]["seconds_per_step"] == [21.0, 22.0, 23.0]
    assert timing["maspo_offpolicy"]["mean_seconds_after_first_step"] == 22.5


@pytest.mark.parametrize(
    ("run", "steps", "failing"),
    [
        # a loss scaled by the data-parallel size (2x) on two ranks
        ("maspo_dp2", {1: _on_policy(0.045, pg_loss=-0.09)}, "maspo_dp2: on-policy loss = -token-mean advantage"),
        # MASPO's loss away from vanilla's at r = 1
        ("maspo_dp1", {1: _on_policy(0.06, pg_loss=-0.05)}, "maspo_dp1: on-policy loss = -token-mean advantage"),
        # same rollouts, another gradient
        (
            "vanilla_dp1",
            {1: _on_policy(0.06, grad_norm=0.9)},
            "MASPO vs vanilla, on-policy: same rollouts, same loss and gradient norm",
        ),
        # the gate never acts at step 2 (weight 1) / no token gated at step 3
        (
            "maspo_offpolicy",
            {1: _off_policy(1), 2: _off_policy(2, **{"actor/maspo/gate_weight_mean": 1.0}), 3: _off_policy(3)},
            "maspo_offpolicy: the gate acts at step 2",
        ),
        (
            "maspo_offpolicy",
            {
                s: _off_policy(s, **{"actor/maspo/gated_frac_pos": 0.0, "actor/maspo/gated_frac_neg": 0.0})
                for s in (1, 2, 3)
            },
            "maspo_offpolicy: the gate acts at step 3",
        ),
        # zero advantages (a reward that never varies): nothing can act
        (
            "maspo_offpolicy",
            {1: _off_policy(1, **{"critic/advantages/max": 0.0, "critic/advantages/min": 0.0})},
            "maspo_offpolicy: the gate acts at step 1",
        ),
    ],
)
def test_a_doctored_run_fails_the_assertion_it_breaks(tmp_path, run, steps, failing):
    runs = good_runs(tmp_path)
    runs[run] = write_metrics(tmp_path / "doctored.jsonl", steps)
    checks, _ = smoke.check_runs(runs)
    assert failing in failed(checks), [c.line() for c in checks]


def test_rollouts_that_differ_and_say_nothing_fail_as_uninformative(tmp_path):
    runs = good_runs(tmp_path)
    # zero token-mean advantage (all responses the same length) and other rollouts: the identity cannot tell
    runs["maspo_dp1"] = write_metrics(tmp_path / "a.jsonl", {1: _on_policy(0.0)})
    runs["vanilla_dp1"] = write_metrics(tmp_path / "b.jsonl", {1: _on_policy(0.0, **{"critic/score/mean": 0.2})})
    checks, _ = smoke.check_runs(runs)
    assert "MASPO vs vanilla, on-policy: the comparison can tell" in failed(checks)


def test_missing_runs_metrics_and_bad_lines_raise_naming_them(tmp_path):
    runs = good_runs(tmp_path)
    with pytest.raises(ValueError, match=r"\['vanilla_dp1'\] are required"):
        smoke.check_runs({k: v for k, v in runs.items() if k != "vanilla_dp1"})
    with pytest.raises(ValueError, match="unknown run name"):
        smoke.check_runs({**runs, "maspo_dp4": runs["maspo_dp2"]})
    no_gate = _off_policy(1)
    del no_gate["actor/maspo/gate_weight_mean"]
    runs["maspo_offpolicy"] = write_metrics(tmp_path / "no_gate.jsonl", {1: no_gate})
    with pytest.raises(KeyError, match="gate_weight_mean' was not logged"):
        smoke.check_runs(runs)
    (tmp_path / "bad.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: not a verl file-logger line"):
        smoke.load_metrics(tmp_path / "bad.jsonl")
    with pytest.raises(FileNotFoundError, match="absent.jsonl"):
        smoke.load_metrics(tmp_path / "absent.jsonl")


def test_the_command_line_writes_the_verdict_and_fails_on_a_broken_run(tmp_path, capsys):
    runs = good_runs(tmp_path)
    arguments = [a for name, path in runs.items() for a in ("--run", f"{name}={path}")]
    assert smoke.main(["check", *arguments, "--output", str(tmp_path / "ok.json")]) == 0
    report = json.loads((tmp_path / "ok.json").read_text())
    assert report["passed"] and report["runs"]["maspo_dp1"]["seconds_per_step"] == [30.0]
    write_metrics(runs["maspo_dp2"], {1: _on_policy(0.045, pg_loss=-0.09)})
    assert smoke.main(["check", *arguments, "--output", str(tmp_path / "bad.json")]) == 1
    assert not json.loads((tmp_path / "bad.json").read_text())["passed"]
    assert "FAIL maspo_dp2: on-policy loss" in capsys.readouterr().out


def test_the_smoke_reward_adds_a_response_hash_bonus_and_keeps_the_math_verdict():
    first = smoke.compute_score("math500", "no boxed answer here", "4")
    again = smoke.compute_score("math500", "no boxed answer here", "4")
    other = smoke.compute_score("math500", "another response", "4")
    assert first == again and 0 <= first["smoke_bonus"] < 0.5
    assert first["acc"] == 0.0 and first["score"] == first["smoke_bonus"]
    assert other["score"] != first["score"]  # different responses of one group: different rewards
    assert 0 <= smoke.hash_bonus(None) < 1


# ---- the script: arguments, commands, refusals -----------------------------------------------------------


def run_smoke(*args: str, path: str | None = None, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHON": sys.executable, **env}
    if path is not None:
        environment["PATH"] = path
    return subprocess.run(
        ["bash", str(SMOKE), *args], capture_output=True, text=True, env=environment, timeout=timeout, check=False
    )


def printed(stdout: str) -> dict[str, list[str]]:
    commands = {}
    for line in stdout.splitlines():
        name, separator, command = line.partition(":")
        if separator and not name.startswith("gpu_smoke"):
            commands[name] = shlex.split(command)
    return commands


@pytest.mark.verl
def test_shellcheck_clean():
    result = subprocess.run(
        [str(SHELLCHECK), "-x", str(SMOKE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout


def _value(words: list[str], key: str) -> str:
    values = [w.split("=", 1)[1] for w in words if w.startswith(f"{key}=")]
    assert values, f"{key} not in {words}"
    return values[-1]


@pytest.mark.verl
def test_print_shows_the_production_runs_on_two_gpus(tmp_path):
    result = run_smoke("--print", "--workdir", str(tmp_path), SMOKE_GPUS="2", MODEL_PATH="org/model")
    assert result.returncode == 0, result.stderr
    commands = printed(result.stdout)
    assert list(commands) == ["loss", "maspo_dp1", "vanilla_dp1", "maspo_dp2", "maspo_offpolicy", "check"]
    assert commands["loss"][1:] == [
        str(REPO / "benchmarks/gpu_loss_check.py"),
        *("--device", "cuda", "--tokens", "4194304", "--output", f"{tmp_path}/loss_check.json"),
    ]
    for name in ("maspo_dp1", "vanilla_dp1", "maspo_dp2", "maspo_offpolicy"):
        words = commands[name]
        assert "REHEARSE=gpu" in words and f"EXPERIMENT_NAME={name}" in words
        assert words[words.index("bash") + 1] == str(
            REPO / "examples/run_scripts/1.5b" / ("grpo.sh" if "vanilla" in name else "maspo.sh")
        )
        assert _value(words, "actor_rollout_ref.model.path") == "org/model"
        assert _value(words, "reward.custom_reward_function.path") == "pkg://maspo_verl.experiments.smoke"
        assert _value(words, "data.max_response_length") == "1024"
    assert [_value(commands[n], "trainer.n_gpus_per_node") for n in ("maspo_dp1", "maspo_dp2", "maspo_offpolicy")] == [
        "1",
        "2",
        "2",
    ]
    assert _value(commands["maspo_dp1"], "actor_rollout_ref.actor.ppo_mini_batch_size") == "8"  # = the batch: on-policy
    assert _value(commands["maspo_offpolicy"], "actor_rollout_ref.actor.ppo_mini_batch_size") == "2"  # 4 updates a step
    assert "REHEARSE_STEPS=3" in commands["maspo_offpolicy"]
    check = commands["check"]
    assert check[1:4] == ["-m", "maspo_verl.experiments.smoke", "check"]
    assert f"maspo_dp2={tmp_path}/runs/smoke/maspo_dp2/metrics.jsonl" in check
    assert not (tmp_path / "runs").exists(), "--print runs nothing"


@pytest.mark.verl
def test_one_gpu_leaves_out_the_dp2_run_and_cpu_mode_uses_the_cpu_rehearsal(tmp_path):
    one = printed(run_smoke("--print", "--workdir", str(tmp_path), SMOKE_GPUS="1").stdout)
    assert "maspo_dp2" not in one and _value(one["maspo_offpolicy"], "trainer.n_gpus_per_node") == "1"
    assert _value(one["maspo_dp1"], "actor_rollout_ref.model.path") == "Qwen/Qwen2.5-0.5B-Instruct"
    cpu = printed(run_smoke("--print", "--workdir", str(tmp_path), REHEARSE="cpu").stdout)
    assert "REHEARSE=cpu" in cpu["maspo_dp1"] and cpu["loss"][2:4] == ["--device", "cpu"]
    assert not any(w.startswith("actor_rollout_ref.model.path=") for w in cpu["maspo_dp1"])  # the tiny model


@pytest.mark.verl
@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--only", "loss,gradcheck"], {}, "unknown stage 'gradcheck'"),
        (["--only"], {}, "--only needs a value"),
        (["--fast"], {}, "unknown argument '--fast'"),
        ([], {"REHEARSE": "tpu"}, "REHEARSE=tpu"),
        (["--print"], {"SMOKE_GPUS": "two"}, "SMOKE_GPUS must be a positive integer"),
    ],
)
def test_bad_arguments_are_refused_naming_them(tmp_path, args, env, message):
    result = run_smoke("--workdir", str(tmp_path), *args, **env)
    assert result.returncode == 2 and message in result.stderr


@pytest.mark.verl
def test_without_a_gpu_it_stops_before_running_anything(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "nvidia-smi").write_text("#!/usr/bin/env bash\necho 'No devices were found' >&2\nexit 6\n")
    (fake_bin / "nvidia-smi").chmod(0o755)
    result = run_smoke("--workdir", str(tmp_path / "work"), path=f"{fake_bin}:{os.environ['PATH']}")
    assert result.returncode == 1 and "needs a CUDA device" in result.stderr
    assert not (tmp_path / "work" / "logs").exists()


# ---- DRY_RUN=1: every GPU run's config, composed and validated by verl ----------------------------------------


@pytest.mark.verl
@pytest.mark.timeout(900)
def test_dry_run_composes_and_validates_every_gpu_run(tmp_path):
    result = run_smoke("--workdir", str(tmp_path), timeout=900, DRY_RUN="1", SMOKE_GPUS="2")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("maspo_dp1", "vanilla_dp1", "maspo_dp2", "maspo_offpolicy"):
        log = (tmp_path / "logs" / f"{name}.dry_run.log").read_text()
        assert "DRY RUN OK" in log and "refused" not in log, log
    # the composed config of the two-GPU run: the production path, not a CPU or eager substitute
    line = [
        line
        for line in (tmp_path / "logs" / "maspo_dp2.dry_run.log").read_text().splitlines()
        if "verl.trainer.main_ppo" in line
    ][0]
    config = composed(f"[maspo] command:\n{line}\n")
    report = dry_run(config)
    rollout, model = config.actor_rollout_ref.rollout, config.actor_rollout_ref.model
    assert (rollout.name, rollout.tensor_model_parallel_size, rollout.enforce_eager) == ("vllm", 1, False)
    assert model.use_remove_padding and "attn_implementation" not in (model.get("override_config") or {})
    assert config.actor_rollout_ref.actor.use_dynamic_bsz and config.actor_rollout_ref.actor.strategy.startswith("fsdp")
    assert (config.trainer.device, report.n_gpus) == ("cuda", 2)
    assert model.path == "Qwen/Qwen2.5-0.5B-Instruct"
    assert config.actor_rollout_ref.actor.policy_loss.loss_mode == "maspo"


# ---- REHEARSE=cpu: the script's stages on CPU, the verdict active -------------------------------------------


# Three verl trainings on CPU: 29.5 min measured on the 2-core box under heavy load (load average ~17)
@pytest.mark.training(minutes=8)
@pytest.mark.timeout(3600)
def test_cpu_rehearsal_runs_every_stage_and_its_verdict_catches_a_doctored_run(tmp_path):
    ray_tmp = Path("/tmp") / f"ray_smoke_{os.getpid()}"
    env = {"REHEARSE": "cpu", "RAY_TMPDIR": str(ray_tmp), "SMOKE_LOSS_TOKENS": "65536"}
    try:
        result = run_smoke("--workdir", str(tmp_path), timeout=3500, **env)
    finally:
        subprocess.run(["rm", "-rf", str(ray_tmp)], check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "smoke_result.json").read_text())
    assert report["passed"]
    names = [c["name"] for c in report["checks"]]
    assert "maspo_offpolicy: the gate acts at step 3" in names
    assert all(len(run["seconds_per_step"]) >= 1 for run in report["runs"].values())
    loss = json.loads((tmp_path / "loss_check.json").read_text())
    assert loss["custom_autograd_checked"] and all(c["passed"] for c in loss["checks"])

    # the same verdict on a copy of the run whose on-policy MASPO loss is doubled: it must fail
    runs = {name: tmp_path / "runs" / "smoke" / name / "metrics.jsonl" for name in report["runs"]}
    steps = smoke.load_metrics(runs["maspo_dp1"])
    first = min(s for s, m in steps.items() if "actor/pg_loss" in m)
    steps[first]["actor/pg_loss"] = 2 * steps[first]["actor/pg_loss"] + 0.05
    runs["maspo_dp1"] = write_metrics(tmp_path / "doctored" / "maspo_dp1.jsonl", steps)
    checks, _ = smoke.check_runs(runs)
    assert "maspo_dp1: on-policy loss = -token-mean advantage" in failed(checks)

"""REHEARSE=cpu: an experiment script's own config runs in verl's trainer on CPU, changed only by
an allow-listed, printed substitution; its outputs land where a real run's do and feed the Pass@k
table and the plot; a killed rehearsal resumes from its checkpoint with its metrics kept.

The substitution check runs for every experiment script (in process: Hydra only). The MASPO
script is rehearsed end to end, killed after its first checkpoint and rerun with the same command
(~1.5 min a run on 2 cores). verl's vanilla loss runs end to end in tests/test_compare.py; each
of our losses (MASPO, DAC, BAPO) runs through verl's actor update in tests/test_cpu_actor.py. Every script:
`python -m maspo_verl.sandbox.rehearse all` (docs/experiments.md, with its measured time).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_run_scripts import RUN_SCRIPTS, composed, printed_main_ppo_args, run_script

from maspo_verl.experiments.evaluation.pass_at_k import BENCHMARK_ORDER
from maspo_verl.experiments.evaluation.plot import load_log
from maspo_verl.sandbox import rehearse

pytestmark = pytest.mark.kind("verl")

SINGLE_NODE_SCRIPTS = rehearse.experiment_scripts()
MUST_CHANGE = {
    "actor_rollout_ref.model.path",
    "actor_rollout_ref.rollout.name",
    "trainer.device",
    "data.train_batch_size",
    "trainer.total_training_steps",
    "actor_rollout_ref.rollout.val_kwargs.n",
}


def _script_id(path: Path) -> str:
    return str(path.relative_to(RUN_SCRIPTS))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("script", SINGLE_NODE_SCRIPTS, ids=_script_id)
def test_the_substitution_touches_only_allow_listed_keys(script, tmp_path):
    env = {"DATA_DIR": str(tmp_path / "data"), "OUTPUT_DIR": str(tmp_path / "out")}
    real = run_script(script, **env)
    rehearsal = run_script(script, REHEARSE="cpu", **env)
    assert real.returncode == 0 and rehearsal.returncode == 0, real.stderr + rehearsal.stderr
    diff = rehearse.substitution_diff(composed(real.stdout), composed(rehearsal.stdout))
    assert rehearse.disallowed_keys(diff) == [], rehearse.format_diff(diff)
    changed = {key for key, _, _ in diff}
    assert MUST_CHANGE <= changed
    for kept in (
        "actor_rollout_ref.actor.policy_loss",
        "algorithm.",
        "reward.custom_reward_function",
        "trainer.logger",
        "trainer.resume_mode",
        "trainer.save_freq",
    ):
        assert not [key for key in changed if key.startswith(kept)], kept


def test_a_change_outside_the_allow_list_is_refused_and_named(tmp_path, capsys):
    script = RUN_SCRIPTS / "1.5b" / "maspo.sh"
    env = {"DATA_DIR": str(tmp_path / "data")}
    real_args = printed_main_ppo_args(run_script(script, **env).stdout)
    rehearsal_args = printed_main_ppo_args(run_script(script, REHEARSE="cpu", **env).stdout)
    assert (
        rehearse.main(
            [
                "preflight",
                "--inputs",
                str(tmp_path),
                "--no-prepare",
                "--real",
                *real_args,
                "--rehearsal",
                *rehearsal_args,
            ]
        )
        == 0
    )
    capsys.readouterr()
    sneaked = [
        *rehearsal_args,
        "actor_rollout_ref.actor.policy_loss.loss_mode=vanilla",
        "actor_rollout_ref.actor.optim.lr=1e-3",
    ]
    status = rehearse.main(
        ["preflight", "--inputs", str(tmp_path), "--no-prepare", "--real", *real_args, "--rehearsal", *sneaked]
    )
    captured = capsys.readouterr()
    assert status == 1
    assert "actor_rollout_ref.actor.policy_loss.loss_mode" in captured.err
    assert "actor_rollout_ref.actor.optim.lr" in captured.err
    assert "NOT ALLOWED" in captured.out


@pytest.mark.unit
def test_allow_list_kinds():
    assert rehearse.substitution_kind("ray_kwargs.ray_init.num_cpus") == "devices and GPU counts"
    assert rehearse.substitution_kind("actor_rollout_ref.rollout.val_kwargs.n") == "validation samples and frequency"
    for key in (
        "actor_rollout_ref.rollout.val_kwargs.temperature",
        "trainer.save_freq",
        "actor_rollout_ref.actor.optim.lr",
        "data.prompt_key",
    ):
        assert rehearse.substitution_kind(key) is None, key


def test_inputs_come_from_the_fixtures_through_the_data_pipeline(tmp_path):
    paths = rehearse.prepare_inputs(tmp_path)
    assert (paths["model"] / "config.json").is_file() and (paths["model"] / "tokenizer_config.json").is_file()
    for name in ("dapo_math", *BENCHMARK_ORDER):
        rows = pq.read_table(paths["data"] / f"{name}.parquet").to_pylist()
        assert rows and {row["data_source"] for row in rows} == {name}
        assert all(row["prompt"][0]["content"].endswith("within \\boxed{}.") for row in rows)
    train = pq.read_table(paths["data"] / "dapo_math.parquet").to_pylist()
    assert len(train) == 8, "DAPO-Math-17k repeats each problem: the pipeline keeps one copy"
    assert "Answer:" not in train[0]["prompt"][0]["content"]
    amc = pq.read_table(paths["data"] / "amc23.parquet").to_pylist()
    assert amc[0]["reward_model"]["ground_truth"] == "27"
    olympiad = pq.read_table(paths["data"] / "olympiadbench.parquet").to_pylist()
    assert olympiad[0]["reward_model"]["ground_truth"] == "22"
    with pytest.raises(FileNotFoundError, match="rehearsal fixtures missing"):
        rehearse.prepare_inputs(tmp_path / "other", fixtures_dir=tmp_path / "nowhere")


# ---------------------------------------------------------------- end-to-end rehearsals (slow)


def _ray_processes(marker: str) -> list[int]:
    """Pids of processes whose command line names this test's Ray temp dir (started by this test)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.fixture
def rehearsal_env(tmp_path, tmp_path_factory):
    ray_dir = Path(tempfile.mkdtemp(prefix="mr", dir="/tmp"))  # Ray's socket paths must stay < 108 bytes
    env = {
        **os.environ,
        "REHEARSE": "cpu",
        "PYTHON": sys.executable,
        "OUTPUT_DIR": str(tmp_path / "out"),
        "REHEARSAL_DIR": str(tmp_path_factory.getbasetemp() / "rehearsal_inputs"),
        "RAY_TMPDIR": str(ray_dir),
    }
    started: list[subprocess.Popen] = []
    yield env, started
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    for pid in _ray_processes(str(ray_dir)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(ray_dir, ignore_errors=True)


def _start(script: str, env: dict, started: list, log: Path, *args: str) -> subprocess.Popen:
    handle = open(log, "w")  # noqa: SIM115  (closed with the process)
    process = subprocess.Popen(
        ["bash", str(RUN_SCRIPTS / script), *args],
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    started.append(process)
    return process


def _run(script: str, env: dict, started: list, log: Path, timeout: float = 1500) -> str:
    process = _start(script, env, started, log)
    process.wait(timeout=timeout)
    output = log.read_text()
    assert process.returncode == 0, output[-6000:]
    return output


def _check_outputs(run_dir: Path, output: str, loss_metric: str) -> list[dict]:
    assert "[rehearse] substitution" in output and "actor_rollout_ref.rollout.name: vllm -> hf_cpu" in output
    dumps = sorted(int(p.stem) for p in (run_dir / "val_generations").glob("*.jsonl"))
    assert dumps and dumps[-1] == 2, dumps
    records = [json.loads(line) for line in (run_dir / "val_generations" / "2.jsonl").read_text().splitlines()]
    assert {record["data_source"] for record in records} == set(BENCHMARK_ORDER)
    assert {"acc", "pred", "score"} <= set(records[0])
    table = (run_dir / "pass_at_k.md").read_text()
    assert "Avg@2 / Pass@2" in table
    for title in ("AIME24", "AIME25", "AMC23", "MATH500", "Minerva", "Olympiad"):
        assert title in table
    assert (run_dir / "training_dynamics.png").stat().st_size > 1000
    assert (run_dir / "checkpoints" / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
    series = load_log(str(run_dir / "metrics.jsonl"))
    assert [step for step, _ in series["critic/score/mean"]] == [1, 2]
    assert loss_metric in series
    assert any(key.startswith("val-core/aime24/acc/mean@2") for key in series)
    return records


@pytest.mark.training(minutes=3)
@pytest.mark.timeout(2400)
def test_rehearsal_of_the_maspo_script_runs_it_end_to_end_and_resumes_when_killed(rehearsal_env, tmp_path):
    """1.5b/maspo.sh rehearsed on CPU, killed (SIGKILL, as a preempted job) after its step-1 checkpoint,
    then rerun with the same command: it resumes at step 2 and leaves a real run's outputs."""
    env, started = rehearsal_env
    env = {**env, "SAVE_FREQ": "1"}
    run_dir = tmp_path / "out" / "maspo" / "maspo-r1-distill-1.5b"
    latest = run_dir / "checkpoints" / "latest_checkpointed_iteration.txt"
    process = _start("1.5b/maspo.sh", env, started, tmp_path / "log1")
    deadline = time.monotonic() + 1500
    metrics = run_dir / "metrics.jsonl"

    def step_one_logged() -> bool:
        # verl saves step N's checkpoint before it logs step N's metrics: wait for both
        if not (latest.is_file() and latest.read_text().strip() == "1" and metrics.is_file()):
            return False
        for line in metrics.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line being written
                continue
            if record["step"] == 1 and "critic/score/mean" in record["data"]:
                return True
        return False

    # The kill must land between step 1's log line and step 2's checkpoint, under a second on CPU
    # now: poll often (a poll reads two small files).
    while not step_one_logged():
        assert process.poll() is None, (
            "the run ended before it could be killed after step 1:\n" + (tmp_path / "log1").read_text()[-6000:]
        )
        assert time.monotonic() < deadline, "no checkpoint after 25 minutes"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # as a preempted job: no clean shutdown
    process.wait(timeout=60)
    first = load_log(str(run_dir / "metrics.jsonl"))
    assert [step for step, _ in first["critic/score/mean"]] == [1]

    output = _run("1.5b/maspo.sh", env, started, tmp_path / "log2")
    assert "kept the metrics logged so far as" in output
    assert (run_dir / "metrics.part1.jsonl").is_file()
    assert "global_step_1" in output  # verl: "Load from checkpoint folder: .../global_step_1"
    resumed = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert resumed["step"] == 2
    # the new file holds only what the resumed run logged; the plot reads both parts
    assert 1 not in [
        json.loads(line)["step"]
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        if "critic/score/mean" in json.loads(line)["data"]
    ]
    _check_outputs(run_dir, output, "actor/maspo/gate_weight_mean")

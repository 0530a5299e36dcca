"""benchmarks/bench_cpu_run.py's pure parts: phases from stamped lines, finding a run's Ray workers,
summarizing py-spy's raw stacks. (The benchmark itself trains; it is run by hand, not in the suite.)"""

import importlib.util
import math
import os
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.kind("unit")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_cpu_run.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_cpu_run", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_phase_times_split_the_run_at_verls_lines(bench):
    events = [
        (2.0, "2026-12-02 INFO worker.py:2038 -- Started a local Ray instance."),
        (30.0, "(TaskRunnerV1 pid=1) Initial validation metrics: {...}"),
        (33.0, "(TaskRunnerV1 pid=1) step:1 - actor/entropy:0.4"),
        (36.0, "(TaskRunnerV1 pid=1) step:2 - actor/entropy:0.4"),
    ]
    phases = bench.phase_times(events, exit_seconds=40.0)
    assert phases == {"start": 2.0, "workers+val0": 28.0, "steps": 6.0, "teardown": 4.0, "total": 40.0}


def test_phase_times_mark_a_missing_phase_as_nan(bench):
    phases = bench.phase_times([(1.0, "Started a local Ray instance")], exit_seconds=5.0)
    assert phases["start"] == 1.0 and math.isnan(phases["workers+val0"]) and math.isnan(phases["steps"])


def test_summarize_profile_ranks_functions_by_inclusive_share_of_the_window(bench):
    raw = "\n".join(
        [
            "Thread.run (threading.py:982);AgentLoopWorker._run_agent_loop (verl/agent_loop.py:683);"
            "instantiate (hydra/x.py:1) 30",
            "Thread.run (threading.py:982);AgentLoopWorker._run_agent_loop (verl/agent_loop.py:683) 10",
            "Thread.run (threading.py:982);_compute_score (verl/agent_loop.py:1026) 20",
            "",
        ]
    )
    busy, functions = bench.summarize_profile(raw, window_samples=100, top=3)
    assert busy == pytest.approx(0.6)
    assert functions[0] == ("AgentLoopWorker._run_agent_loop (verl/agent_loop.py:683)", pytest.approx(0.4))
    assert [name for name, _ in functions[1:]] == [
        "instantiate (hydra/x.py:1)",
        "_compute_score (verl/agent_loop.py:1026)",
    ]
    assert all("threading.py" not in name for name, _ in functions)  # generic frames are not ranked


def test_summarize_profile_of_nothing_is_idle(bench):
    assert bench.summarize_profile("", window_samples=500) == (0.0, [])


@pytest.mark.kind("verl")  # starts stand-in worker processes
def test_run_worker_processes_finds_only_the_marked_runs_workers(bench, tmp_path):
    marker = "bench-test-marker"
    env_marked = {**os.environ, "MASPO_BENCH_RUN": marker}
    env_other = {**os.environ, "MASPO_BENCH_RUN": "another-run"}
    # bash's `exec -a` sets the command line a Ray worker shows ("ray::ActorName")
    marked = subprocess.Popen(["bash", "-c", "exec -a ray::AgentLoopWorkerTQ sleep 30"], env=env_marked)
    other = subprocess.Popen(["bash", "-c", "exec -a ray::HfCpuServer sleep 30"], env=env_other)
    idle = subprocess.Popen(["bash", "-c", "exec -a ray::IDLE sleep 30"], env=env_marked)
    try:
        deadline = time.time() + 10
        found = {}
        while time.time() < deadline and "AgentLoopWorkerTQ" not in found:
            found = bench.run_worker_processes(marker)
            time.sleep(0.1)
        assert found == {"AgentLoopWorkerTQ": [marked.pid]}
    finally:
        for process in (marked, other, idle):
            process.kill()
            process.wait()


def test_process_roles_name_the_actor_a_worker_became_and_rays_own_processes(bench):
    role = bench.process_role
    assert role("ray::TaskRunnerV1.run") == "TaskRunnerV1"
    assert role("ray::HfCpuServer") == "HfCpuServer"
    assert (
        role("ray::IDLE")
        == role("/x/python /x/ray/_private/workers/default_worker.py --node-ip-address=1")
        == (bench.UNUSED_WORKERS)
    )
    assert role("ray::DashboardAgent") == "Ray: dashboard agent"
    assert role("/x/python -m verl.trainer.main_ppo --config-name=maspo") == "driver (python -m verl.trainer.main_ppo)"
    raylet = "/x/ray/core/src/ray/raylet/raylet --raylet_socket_name=/tmp/r --python_worker_command=/x/python "
    assert role(raylet + "/x/ray/_private/workers/setup_worker.py /x/ray/_private/workers/default_worker.py") == (
        "Ray: raylet"
    ), "the raylet's flags name the worker script; the raylet is not a worker"
    assert role("/x/python -u /x/ray/_private/log_monitor.py --session-dir=/tmp/r") == "Ray: log monitor"
    assert role("/x/python /x/ray/dashboard/dashboard.py --host=127.0.0.1") == "Ray: dashboard"
    assert role("bash /x/train_cpu.sh a=b") == "bash" and role("") == "?" and role("ray::") == "?"


def test_cpu_seconds_split_at_the_step_0_validation_per_role(bench):
    samples = {
        1: {"role": "WorkerDict", "cpu": 30.0},
        2: {"role": "WorkerDict", "cpu": 5.0},  # started after the split
        3: {"role": "TaskRunnerV1", "cpu": 12.0},
    }
    split = {1: 10.0, 3: 12.0}
    assert bench.cpu_seconds_by_role(samples, split) == {"WorkerDict": (10.0, 25.0), "TaskRunnerV1": (12.0, 0.0)}
    assert bench.cpu_seconds_by_role(samples, None) == {"WorkerDict": (35.0, 0.0), "TaskRunnerV1": (12.0, 0.0)}


@pytest.mark.kind("verl")  # starts stand-in worker processes
def test_the_cpu_account_reads_only_the_marked_runs_processes_under_their_last_name(bench):
    marker = "bench-cpu-marker"
    busy = "for ((i = 0; i < 200000; i++)); do :; done; exec -a ray::WorkerDict sleep 30"  # ~0.5 s of CPU
    marked = subprocess.Popen(["bash", "-c", busy], env={**os.environ, "MASPO_BENCH_RUN": marker})
    other = subprocess.Popen(["bash", "-c", busy], env={**os.environ, "MASPO_BENCH_RUN": "another-run"})
    try:
        with bench.CpuAccount(marker, interval=0.1) as account:
            deadline = time.time() + 15
            while time.time() < deadline and "WorkerDict" not in [v["role"] for v in account.samples.values()]:
                time.sleep(0.1)
            account.split()
            marked.kill()  # not waited for: a zombie, whose command line reads empty
            time.sleep(0.5)
        assert [pid for pid, _ in account.samples] == [marked.pid], "only the marked run's process"
        sample = next(iter(account.samples.values()))
        assert sample["role"] == "WorkerDict", "named after what it became, also once it exited"
        rows = bench.cpu_seconds_by_role(account.samples, account.split_at)
        assert rows["WorkerDict"][0] >= 0.1, f"the busy loop's CPU counts before the split: {rows}"
        assert "all processes of the run" in account.report()[-1] and account.errors == 0
    finally:
        for process in (marked, other):
            process.kill()
            process.wait()


def test_profile_flag_needs_more_steps_than_its_start(bench, capsys):
    if bench.shutil.which("py-spy") is None:
        with pytest.raises(SystemExit):
            bench.main(["--profile", "5", "--steps", "10"])
        assert "needs py-spy" in capsys.readouterr().err
    else:
        with pytest.raises(SystemExit):
            bench.main(["--profile", "5", "--steps", "2"])
        assert "give --steps > 3" in capsys.readouterr().err

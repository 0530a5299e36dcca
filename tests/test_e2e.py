"""maspo_verl.sandbox.runner.run_cpu_training without verl: a stand-in script shows the retry of a run whose Ray
node timed out during start-up, and that every other failure is reported as it is, once."""

from pathlib import Path

import pytest

from maspo_verl.sandbox.runner import RAY_NODE_START_TIMEOUT, RENDEZVOUS_PORT_TAKEN, run_cpu_training

pytestmark = pytest.mark.kind("verl")  # a stand-in script runs as a subprocess

FLAKY_SCRIPT = """#!/usr/bin/env bash
# Fails like ray.init on an overloaded box for the first $FAIL_TIMES calls, then "trains".
count_file="$WORK_DIR/calls"
calls=$(( $(cat "$count_file" 2>/dev/null || echo 0) + 1 ))
echo "$calls" > "$count_file"
if (( calls <= FAIL_TIMES )); then
  echo "Exception: {message}. This could happen because some of the raylet failed to startup"
  exit 1
fi
if [[ -n "${{OTHER_FAILURE:-}}" ]]; then echo "ValueError: a bad config"; exit 3; fi
echo '{{"step": 1, "data": {{"timing_s/step": 1.0}}}}' > "$VERL_FILE_LOGGER_PATH"
echo "step:1 - done"
"""


@pytest.fixture(
    params=[RAY_NODE_START_TIMEOUT, f"DistNetworkError: port: 39839, code: -98, name: {RENDEZVOUS_PORT_TAKEN}"]
)
def flaky_script(tmp_path, request) -> Path:
    script = tmp_path / "flaky.sh"
    script.write_text(FLAKY_SCRIPT.format(message=request.param))
    return script


def _calls(workdir: Path) -> int:
    return int((workdir / "calls").read_text())


def test_a_run_whose_ray_node_did_not_start_is_started_again_and_its_log_kept(tmp_path, flaky_script, capsys):
    workdir = tmp_path / "run"
    summary = run_cpu_training(workdir, steps=1, timeout=60, env={"FAIL_TIMES": "2"}, script=flaky_script)
    assert summary.return_code == 0 and summary.training_steps == [1]
    assert _calls(workdir) == 3
    assert "step:1 - done" in (workdir / "train.log").read_text()
    for attempt in (1, 2):
        assert "This could happen" in (workdir / f"train.log.ray-start-{attempt}").read_text()
    assert "starting the run again (2/3)" in capsys.readouterr().err


def test_a_start_up_message_after_training_began_is_not_retried(tmp_path):
    script = tmp_path / "late.sh"
    script.write_text(f"""#!/usr/bin/env bash
echo x >> "$WORK_DIR/calls"
echo "step:1 - training"
echo "{RENDEZVOUS_PORT_TAKEN}"
exit 1
""")
    summary = run_cpu_training(tmp_path / "run", steps=1, timeout=60, script=script)
    assert summary.return_code == 1 and (tmp_path / "run" / "calls").read_text().count("x") == 1


def test_the_retries_are_bounded_and_the_last_failure_is_returned(tmp_path, flaky_script):
    workdir = tmp_path / "run"
    summary = run_cpu_training(workdir, steps=1, timeout=60, env={"FAIL_TIMES": "9"}, script=flaky_script)
    assert summary.return_code == 1 and _calls(workdir) == 3
    assert "This could happen" in summary.log_path.read_text()


def test_any_other_failure_is_not_retried(tmp_path, flaky_script):
    workdir = tmp_path / "run"
    summary = run_cpu_training(
        workdir, steps=1, timeout=60, env={"FAIL_TIMES": "0", "OTHER_FAILURE": "1"}, script=flaky_script
    )
    assert summary.return_code == 3 and _calls(workdir) == 1
    assert not list(workdir.glob("train.log.ray-start-*"))


def test_on_a_verl_the_cpu_backend_does_not_support_it_fails_naming_the_versions_before_starting(
    tmp_path, monkeypatch, capsys
):
    import maspo_verl.sandbox.runner as e2e

    monkeypatch.setattr("maspo_verl.integration.versions.installed_verl_version", lambda: "0.8.0")
    monkeypatch.setattr(e2e, "_run_cpu_training_once", lambda *args, **kwargs: pytest.fail("a run was started"))
    assert e2e.main(["--steps", "1", "--workdir", str(tmp_path / "run")]) == 1
    out = capsys.readouterr().out
    assert "e2e: FAIL - the CPU backend (maspo_verl.patches) was written and tested for verl 0.9.0" in out
    assert "the installed verl is 0.8.0" in out
    assert not (tmp_path / "run").exists()

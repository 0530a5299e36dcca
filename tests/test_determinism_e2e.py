"""Paired runs (issue 10): two verl trainings of one seed with different loss modes sample the same.

Two real `python -m verl.trainer.main_ppo` runs on CPU (maspo_verl.e2e.run_cpu_training, one
step each: ~1.5 min each on an idle 2-core box, 5 min when it is shared), loss modes `maspo` and `vanilla`, with the hf_cpu
rollout's `hf_cpu_single_turn_agent` agent loop. Validation happens before any update and the
step-1 rollout uses the same initial weights, so every response there must be the same in both
runs: same (prompt, session, response, score) in the step-0 validation dumps, same validation
accuracy, same step-1 reward and response length.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

AGENT_LOOP_OVERRIDE = "actor_rollout_ref.rollout.agent.default_agent_loop=hf_cpu_single_turn_agent"
VAL_N = 4


def _validation_records(dump: Path) -> list[tuple]:
    """(prompt, session id, response, score) of every validation sample, sorted (verl's dump order is arrival order)."""
    records = []
    for line in dump.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            session = str(record["uid"]).rsplit("_", 2)[1]  # verl's key: {uid}_{session_id}_{index}
            records.append((record["input"], session, record["output"], record["score"]))
    return sorted(records)


@pytest.fixture(scope="module")
def paired_runs(tmp_path_factory):
    from maspo_verl.e2e import run_cpu_training

    runs = {}
    for loss_mode in ("maspo", "vanilla"):
        workdir = tmp_path_factory.mktemp(f"paired_{loss_mode}")
        summary = run_cpu_training(
            workdir,
            steps=1,
            timeout=900,
            env={"LOSS_MODE": loss_mode, "VAL_N": str(VAL_N)},
            overrides=[
                AGENT_LOOP_OVERRIDE,
                "actor_rollout_ref.rollout.val_kwargs.do_sample=true",
                "actor_rollout_ref.rollout.val_kwargs.temperature=1.0",
                f"trainer.validation_data_dir={workdir / 'val_generations'}",
            ],
        )
        assert summary.return_code == 0, f"{loss_mode} run failed; see {summary.log_path}"
        runs[loss_mode] = (workdir, summary)
    return runs


@pytest.mark.timeout(2000)
def test_two_loss_modes_of_one_seed_sample_identically_before_their_first_update(paired_runs):
    (maspo_dir, maspo), (vanilla_dir, vanilla) = paired_runs["maspo"], paired_runs["vanilla"]

    maspo_val = _validation_records(maspo_dir / "val_generations" / "0.jsonl")
    vanilla_val = _validation_records(vanilla_dir / "val_generations" / "0.jsonl")
    assert len(maspo_val) == len(vanilla_val) > 0 and len({record[1] for record in maspo_val}) == VAL_N
    assert maspo_val == vanilla_val, "step-0 validation responses differ between loss modes"
    responses_per_prompt: dict[str, set] = {}
    for prompt, _, response, _ in maspo_val:
        responses_per_prompt.setdefault(prompt, set()).add(response)
    assert any(len(responses) > 1 for responses in responses_per_prompt.values()), "validation did not sample"

    assert maspo.validation[0] and maspo.validation[0] == vanilla.validation[0]
    for key in ("critic/score/mean", "response_length/mean"):
        assert maspo.metrics_by_step[1][key] == vanilla.metrics_by_step[1][key], f"step-1 rollouts differ in {key}"
    for summary in (maspo, vanilla):  # the server's one-time warning when a request brings no sample index
        assert "without sample_index" not in summary.log_path.read_text(errors="replace")
    # the loss modes did differ: the update is not the same
    assert maspo.maspo_metric_keys() and not vanilla.maspo_metric_keys()

"""verl settings around a loss of ours (maspo_verl.integration.loss_guard): the one that replaces it is refused
and each that changes it is said in one line naming the verl key, by `check`, by DRY_RUN and by verl's own
driver; a mirrored verl key this verl lacks fails naming it. Which loss verl's workers run in bypass mode
was settled by training (tests/test_loss_guard_run.py)."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from maspo_verl import cli
from maspo_verl.integration import loss_guard
from maspo_verl.integration.loss_guard import (
    ABSENT,
    TRAINER_SETTING_KEYS,
    MissingVerlKeyError,
    loss_path_findings,
    loss_replacing_settings,
    trainer_settings_of,
)

pytestmark = pytest.mark.kind("verl")

ROOT = Path(__file__).resolve().parents[1]
POLICY_LOSS = "actor_rollout_ref.actor.policy_loss"
DISTILLATION = "distillation.distillation_loss"


def _legacy_trainer() -> list[str]:
    """verl's legacy trainer; verl 0.8 has only that one and no trainer.use_v1 key."""
    return ["trainer.use_v1=false"] if loss_guard._verl_has_v1_trainer() else []


@pytest.fixture(scope="module")
def verl_defaults() -> dict:
    """The mirrored settings of configs/maspo.yaml as composed over this verl's ppo_trainer, unchanged."""
    return trainer_settings_of(cli.compose_trainer_config("maspo"))


def _findings(defaults: dict, loss_mode: str = "maspo", **changes) -> tuple[list[str], list[str]]:
    return loss_path_findings(loss_mode, {**defaults, **changes})


def _one_note_starting(notes: list[str], start: str) -> str:
    matching = [note for note in notes if note.startswith(start)]
    assert len(matching) == 1, (start, notes)
    return matching[0]


@pytest.mark.unit
def test_verl_defaults_under_maspo_yaml_are_neither_refused_nor_noted(verl_defaults):
    absent = [name for name, value in verl_defaults.items() if value == ABSENT]
    assert absent == ([] if loss_guard._verl_has_v1_trainer() else ["use_v1"])  # verl 0.8: no V1 trainer
    assert _findings(verl_defaults) == ([], [])
    # the GRPO variant that always divides by the group's std is GRPO's scale too
    assert _findings(verl_defaults, adv_estimator="grpo_vectorized") == ([], [])


# (changed settings, the one note's beginning, words the note must hold)
NOTES = [
    (
        {"rollout_correction_bypass_mode": True, "use_v1": False},
        "algorithm.rollout_correction.bypass_mode=true: maspo still runs in the workers (the legacy trainer's",
        ["driver's copy of the config only", "in place of old_log_probs", "p_old", "loss_type is not used"],
    ),
    (
        {"rollout_correction_bypass_mode": True, "use_v1": True},
        "algorithm.rollout_correction.bypass_mode=true: maspo still runs in the workers, but",
        ["in place of old_log_probs", "sigma_base / p_old^alpha", "r = pi_theta / p_old"],
    ),
    (
        {"rollout_correction_bypass_mode": True, "rollout_is": "token"},
        "algorithm.rollout_correction.rollout_is=token with bypass_mode=true:",
        ["importance weights only in decoupled mode", "runs without them"],
    ),
    (
        {"rollout_correction_bypass_mode": True, "rollout_rs": "seq_mean_k3"},
        "algorithm.rollout_correction.rollout_rs=seq_mean_k3 with bypass_mode=true:",
        ["rejection sampling only in decoupled mode", "runs without them"],
    ),
    (
        {"rollout_is": "sequence"},
        "algorithm.rollout_correction.rollout_is=sequence: verl multiplies maspo's per-token loss",
        ["importance weights", "rollout_is_threshold"],
    ),
    (
        {"rollout_rs": "token_k1"},
        "algorithm.rollout_correction.rollout_rs=token_k1: verl's rejection sampling",
        ["from response_mask"],
    ),
    (
        {"use_kl_loss": True},
        "actor_rollout_ref.actor.use_kl_loss=true: verl adds actor_rollout_ref.actor.kl_loss_coef",
        ["reference policy"],
    ),
    (
        {"entropy_coeff": 0.001},
        "actor_rollout_ref.actor.entropy_coeff=0.001: verl subtracts 0.001 x the aggregated token entropy",
        ["maspo's loss"],
    ),
    (
        {"adv_estimator": "rloo"},
        "algorithm.adv_estimator=rloo: maspo gets rloo's advantages",
        ["beta_pos/beta_neg", "adv_low/adv_high"],
    ),
    (
        {"norm_adv_by_std_in_grpo": False},
        "algorithm.norm_adv_by_std_in_grpo=false: GRPO's advantages are not divided by the group's reward std",
        ["beta_pos/beta_neg", "adv_low/adv_high"],
    ),
    (
        {
            "distillation_enabled": True,
            "distillation_use_task_rewards": True,
            "distillation_use_policy_gradient": False,
        },
        "distillation.enabled=true with distillation.distillation_loss.use_policy_gradient=false: verl adds",
        ["supervised term"],
    ),
    (
        {"distillation_enabled": True, "distillation_use_task_rewards": True, "distillation_use_policy_gradient": True},
        "distillation.enabled=true with distillation.distillation_loss.use_policy_gradient=true: verl adds",
        ["vanilla PPO loss", "negative distillation loss as advantages"],
    ),
]


@pytest.mark.unit
@pytest.mark.parametrize("changes, start, words", NOTES, ids=[start.split(":")[0][:60] for _, start, _ in NOTES])
def test_each_setting_that_changes_the_loss_is_one_note_naming_its_key(verl_defaults, changes, start, words):
    refusals, notes = _findings(verl_defaults, **changes)
    assert refusals == []
    note = _one_note_starting(notes, start)
    assert all(word in note for word in words), note
    assert "\n" not in note


@pytest.mark.unit
def test_norm_adv_by_std_matters_only_for_grpo_and_bypass_drops_the_decoupled_notes(verl_defaults):
    # another estimator's scale is its own: one note, about the estimator
    _, notes = _findings(verl_defaults, adv_estimator="rloo", norm_adv_by_std_in_grpo=False)
    assert [n.split(":")[0] for n in notes] == ["algorithm.adv_estimator=rloo"]
    # in bypass mode verl applies no IS weights: no note says it multiplies them in
    _, notes = _findings(verl_defaults, rollout_correction_bypass_mode=True, rollout_is="token")
    assert not any("verl multiplies" in note for note in notes)
    # entropy_coeff 0 in either spelling adds nothing
    assert _findings(verl_defaults, entropy_coeff=0.0) == ([], [])


@pytest.mark.unit
def test_only_what_stops_the_loss_from_training_is_refused(verl_defaults):
    refusals, _ = _findings(verl_defaults, distillation_enabled=True, distillation_use_task_rewards=False)
    assert len(refusals) == 1
    assert refusals[0].startswith(
        "distillation.enabled=true with distillation.distillation_loss.use_task_rewards=false: verl's "
        "distillation_ppo_loss sets the policy loss to 0"
    )
    refusals, _ = _findings(verl_defaults, "dac", distillation_enabled=True, distillation_policy_loss_mode="maspo")
    assert len(refusals) == 1 and refusals[0].startswith("distillation.distillation_loss.policy_loss_mode=maspo")
    assert "NotImplementedError" in refusals[0] and "policy_loss_mode=vanilla" in refusals[0]
    # bypass mode, on either trainer, is a note, not a refusal
    for use_v1 in (True, False):
        refusals, notes = _findings(verl_defaults, rollout_correction_bypass_mode=True, use_v1=use_v1)
        assert refusals == [] and len(notes) == 1


@pytest.mark.unit
def test_a_mirrored_key_this_verl_lacks_raises_naming_the_verl_key(verl_defaults, monkeypatch):
    with pytest.raises(MissingVerlKeyError, match=r"\['algorithm.rollout_correction.bypass_mode'\]"):
        _findings(verl_defaults, rollout_correction_bypass_mode=ABSENT)
    with pytest.raises(
        MissingVerlKeyError, match=r"\['actor_rollout_ref.actor.entropy_coeff', 'distillation.enabled'\]"
    ):
        _findings(verl_defaults, entropy_coeff=ABSENT, distillation_enabled=ABSENT)
    # trainer.use_v1 is absent by design only from a verl without a V1 trainer (0.8): the legacy trainer
    monkeypatch.setattr(loss_guard, "_verl_has_v1_trainer", lambda: True)
    with pytest.raises(MissingVerlKeyError, match=r"\['trainer.use_v1'\]"):
        _findings(verl_defaults, use_v1=ABSENT)
    monkeypatch.setattr(loss_guard, "_verl_has_v1_trainer", lambda: False)
    _, notes = _findings(verl_defaults, use_v1=ABSENT, rollout_correction_bypass_mode=True)
    assert "the legacy trainer's rollout_corr_helper.apply_bypass_mode" in notes[0]


@pytest.mark.unit
def test_a_key_deleted_from_the_composed_config_fails_in_the_guard_and_in_verls_driver():
    """A composed config without a key the yaml mirrors (as a verl that renamed it would give): the mirror reads
    `ABSENT` and both the config-level guard and the actor config verl's driver builds raise naming the key."""
    from verl.utils.config import omega_conf_to_dataclass

    cfg = cli.compose_trainer_config("maspo", ["~algorithm.rollout_correction.bypass_mode"])
    assert cfg.actor_rollout_ref.actor.policy_loss.trainer_settings.rollout_correction_bypass_mode == ABSENT
    with pytest.raises(MissingVerlKeyError, match=r"algorithm.rollout_correction.bypass_mode.*not in the composed"):
        loss_replacing_settings(cfg)
    with pytest.raises(Exception, match=r"algorithm.rollout_correction.bypass_mode.*not in the composed"):
        omega_conf_to_dataclass(cfg.actor_rollout_ref.actor.policy_loss)
    # verl's own loss mode does not depend on the guard: it builds
    cfg = cli.compose_trainer_config(
        "maspo", ["~algorithm.rollout_correction.bypass_mode", f"{POLICY_LOSS}.loss_mode=vanilla"]
    )
    assert loss_replacing_settings(cfg) == ([], [])
    assert omega_conf_to_dataclass(cfg.actor_rollout_ref.actor.policy_loss).loss_mode == "vanilla"


@pytest.mark.unit
def test_yaml_mirrors_exactly_the_keys_the_guard_reads():
    cfg = cli.compose_trainer_config(
        "maspo",
        [
            "algorithm.rollout_correction.bypass_mode=true",
            "algorithm.rollout_correction.rollout_rs=token_k1",
            "actor_rollout_ref.actor.entropy_coeff=0.01",
            "algorithm.adv_estimator=rloo",
            f"{DISTILLATION}.use_policy_gradient=true",
        ],
    )
    mirrored = OmegaConf.to_container(cfg.actor_rollout_ref.actor.policy_loss.trainer_settings, resolve=True)
    assert mirrored == trainer_settings_of(cfg)
    assert set(mirrored) == set(TRAINER_SETTING_KEYS)
    assert mirrored["rollout_rs"] == "token_k1" and mirrored["entropy_coeff"] == 0.01
    assert mirrored["adv_estimator"] == "rloo" and mirrored["distillation_use_policy_gradient"] is True


@pytest.mark.unit
def test_a_trainer_settings_block_mirroring_only_some_keys_is_refused_naming_the_rest():
    from maspo_verl import MaspoPolicyLossConfig

    partial = {"use_v1": True, "rollout_correction_bypass_mode": False}
    with pytest.raises(ValueError, match=r"policy_loss.trainer_settings lacks \['adv_estimator'"):
        MaspoPolicyLossConfig(trainer_settings=partial)


@pytest.mark.unit
def test_verls_plain_ppo_trainer_builds_our_config_without_trainer_settings_and_check_reads_it():
    """verl's own ppo_trainer with our config class: no mirror (nothing checked at build); the config-level
    guard still reads verl's keys, all present."""
    import verl
    from verl.utils.config import omega_conf_to_dataclass

    from maspo_verl.integration.hydra_config import compose

    cfg = compose(
        "ppo_trainer",
        [
            f"{POLICY_LOSS}._target_=maspo_verl.MaspoPolicyLossConfig",
            f"{POLICY_LOSS}.loss_mode=maspo",
            "algorithm.adv_estimator=grpo",
            "algorithm.rollout_correction.bypass_mode=true",
        ],
        config_path=Path(verl.__file__).parent / "trainer" / "config",
    )
    policy_loss = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor.policy_loss)
    assert policy_loss.loss_mode == "maspo" and policy_loss.trainer_settings == {}
    refusals, notes = loss_replacing_settings(cfg)
    assert refusals == [] and [n.split(":")[0] for n in notes] == ["algorithm.rollout_correction.bypass_mode=true"]


def test_verl_building_the_actor_config_refuses_and_logs_each_note_once_per_process(caplog):
    """verl's driver builds the policy-loss config from the composed tree (validate_config), and each worker
    again from its own copy: MaspoPolicyLossConfig reads the mirrored settings there."""
    from verl.utils.config import omega_conf_to_dataclass

    from maspo_verl import config as maspo_config

    cfg = cli.compose_trainer_config("maspo", ["distillation.enabled=true", f"{DISTILLATION}.use_task_rewards=false"])
    with pytest.raises(Exception, match=r"use_task_rewards=false: verl's distillation_ppo_loss sets the policy loss"):
        omega_conf_to_dataclass(cfg.actor_rollout_ref.actor.policy_loss)

    maspo_config._logged_notes.clear()
    overrides = [
        "algorithm.rollout_correction.bypass_mode=true",
        *_legacy_trainer(),
        "algorithm.adv_estimator=rloo",
    ]
    cfg = cli.compose_trainer_config("maspo", overrides)
    with caplog.at_level(logging.WARNING, logger="maspo_verl.config"):
        for _ in range(2):
            assert omega_conf_to_dataclass(cfg.actor_rollout_ref.actor.policy_loss).loss_mode == "maspo"
    logged = [r.getMessage() for r in caplog.records if r.name == "maspo_verl.config"]
    assert [m.split(":")[1].strip() for m in logged] == [
        "algorithm.rollout_correction.bypass_mode=true",
        "algorithm.adv_estimator=rloo",
    ]


def _check(capsys, overrides):
    code = cli.main(["check", *overrides])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.timeout(300)
def test_check_prints_one_note_line_per_changing_key_and_passes(capsys):
    overrides = [
        "algorithm.rollout_correction.bypass_mode=true",
        *_legacy_trainer(),
        "actor_rollout_ref.actor.use_kl_loss=true",
        "actor_rollout_ref.actor.entropy_coeff=0.001",
    ]
    code, out, err = _check(capsys, overrides)
    assert code == 0, err
    # the guard's lines (check also prints NOTE lines about the installed stack)
    guard_lines = [line for line in out.splitlines() if line.startswith("NOTE: ") and "=" in line.split(":")[1]]
    note_keys = [line.split(":")[1].strip() for line in guard_lines]
    assert note_keys == [
        "algorithm.rollout_correction.bypass_mode=true",
        "actor_rollout_ref.actor.use_kl_loss=true",
        "actor_rollout_ref.actor.entropy_coeff=0.001",
    ]
    assert out.rstrip().endswith("check: OK")


@pytest.mark.timeout(300)
def test_check_fails_on_what_stops_the_loss_and_on_a_missing_verl_key(capsys):
    for overrides, message in [
        (
            ["distillation.enabled=true", f"{DISTILLATION}.use_task_rewards=false"],
            "FAIL: distillation.enabled=true with distillation.distillation_loss.use_task_rewards=false",
        ),
        (
            ["distillation.enabled=true", f"{DISTILLATION}.policy_loss_mode=maspo"],
            "FAIL: distillation.distillation_loss.policy_loss_mode=maspo",
        ),
        (["~actor_rollout_ref.actor.use_kl_loss"], "FAIL: verl key(s) ['actor_rollout_ref.actor.use_kl_loss']"),
    ]:
        code, out, err = _check(capsys, overrides)
        assert code == 1 and message in err and out.rstrip().endswith("check: FAILED"), (overrides, out, err)
        assert err.count("FAIL: ") == 1, err


@pytest.mark.timeout(300)
def test_dry_run_of_a_paper_script_passes_legacy_bypass_mode_and_says_what_it_changes():
    env = {**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable}
    result = subprocess.run(
        [
            "bash",
            str(ROOT / "examples/run_scripts/7b/maspo.sh"),
            "algorithm.rollout_correction.bypass_mode=true",
            *_legacy_trainer(),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=280,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if "algorithm.rollout_correction.bypass_mode=true:" in line]
    assert len(lines) == 1 and "maspo still runs in the workers" in lines[0], result.stdout[-3000:]
    assert "DRY RUN OK" in result.stdout

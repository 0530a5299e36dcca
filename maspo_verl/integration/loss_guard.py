"""verl settings that replace this plugin's registered loss, or change what it receives.

verl has paths that never call the loss named by `actor_rollout_ref.actor.policy_loss.loss_mode`,
or call it with other inputs, and none of them says so:
  - `algorithm.rollout_correction.bypass_mode=true` on the legacy trainer (`trainer.use_v1=false`):
    `rollout_corr_helper.apply_bypass_mode` rewrites `policy_loss.loss_mode` to "bypass_mode";
  - the same on the V1 trainer keeps the loss but puts the rollout engine's log-probs in place of
    `old_log_probs` (v1/trainer_base.py `_compute_old_log_prob`): MASPO's p_old and ratio change;
  - distillation with `distillation_loss.use_task_rewards=false` sets the policy loss to 0
    (`distillation_ppo_loss`); its policy-gradient path accepts only `policy_loss_mode=vanilla`
    (verl/workers/config/distillation.py), with verl's NotImplementedError.
`loss_path_findings` turns these into refusals (naming the key and what to unset) and notes.
`python -m maspo_verl check` and DRY_RUN apply it to the composed config; at run time
`MaspoPolicyLossConfig` applies it to its `trainer_settings` block, which configs/maspo.yaml fills
by interpolation, so verl's driver fails when it builds the actor config, before any worker starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf

__all__ = [
    "TRAINER_SETTING_KEYS",
    "is_plugin_loss",
    "loss_path_findings",
    "loss_replacing_settings",
    "trainer_settings_of",
]

# The `trainer_settings` block of MaspoPolicyLossConfig: its key -> the verl key it mirrors.
TRAINER_SETTING_KEYS = {
    "use_v1": "trainer.use_v1",
    "rollout_correction_bypass_mode": "algorithm.rollout_correction.bypass_mode",
    "distillation_enabled": "distillation.enabled",
    "distillation_use_task_rewards": "distillation.distillation_loss.use_task_rewards",
    "distillation_use_policy_gradient": "distillation.distillation_loss.use_policy_gradient",
    "distillation_policy_loss_mode": "distillation.distillation_loss.policy_loss_mode",
}

_LOSS_MODE_KEY = "actor_rollout_ref.actor.policy_loss.loss_mode"


def trainer_settings_of(config: Any) -> dict[str, Any]:
    """The `TRAINER_SETTING_KEYS` values of a composed verl trainer config (None where verl has no such key)."""
    return {name: OmegaConf.select(config, key, default=None) for name, key in TRAINER_SETTING_KEYS.items()}


def is_plugin_loss(loss_mode: str) -> bool:
    """Whether verl's registry maps `loss_mode` to a loss of this package (maspo and its baselines)."""
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    from maspo_verl.baselines import register_baselines

    register_baselines()  # the plugin registers them in every process verl starts; so here too
    try:
        loss_fn = get_policy_loss_fn(loss_mode)
    except ValueError:
        return False
    return getattr(loss_fn, "__module__", "").startswith("maspo_verl")


def loss_path_findings(loss_mode: str, settings: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(refusals, notes) for a plugin loss under these verl settings (`TRAINER_SETTING_KEYS` names).

    A refusal is a setting under which verl would not train with `loss_mode`; a note is one under
    which it trains with it on inputs other than the recomputed old-policy log-probs.
    Settings that are None (absent in this verl) count as verl's defaults being off.
    """
    refusals: list[str] = []
    notes: list[str] = []
    legacy_trainer = not settings.get("use_v1")

    if settings.get("rollout_correction_bypass_mode"):
        if legacy_trainer:
            refusals.append(
                f"algorithm.rollout_correction.bypass_mode=true with the legacy trainer (trainer.use_v1="
                f"{settings.get('use_v1')}): verl's rollout_corr_helper.apply_bypass_mode replaces "
                f"{_LOSS_MODE_KEY}={loss_mode} by 'bypass_mode' at every step, so {loss_mode} would never run. "
                "Unset it (algorithm.rollout_correction.bypass_mode=false; rollout_is / rollout_rs still correct "
                "for the rollout mismatch) or use the V1 trainer (trainer.use_v1=true), which keeps the loss"
            )
        else:
            notes.append(
                f"algorithm.rollout_correction.bypass_mode=true on the V1 trainer: {loss_mode} runs, but verl puts "
                "the rollout engine's log-probs in place of old_log_probs (no actor recompute). MASPO's p_old (the "
                "mass-adaptive limiter sigma_base / p_old^alpha) and its ratio r = pi_theta / p_old are then taken "
                "from the rollout engine (its numerics, its temperature); algorithm.rollout_correction.loss_type is "
                "not used. Set algorithm.rollout_correction.bypass_mode=false for the paper's recomputed p_old"
            )

    if settings.get("distillation_enabled"):
        policy_loss_mode = settings.get("distillation_policy_loss_mode") or "vanilla"
        if policy_loss_mode != "vanilla":
            refusals.append(
                f"distillation.distillation_loss.policy_loss_mode={policy_loss_mode}: verl's distillation "
                "policy-gradient path accepts only 'vanilla' (verl/workers/config/distillation.py raises "
                f"NotImplementedError otherwise); {loss_mode} is selected by {_LOSS_MODE_KEY}, not there. Set "
                "distillation.distillation_loss.policy_loss_mode=vanilla"
            )
        if settings.get("distillation_use_task_rewards") is False:
            refusals.append(
                "distillation.enabled=true with distillation.distillation_loss.use_task_rewards=false: verl's "
                f"distillation_ppo_loss sets the policy loss to 0, so {_LOSS_MODE_KEY}={loss_mode} would not "
                "train. Set distillation.distillation_loss.use_task_rewards=true or distillation.enabled=false"
            )
        elif settings.get("distillation_use_policy_gradient"):
            notes.append(
                f"distillation.enabled=true: {loss_mode} trains on the task rewards; the distillation signal is "
                "added through verl's vanilla PPO loss (distillation.distillation_loss.use_policy_gradient=true), "
                "not through MASPO's gate"
            )
    return refusals, notes


def loss_replacing_settings(config: Any) -> tuple[list[str], list[str]]:
    """(refusals, notes) of `loss_path_findings` for a composed trainer config whose actor loss is ours;
    ([], []) for a loss of verl's."""
    loss_mode = OmegaConf.select(config, _LOSS_MODE_KEY)
    if not is_plugin_loss(loss_mode):
        return [], []
    return loss_path_findings(loss_mode, trainer_settings_of(config))

"""verl settings that replace this plugin's registered loss, or change what it computes.

verl reads the loss named by `actor_rollout_ref.actor.policy_loss.loss_mode` in each actor worker, from
the config the worker was built with, and wraps it in `verl.workers.utils.losses.ppo_loss`. Around that
call verl has settings that change what the loss receives or add terms to it, and none of them says so:

  - `algorithm.rollout_correction.bypass_mode=true` (both trainers): the rollout engine's log-probs are
    the old log-probs (MASPO's p_old and ratio). The legacy trainer also rewrites `policy_loss.loss_mode`
    to "bypass_mode" (`rollout_corr_helper.apply_bypass_mode`), but in the driver's copy of the config
    only, after the workers were built: the workers keep running the configured loss (measured by
    tests/test_loss_guard_run.py). Rollout IS weights and rejection sampling are computed only in
    decoupled mode (bypass_mode=false), so in bypass mode the loss gets neither;
  - decoupled mode with `rollout_is` / `rollout_rs`: IS weights multiply the per-token loss, rejection
    sampling removes tokens from `response_mask`;
  - `actor.use_kl_loss` and `actor.entropy_coeff` add terms to the loss (`ppo_loss`);
  - an advantage estimator other than GRPO, or GRPO without division by the group's std, changes the
    scale of A that MASPO's risk controller (beta, adv_low/adv_high) assumes;
  - distillation adds its loss; with `use_task_rewards=false` verl sets the policy loss to 0 (the one
    setting here that replaces the loss: refused), and verl refuses a distillation `policy_loss_mode`
    other than vanilla (refused here too, with what to set).

`loss_path_findings` turns these into refusals and notes, one line each naming the verl key.
`python -m maspo_verl check` and DRY_RUN apply it to the composed config; at run time
`MaspoPolicyLossConfig` applies it to its `trainer_settings` block, which configs/maspo.yaml fills by
interpolation, so verl's driver fails (or logs the notes once per process) when it builds the actor
config, before any worker starts. A mirrored key this verl lacks reads as `ABSENT` and raises, naming it,
instead of passing for "off".
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf

__all__ = [
    "ABSENT",
    "TRAINER_SETTING_KEYS",
    "MissingVerlKeyError",
    "is_plugin_loss",
    "loss_path_findings",
    "loss_replacing_settings",
    "require_mirrored_keys",
    "trainer_settings_of",
]

# What a mirrored key reads as when the composed config has no such key (configs/maspo.yaml:
# `${oc.select:<verl key>,__absent__}`); verl's own null stays None.
ABSENT = "__absent__"

# The `trainer_settings` block of MaspoPolicyLossConfig: its key -> the verl key it mirrors.
TRAINER_SETTING_KEYS = {
    "use_v1": "trainer.use_v1",
    "adv_estimator": "algorithm.adv_estimator",
    "norm_adv_by_std_in_grpo": "algorithm.norm_adv_by_std_in_grpo",
    "rollout_correction_bypass_mode": "algorithm.rollout_correction.bypass_mode",
    "rollout_is": "algorithm.rollout_correction.rollout_is",
    "rollout_rs": "algorithm.rollout_correction.rollout_rs",
    "use_kl_loss": "actor_rollout_ref.actor.use_kl_loss",
    "entropy_coeff": "actor_rollout_ref.actor.entropy_coeff",
    "distillation_enabled": "distillation.enabled",
    "distillation_use_task_rewards": "distillation.distillation_loss.use_task_rewards",
    "distillation_use_policy_gradient": "distillation.distillation_loss.use_policy_gradient",
    "distillation_policy_loss_mode": "distillation.distillation_loss.policy_loss_mode",
}

_LOSS_MODE_KEY = "actor_rollout_ref.actor.policy_loss.loss_mode"
# Advantage estimators whose A is GRPO's group-normalised one, (r - mean) / std within a prompt's group.
# verl's legacy trainer passes norm_adv_by_std_in_grpo to grpo only (grpo_vectorized always divides).
_GRPO_SCALE_ESTIMATORS = ("grpo", "grpo_vectorized")


class MissingVerlKeyError(ValueError):
    """A verl key the guard reads is not in the trainer config (renamed or removed in this verl)."""


def _verl_has_v1_trainer() -> bool:
    """Whether the installed verl has the V1 trainer (verl >= 0.9; verl 0.8 has only the legacy one)."""
    return importlib.util.find_spec("verl.trainer.ppo.v1") is not None


def trainer_settings_of(config: Any) -> dict[str, Any]:
    """The `TRAINER_SETTING_KEYS` values of a composed verl trainer config, `ABSENT` where it has no such key."""
    return {name: OmegaConf.select(config, key, default=ABSENT) for name, key in TRAINER_SETTING_KEYS.items()}


def require_mirrored_keys(settings: Mapping[str, Any]) -> dict[str, Any]:
    """`settings` with every mirrored key present; raise MissingVerlKeyError naming each verl key that is `ABSENT`.

    A key this guard reads but the config lacks (verl renamed or removed it, or an override deleted it)
    would otherwise pass for "off" and hide what it does. The one absence a supported verl has by design:
    `trainer.use_v1` on a verl without a V1 trainer (0.8), which is the legacy trainer (use_v1=False).
    """
    present = dict(settings)
    if present.get("use_v1") == ABSENT and not _verl_has_v1_trainer():
        present["use_v1"] = False
    missing = [TRAINER_SETTING_KEYS.get(name, name) for name, value in present.items() if value == ABSENT]
    if missing:
        from verl import __version__ as verl_version

        raise MissingVerlKeyError(
            f"verl key(s) {missing} are not in the composed config (verl {verl_version}): renamed or removed in "
            "this verl, or deleted by an override. maspo_verl.integration.loss_guard reads them to tell whether "
            "verl replaces or changes the policy loss; restore them or update TRAINER_SETTING_KEYS and "
            "configs/maspo.yaml's policy_loss.trainer_settings to this verl's names"
        )
    return present


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


def _bypass_mode_notes(loss_mode: str, settings: Mapping[str, Any]) -> list[str]:
    """Notes for `algorithm.rollout_correction.bypass_mode=true` (verl's trainer fit(): rollout log-probs as
    old_log_probs; no rollout IS weights or rejection sampling outside decoupled mode)."""
    legacy = not settings.get("use_v1")
    rewrite = (
        " (the legacy trainer's rollout_corr_helper.apply_bypass_mode sets policy_loss.loss_mode='bypass_mode' "
        "in the driver's copy of the config only, after the workers were built with theirs)"
        if legacy
        else ""
    )
    notes = [
        f"algorithm.rollout_correction.bypass_mode=true: {loss_mode} still runs in the workers{rewrite}, but verl "
        "puts the rollout engine's log-probs in place of old_log_probs (no actor recompute): p_old (MASPO's "
        "mass-adaptive limiter sigma_base / p_old^alpha) and the ratio r = pi_theta / p_old come from the rollout "
        "engine (its kernels and precision), and algorithm.rollout_correction.loss_type is not used. "
        "Set algorithm.rollout_correction.bypass_mode=false for p_old recomputed by the actor"
    ]
    for name, what in (("rollout_is", "importance weights"), ("rollout_rs", "rejection sampling")):
        if settings.get(name) is not None:
            notes.append(
                f"{TRAINER_SETTING_KEYS[name]}={settings[name]} with bypass_mode=true: verl computes rollout "
                f"{what} only in decoupled mode (bypass_mode=false) and only its own 'bypass_mode' loss would "
                f"apply them in bypass mode, so {loss_mode} runs without them"
            )
    return notes


def loss_path_findings(loss_mode: str, settings: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(refusals, notes) for a plugin loss under these verl settings (`TRAINER_SETTING_KEYS` names -> values).

    A refusal is a setting under which verl would not train with `loss_mode`; a note is one under which
    it trains with it on other inputs or with other terms, one line each naming the verl key. A value of
    None is verl's null (off); `ABSENT` (no such key in the config) raises MissingVerlKeyError naming the key.
    """
    settings = require_mirrored_keys(settings)
    refusals: list[str] = []
    notes: list[str] = []

    if settings.get("rollout_correction_bypass_mode"):
        notes += _bypass_mode_notes(loss_mode, settings)
    else:
        if settings.get("rollout_is") is not None:
            notes.append(
                f"algorithm.rollout_correction.rollout_is={settings['rollout_is']}: verl multiplies {loss_mode}'s "
                "per-token loss by rollout importance weights (recomputed old policy over the rollout engine's, "
                "bounded by rollout_is_threshold) before aggregation"
            )
        if settings.get("rollout_rs") is not None:
            notes.append(
                f"algorithm.rollout_correction.rollout_rs={settings['rollout_rs']}: verl's rejection sampling "
                f"removes tokens or whole responses from response_mask (rollout_rs_threshold), so {loss_mode} "
                "trains on and averages over the rest"
            )

    if settings.get("use_kl_loss"):
        notes.append(
            f"actor_rollout_ref.actor.use_kl_loss=true: verl adds actor_rollout_ref.actor.kl_loss_coef x a KL "
            f"penalty to the reference policy (kl_loss_type) to {loss_mode}'s loss; MASPO is defined without it"
        )
    entropy_coeff = settings.get("entropy_coeff")
    if entropy_coeff not in (None, 0):
        notes.append(
            f"actor_rollout_ref.actor.entropy_coeff={entropy_coeff}: verl subtracts {entropy_coeff} x the "
            f"aggregated token entropy from {loss_mode}'s loss; MASPO is defined without an entropy term"
        )

    adv_estimator = settings.get("adv_estimator")
    if adv_estimator is not None and adv_estimator not in _GRPO_SCALE_ESTIMATORS:
        notes.append(
            f"algorithm.adv_estimator={adv_estimator}: {loss_mode} gets {adv_estimator}'s advantages, not GRPO's "
            "group-normalised ones (unit std within a prompt's group) whose scale MASPO's risk controller assumes: "
            "beta_pos/beta_neg and the clamp adv_low/adv_high act on A as it comes"
        )
    elif adv_estimator == "grpo" and settings.get("norm_adv_by_std_in_grpo") is False:
        notes.append(
            "algorithm.norm_adv_by_std_in_grpo=false: GRPO's advantages are not divided by the group's reward std "
            f"(A = r - group mean), so A has the rewards' scale, not the unit scale {loss_mode}'s settings assume "
            "(MASPO: beta_pos/beta_neg and the clamp adv_low/adv_high)"
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
                "distillation.enabled=true with distillation.distillation_loss.use_policy_gradient=true: verl adds "
                "a second policy-gradient term to the loss, its vanilla PPO loss with the negative distillation loss "
                f"as advantages (times distillation_loss_coef); {loss_mode} trains on the task rewards and MASPO's "
                "gate does not apply to that term"
            )
        else:
            notes.append(
                "distillation.enabled=true with distillation.distillation_loss.use_policy_gradient=false: verl adds "
                f"the distillation loss (times distillation_loss_coef) to {loss_mode}'s loss as a supervised term"
            )
    return refusals, notes


def loss_replacing_settings(config: Any) -> tuple[list[str], list[str]]:
    """(refusals, notes) of `loss_path_findings` for a composed trainer config whose actor loss is ours;
    ([], []) for a loss of verl's."""
    loss_mode = OmegaConf.select(config, _LOSS_MODE_KEY)
    if not is_plugin_loss(loss_mode):
        return [], []
    return loss_path_findings(loss_mode, trainer_settings_of(config))

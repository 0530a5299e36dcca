"""MASPO configuration: the `policy_loss.maspo.*` keys and verl's `PolicyLossConfig` carrying them.

Hydra path of every key: `actor_rollout_ref.actor.policy_loss.maspo.<key>`.
Selecting `actor_rollout_ref.actor.policy_loss._target_=maspo_verl.MaspoPolicyLossConfig` makes
verl build `MaspoPolicyLossConfig` for the actor, so the MASPO keys live in verl's own, frozen,
validated config tree. The baselines' blocks (`dac`, `bapo`, `entropy_advantage`) are added by
its subclass `maspo_verl.baselines.PolicyLossConfigWithBaselines`, which the override
`+policy_loss=baselines` selects: this module, like the rest of MASPO's core, does not import the baselines.
"""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, ClassVar

from verl.base_config import BaseConfig
from verl.workers.config import PolicyLossConfig

__all__ = [
    "GATE_MODES",
    "MaspoConfig",
    "MaspoPolicyLossConfig",
    "config_block_from",
    "maspo_config_from",
    "require_bool",
    "require_choice",
    "require_number",
    "resolve_config_block",
]

GATE_MODES = ("gaussian", "hard")

_logger = logging.getLogger("maspo_verl.config")
_logged_notes: set[str] = set()


# Config blocks under verl's policy-loss config, `actor_rollout_ref.actor.policy_loss.<block>.*`: MASPO
# keeps its keys in the `maspo` block; each baseline in a block of the subclass
# `maspo_verl.baselines.PolicyLossConfigWithBaselines`. These helpers validate values with errors that
# name the key, build a block from what Hydra hands over, and find a loss's block in verl's actor config.
_warned_default_blocks: set[str] = set()


def require_number(key: str, value: Any) -> float:
    """`value` as a finite float, or ValueError naming the config key (e.g. "policy_loss.dac.eps_low")."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"{key} must be finite, got {value!r}")
    return float(value)


def require_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {value!r}")
    return value


def require_choice(key: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{key} must be one of {list(choices)}, got {value!r}")
    return value


def config_block_from(value: Any, config_class: type, block: str):
    """Build `config_class` from an instance, None (defaults), a dict or an OmegaConf node.

    Unknown keys raise ValueError naming `policy_loss.<block>` and the allowed keys: Hydra's
    `instantiate(_convert_="partial")` hands a nested block over as a dict when it has no
    `_target_`, so a typo would otherwise vanish silently.
    """
    if isinstance(value, config_class):
        return value
    if value is None:
        return config_class()
    if not isinstance(value, Mapping):
        try:  # OmegaConf's DictConfig is not a collections.abc.Mapping
            from omegaconf import DictConfig, OmegaConf

            if isinstance(value, DictConfig):
                value = OmegaConf.to_container(value, resolve=True)
        except ImportError:  # pragma: no cover - omegaconf ships with verl
            pass
    if not isinstance(value, Mapping):
        raise ValueError(f"policy_loss.{block} must be a mapping of its keys, got {type(value).__name__}")
    allowed = {f.name for f in fields(config_class)} - {"_target_"}
    values = {k: v for k, v in value.items() if k != "_target_"}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ValueError(f"policy_loss.{block} has unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    return config_class(**values)


def resolve_config_block(config: Any, block: str, config_class: type, loss_mode: str, policy_loss_class: str):
    """The `policy_loss.<block>` settings of verl's actor config `config`, as `config_class`.

    verl's plain `PolicyLossConfig` has no such block: the defaults are used and the log says so
    once per process, naming `policy_loss_class` (the policy-loss config that carries the block,
    to select as `policy_loss._target_`).
    """
    if config is None:
        raise ValueError(f"loss_mode={loss_mode} needs the actor config (config=None was passed)")
    policy_loss = config.get("policy_loss", None) if hasattr(config, "get") else getattr(config, "policy_loss", None)
    value = None
    if policy_loss is not None:
        value = policy_loss.get(block, None) if hasattr(policy_loss, "get") else getattr(policy_loss, block, None)
    # a dict or DictConfig (a dataclass config has fixed keys): a misspelt block is not a missing one
    if value is None and hasattr(policy_loss, "keys") and not is_dataclass(policy_loss):
        misspelt = difflib.get_close_matches(block, [str(key) for key in policy_loss.keys()], n=1, cutoff=0.75)
        if misspelt:
            raise ValueError(
                f"policy_loss has a key {misspelt[0]!r} but no {block!r}: loss_mode={loss_mode} reads its settings "
                f"from policy_loss.{block}"
            )
    if value is None and block not in _warned_default_blocks:
        _logger.warning(
            "loss_mode=%s without a policy_loss.%s block: using the defaults %s. Set "
            "actor_rollout_ref.actor.policy_loss._target_=%s to set policy_loss.%s.*",
            loss_mode,
            block,
            config_class(),
            policy_loss_class,
            block,
        )
        _warned_default_blocks.add(block)
    return config_block_from(value, config_class, block)


@dataclass
class MaspoConfig(BaseConfig):
    """Hyper-parameters of MASPO (arXiv 2602.17550); defaults are the authors' guidance.

    Args:
        sigma_base (float): base width of the Gaussian trust region around ratio 1. > 0.
        alpha (float): mass-adaptive exponent: sigma grows as sigma_base / p_old**alpha. >= 0
            (0 switches the limiter off; the authors use 0.5 at 1.5B, 0.3 at 7B/14B).
        beta_pos (float): risk-controller slope for positive advantages. >= 0.
        beta_neg (float): risk-controller slope for negative advantages. >= 0.
        sigma_high (float): upper limit of the mass-adaptive width. >= sigma_base.
        adv_low (float): lower clamp of the risk-controller factor. > 0.
        adv_high (float): upper clamp of the risk-controller factor. >= adv_low.
        gate (str): "gaussian" (MASPO's soft gate) or "hard" (PPO clip whose bounds are scaled by
            sigma/sigma_base, with verl's dual clip): the soft-gate ablation.
        mass_adaptive (bool): false replaces the limiter by sigma_base: the limiter ablation.
        risk_control (bool): false sets both risk factors to 1: the risk-controller ablation.
        clip_ratio_c (float | None): maspo-verl's extension, not the paper's: a dual-clip bound c > 1 for
            the side MASPO leaves open (A < 0, r > 1). None (default): unbounded, as the paper and the
            authors' code. With gate=gaussian, A < 0 and r > c gets the constant per-token loss -A * c
            (no gradient), as verl's vanilla loss does with actor.clip_ratio_c. With gate=hard, which
            always has verl's dual clip, it replaces actor.clip_ratio_c as that clip's bound.
    """

    sigma_base: float = 1.0
    alpha: float = 0.3
    beta_pos: float = 0.03
    beta_neg: float = 0.03
    sigma_high: float = 10.0
    adv_low: float = 0.1
    adv_high: float = 10.0
    gate: str = "gaussian"
    mass_adaptive: bool = True
    risk_control: bool = True
    clip_ratio_c: float | None = None

    def __post_init__(self):
        for key in ("sigma_base", "alpha", "beta_pos", "beta_neg", "sigma_high", "adv_low", "adv_high"):
            require_number(f"policy_loss.maspo.{key}", getattr(self, key))
        for key in ("mass_adaptive", "risk_control"):
            require_bool(f"policy_loss.maspo.{key}", getattr(self, key))
        require_choice("policy_loss.maspo.gate", self.gate, GATE_MODES)
        if self.sigma_base <= 0:
            raise ValueError(f"policy_loss.maspo.sigma_base must be > 0, got {self.sigma_base}")
        if self.sigma_high < self.sigma_base:
            raise ValueError(
                f"policy_loss.maspo.sigma_high must be >= sigma_base ({self.sigma_base}), got {self.sigma_high}"
            )
        if self.alpha < 0:
            raise ValueError(f"policy_loss.maspo.alpha must be >= 0, got {self.alpha}")
        for key in ("beta_pos", "beta_neg"):
            if getattr(self, key) < 0:
                raise ValueError(f"policy_loss.maspo.{key} must be >= 0, got {getattr(self, key)}")
        if self.adv_low <= 0:
            raise ValueError(f"policy_loss.maspo.adv_low must be > 0, got {self.adv_low}")
        if self.adv_high < self.adv_low:
            raise ValueError(f"policy_loss.maspo.adv_high must be >= adv_low ({self.adv_low}), got {self.adv_high}")
        if self.clip_ratio_c is not None:
            require_number("policy_loss.maspo.clip_ratio_c", self.clip_ratio_c)
            if not self.clip_ratio_c > 1.0:
                raise ValueError(
                    "policy_loss.maspo.clip_ratio_c (dual-clip bound) must be > 1 or null (no dual clip, as the "
                    f"paper), got {self.clip_ratio_c}"
                )
            object.__setattr__(self, "clip_ratio_c", float(self.clip_ratio_c))  # BaseConfig freezes fields


def maspo_config_from(value: Any) -> MaspoConfig:
    """Build a `MaspoConfig` from a MaspoConfig, None, a dict or an OmegaConf node; unknown keys raise."""
    return config_block_from(value, MaspoConfig, "maspo")


@dataclass
class MaspoPolicyLossConfig(PolicyLossConfig):
    """verl's `PolicyLossConfig` plus MASPO's `maspo` block; `loss_mode` defaults to "maspo".

    Select it with `actor_rollout_ref.actor.policy_loss._target_=maspo_verl.MaspoPolicyLossConfig`.
    verl's own loss modes (e.g. "vanilla" for GRPO, "sapo") keep working with this class. A subclass
    adds blocks as dataclass fields listed in `CONFIG_BLOCKS` (block name -> its config class), as
    `maspo_verl.baselines.PolicyLossConfigWithBaselines` does for the baselines.
    """

    # Every block field and its config class; `__post_init__` builds each from what Hydra hands over.
    CONFIG_BLOCKS: ClassVar[dict[str, type]] = {"maspo": MaspoConfig}

    loss_mode: str = "maspo"
    maspo: MaspoConfig = field(default_factory=MaspoConfig)
    # verl settings outside the policy-loss block that replace the loss, change its inputs or add terms
    # to it (maspo_verl.integration.loss_guard.TRAINER_SETTING_KEYS), interpolated from the trainer config by
    # configs/maspo.yaml ("__absent__" where the trainer config has no such key: an error naming it);
    # empty (nothing checked here) on verl's plain ppo_trainer.
    trainer_settings: dict = field(default_factory=dict)

    def __post_init__(self):
        # Hydra's instantiate(_convert_="partial") hands a nested block over as a dict when it
        # carries no _target_ of its own; fields are frozen after __init__, hence object.__setattr__.
        for block, config_class in self.CONFIG_BLOCKS.items():
            object.__setattr__(self, block, config_block_from(getattr(self, block), config_class, block))
        if self.trainer_settings:
            _refuse_loss_replacing_settings(self.loss_mode, dict(self.trainer_settings))


def _refuse_loss_replacing_settings(loss_mode: str, trainer_settings: dict) -> None:
    """Raise on verl settings under which verl would not train with this plugin's `loss_mode` and on a
    mirrored verl key the trainer config lacks (naming it); log each setting that changes the loss's
    inputs or adds terms to it, one line each, once per process (maspo_verl.integration.loss_guard)."""
    from maspo_verl.integration.loss_guard import TRAINER_SETTING_KEYS, is_plugin_loss, loss_path_findings

    unknown = sorted(set(trainer_settings) - set(TRAINER_SETTING_KEYS))
    if unknown:
        raise ValueError(
            f"policy_loss.trainer_settings: unknown keys {unknown}; allowed: {sorted(TRAINER_SETTING_KEYS)}"
        )
    # A block that mirrors only some keys would read the others as off: each one, as configs/maspo.yaml has it.
    unmirrored = sorted(set(TRAINER_SETTING_KEYS) - set(trainer_settings))
    if unmirrored:
        raise ValueError(
            f"policy_loss.trainer_settings lacks {unmirrored}: mirror each as configs/maspo.yaml does, e.g. "
            f"{unmirrored[0]}: ${{oc.select:{TRAINER_SETTING_KEYS[unmirrored[0]]},__absent__}}"
        )
    if not is_plugin_loss(loss_mode):
        return
    refusals, notes = loss_path_findings(loss_mode, trainer_settings)
    if refusals:
        raise ValueError("; ".join(refusals))
    for note in notes:
        if note not in _logged_notes:
            _logged_notes.add(note)
            _logger.warning("maspo-verl: %s", note)

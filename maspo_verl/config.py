"""MASPO configuration: the `policy_loss.maspo.*` keys and verl's `PolicyLossConfig` carrying them.

Hydra path of every key: `actor_rollout_ref.actor.policy_loss.maspo.<key>`.
Selecting `actor_rollout_ref.actor.policy_loss._target_=maspo_verl.MaspoPolicyLossConfig`
(done by `configs/maspo.yaml`) makes verl build `MaspoPolicyLossConfig` for the actor, so the
MASPO keys live in verl's own, frozen, validated config tree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from verl.base_config import BaseConfig
from verl.workers.config import PolicyLossConfig

__all__ = ["GATE_MODES", "MaspoConfig", "MaspoPolicyLossConfig", "maspo_config_from"]

GATE_MODES = ("gaussian", "hard")


def _require_number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"policy_loss.maspo.{key} must be a number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"policy_loss.maspo.{key} must be finite, got {value!r}")
    return float(value)


def _require_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"policy_loss.maspo.{key} must be true or false, got {value!r}")
    return value


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

    def __post_init__(self):
        for key in ("sigma_base", "alpha", "beta_pos", "beta_neg", "sigma_high", "adv_low", "adv_high"):
            _require_number(key, getattr(self, key))
        for key in ("mass_adaptive", "risk_control"):
            _require_bool(key, getattr(self, key))
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
            raise ValueError(
                f"policy_loss.maspo.adv_high must be >= adv_low ({self.adv_low}), got {self.adv_high}"
            )
        if self.gate not in GATE_MODES:
            raise ValueError(f"policy_loss.maspo.gate must be one of {list(GATE_MODES)}, got {self.gate!r}")


_MASPO_KEYS = {f.name for f in fields(MaspoConfig)} - {"_target_"}


def maspo_config_from(value: Any) -> MaspoConfig:
    """Build a `MaspoConfig` from a MaspoConfig, a dict or an OmegaConf node; unknown keys raise."""
    if isinstance(value, MaspoConfig):
        return value
    if value is None:
        return MaspoConfig()
    if not isinstance(value, Mapping):
        try:  # OmegaConf DictConfig is not a collections.abc.Mapping
            from omegaconf import DictConfig, OmegaConf

            if isinstance(value, DictConfig):
                value = OmegaConf.to_container(value, resolve=True)
        except ImportError:  # pragma: no cover - omegaconf ships with verl
            pass
    if not isinstance(value, Mapping):
        raise ValueError(f"policy_loss.maspo must be a mapping of MASPO keys, got {type(value).__name__}")
    values = {k: v for k, v in value.items() if k != "_target_"}
    unknown = sorted(set(values) - _MASPO_KEYS)
    if unknown:
        raise ValueError(f"policy_loss.maspo has unknown key(s) {unknown}; allowed: {sorted(_MASPO_KEYS)}")
    return MaspoConfig(**values)


@dataclass
class MaspoPolicyLossConfig(PolicyLossConfig):
    """verl's `PolicyLossConfig` plus the `maspo` block; `loss_mode` defaults to "maspo".

    Select it with `actor_rollout_ref.actor.policy_loss._target_=maspo_verl.MaspoPolicyLossConfig`.
    Other loss modes (e.g. "vanilla" for GRPO) keep working with this class, so one config tree
    serves MASPO and its baselines.
    """

    loss_mode: str = "maspo"
    maspo: MaspoConfig = field(default_factory=MaspoConfig)

    def __post_init__(self):
        # Hydra's instantiate(_convert_="partial") hands the nested block over as a dict when it
        # carries no _target_ of its own; the field is frozen after __init__, hence object.__setattr__.
        object.__setattr__(self, "maspo", maspo_config_from(self.maspo))

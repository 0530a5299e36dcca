"""Config blocks under verl's policy-loss config, `actor_rollout_ref.actor.policy_loss.<block>.*`.

MASPO keeps its keys in the `maspo` block of `maspo_verl.MaspoPolicyLossConfig`; each baseline
(`dac`, `bapo`, `entropy_advantage`) in a block of its subclass
`maspo_verl.baselines.PolicyLossConfigWithBaselines`. These helpers validate values with errors
that name the key, build a block from what Hydra hands over, and find a loss's block in verl's
actor config.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

__all__ = ["config_block_from", "require_bool", "require_choice", "require_number", "resolve_config_block"]

logger = logging.getLogger(__name__)

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
    if value is None and block not in _warned_default_blocks:
        logger.warning(
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

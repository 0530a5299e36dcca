"""Entropy Advantage (Cheng et al., "Reasoning with Exploration: An Entropy Perspective",
arXiv 2506.14758): the advantage plus a clipped, gradient-free entropy bonus,

    A' = A + min(alpha * H.detach(), |A| / kappa)

with H the per-token entropy of the current policy. The bonus never exceeds |A| / kappa with
kappa > 1 (the paper's requirement), so it cannot reverse the sign of A (it only softens negative
advantages and boosts positive ones), and tokens with A = 0 get none. No official code was found;
the formula is the paper's (arXiv 2506.14758, the entropy-based advantage) as secondary sources
quote it, and the defaults are unverified against the paper's text (docs/baselines.md).

Where it hooks into verl. verl 0.9's policy-loss signature carries no entropy: the engine hands it
(with `actor.calculate_entropy=true`) to `verl.workers.utils.losses.ppo_loss`, which uses it only
for the entropy bonus and calls the registered policy loss with the advantages alone. So the
shaping happens one level up: `apply_entropy_advantage()` wraps `ppo_loss` (the wrapper
`ppo_loss_with_entropy_advantage` shapes a micro-batch's advantages, then calls verl's own
`ppo_loss`; everything else, the policy loss of any `loss_mode`, entropy and KL terms, aggregation,
metrics, stays verl's). It checks the installed verl version, rebinds `ppo_loss` at verl's call
sites (`verl.workers.utils.losses`, and `verl.workers.engine_workers` /
`verl.trainer.distillation.losses` when already imported; later imports pick up the wrapper) and
logs a warning saying so. `remove_entropy_advantage()` restores verl's function.

Who calls it. `PolicyLossConfigWithBaselines` (maspo_verl.baselines.config) calls
`apply_entropy_advantage()` when verl builds it with
`actor_rollout_ref.actor.policy_loss.entropy_advantage.enable=true` (the scripts also set
`actor_rollout_ref.actor.calculate_entropy=true`); its comment says why that is the place. From
Python, call it yourself. It works with any `loss_mode` (the paper's baseline is GRPO,
`loss_mode=vanilla`); with the block off (or absent) the wrapper is verl's `ppo_loss` unchanged.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from verl.base_config import BaseConfig
from verl.utils.metric import AggregationType, Metric
from verl.workers.utils.padding import no_padding_2_padding

from maspo_verl.config import config_block_from, require_bool, require_number
from maspo_verl.conventions import host_values
from maspo_verl.integration.versions import require_verl_version

__all__ = [
    "METRIC_KEYS",
    "SUPPORTED_VERL_VERSIONS",
    "EntropyAdvantageConfig",
    "apply_entropy_advantage",
    "entropy_advantage_applied",
    "entropy_shaped_advantages",
    "ppo_loss_with_entropy_advantage",
    "remove_entropy_advantage",
]

logger = logging.getLogger(__name__)

# The verls whose ppo_loss the wrapper was written and tested against.
SUPPORTED_VERL_VERSIONS = ("0.9.1",)

# Modules that hold a reference to verl's ppo_loss (`from verl.workers.utils.losses import ppo_loss`).
_CALL_SITES = ("verl.workers.utils.losses", "verl.workers.engine_workers", "verl.trainer.distillation.losses")
_PPO_LOSS_PARAMETERS = ["config", "model_output", "data", "dp_group"]

METRIC_KEYS = ("actor/entropy_advantage/bonus_mean", "actor/entropy_advantage/capped_frac")

_verl_ppo_loss: Callable | None = None


@dataclass
class EntropyAdvantageConfig(BaseConfig):
    """Settings of the entropy-based advantage (arXiv 2506.14758), `policy_loss.entropy_advantage.*`.

    Defaults: kappa = 2 and alpha = 0.4, reported by secondary sources as the paper's values for
    GRPO (0.1 for PPO). UNVERIFIED: the paper's hyper-parameter section could not be read here
    and no official code was found (docs/baselines.md). Building this block has no side effect.

    Args:
        enable (bool): shape the advantages. verl's `ppo_loss` must be wrapped in the process that
            runs the loss: `PolicyLossConfigWithBaselines` calls `apply_entropy_advantage()` when it
            is built with this switch on.
        alpha (float): entropy scale, >= 0 (0 leaves the advantages unchanged).
        kappa (float): the bonus is at most |A| / kappa; must be > 1 (the paper's condition).
    """

    enable: bool = False
    alpha: float = 0.4
    kappa: float = 2.0

    def __post_init__(self):
        require_bool("policy_loss.entropy_advantage.enable", self.enable)
        for key in ("alpha", "kappa"):
            require_number(f"policy_loss.entropy_advantage.{key}", getattr(self, key))
        if self.alpha < 0:
            raise ValueError(f"policy_loss.entropy_advantage.alpha must be >= 0, got {self.alpha}")
        if not self.kappa > 1:
            raise ValueError(
                "actor_rollout_ref.actor.policy_loss.entropy_advantage.kappa must be > 1 (arXiv 2506.14758 "
                f"requires kappa > 1, so the bonus |A|/kappa stays below |A|), got {self.kappa}"
            )


def entropy_shaped_advantages(
    advantages: torch.Tensor, entropy: torch.Tensor, response_mask: torch.Tensor, alpha: float, kappa: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """A' = A + min(alpha * H.detach(), |A| / kappa) on valid tokens (arXiv 2506.14758, the
    entropy-based advantage); padding keeps A.

    Args:
        advantages: A, (bs, response_length).
        entropy: H of the current policy per token, (bs, response_length); detached here.
        response_mask: valid tokens, bool, (bs, response_length).

    Returns:
        (shaped advantages in advantages' dtype, bonus in float32), each (bs, response_length).
    """
    entropy_term = alpha * torch.where(response_mask, entropy.detach().float(), 0.0)
    bonus = torch.minimum(entropy_term, advantages.float().abs() / kappa)
    bonus = torch.where(response_mask, bonus, 0.0)
    return (advantages.float() + bonus).to(advantages.dtype), bonus


def entropy_advantage_applied() -> bool:
    """True while verl's `ppo_loss` is wrapped in this process."""
    return _verl_ppo_loss is not None


def apply_entropy_advantage() -> None:
    """Wrap verl's `ppo_loss` with the Entropy Advantage shaping (idempotent).

    Raises:
        UnsupportedVerlVersion: the installed verl is not one this wrapper was tested with.
        RuntimeError: verl's `ppo_loss` does not have the signature the wrapper relies on.
    """
    global _verl_ppo_loss
    version = require_verl_version("apply_entropy_advantage", SUPPORTED_VERL_VERSIONS)
    import verl.workers.utils.losses as verl_losses

    if _verl_ppo_loss is None:
        parameters = list(inspect.signature(verl_losses.ppo_loss).parameters)
        if parameters != _PPO_LOSS_PARAMETERS:
            raise RuntimeError(
                f"apply_entropy_advantage expects verl's ppo_loss{tuple(_PPO_LOSS_PARAMETERS)}, found {parameters}"
            )
        _verl_ppo_loss = verl_losses.ppo_loss
        logger.warning(
            "maspo_verl: wrapped verl %s ppo_loss for Entropy Advantage (arXiv 2506.14758); it shapes the "
            "advantages when actor.policy_loss.entropy_advantage.enable=true",
            version,
        )
    for name in _CALL_SITES:
        module = sys.modules.get(name)
        if module is not None and getattr(module, "ppo_loss", None) is _verl_ppo_loss:
            module.ppo_loss = ppo_loss_with_entropy_advantage


def remove_entropy_advantage() -> None:
    """Give verl's call sites their `ppo_loss` back (no-op when the wrapper is not applied)."""
    global _verl_ppo_loss
    if _verl_ppo_loss is None:
        return
    for name in _CALL_SITES:
        module = sys.modules.get(name)
        if module is not None and getattr(module, "ppo_loss", None) is ppo_loss_with_entropy_advantage:
            module.ppo_loss = _verl_ppo_loss
    _verl_ppo_loss = None


def _entropy_advantage_settings(config: Any) -> EntropyAdvantageConfig | None:
    policy_loss = config.get("policy_loss", None)
    block = policy_loss.get("entropy_advantage", None) if policy_loss is not None else None
    if block is None:
        return None
    return config_block_from(block, EntropyAdvantageConfig, "entropy_advantage")


def ppo_loss_with_entropy_advantage(config: Any, model_output: dict, data: Any, dp_group=None):
    """verl's `ppo_loss` on the micro-batch `data` whose advantages are shaped with the entropy in
    `model_output["entropy"]` when `config.policy_loss.entropy_advantage.enable` (else verl's
    `ppo_loss` as is). Adds the metrics METRIC_KEYS."""
    settings = _entropy_advantage_settings(config)
    if settings is None or not settings.enable:
        return _verl_ppo_loss(config, model_output, data, dp_group)
    entropy = model_output.get("entropy", None)
    if entropy is None:
        raise ValueError(
            "actor.policy_loss.entropy_advantage.enable=true needs the per-token entropy of the policy: "
            "set actor_rollout_ref.actor.calculate_entropy=true"
        )
    shaped_data, shaping_metrics = _shape_advantages(data, entropy, settings.alpha, settings.kappa)
    loss, metrics = _verl_ppo_loss(config, model_output, shaped_data, dp_group)
    metrics.update(Metric.from_dict(shaping_metrics, aggregation=AggregationType.MEAN))
    return loss, metrics


def _shape_advantages(data: Any, entropy: torch.Tensor, alpha: float, kappa: float):
    """A copy of the TensorDict `data` whose "advantages" (padded (bs, response_length), or nested
    per response as verl's TransferQueue trainer stores them) are shaped; plus the metrics
    METRIC_KEYS: the mean bonus and the fraction of valid tokens where the |A| / kappa cap binds."""
    advantages = data["advantages"]
    if advantages.is_nested:
        lengths = advantages.offsets().diff()
        padded_advantages = advantages.to_padded_tensor(0.0)
        response_mask = torch.arange(padded_advantages.shape[1], device=lengths.device)[None, :] < lengths[:, None]
    else:
        padded_advantages = advantages
        response_mask = data["response_mask"].bool()
    response_mask = response_mask.to(padded_advantages.device)
    # Response entropies, padded like verl pads the log-probs (to the micro-batch's response width).
    padded_entropy = no_padding_2_padding(entropy, data)[:, : padded_advantages.shape[1]].to(padded_advantages.device)

    shaped, bonus = entropy_shaped_advantages(padded_advantages, padded_entropy, response_mask, alpha, kappa)
    if advantages.is_nested:  # back to one row per response, as verl's response_to_nested builds them
        shaped = torch.nested.as_nested_tensor(
            [row[:n] for row, n in zip(shaped, lengths.tolist(), strict=True)], layout=torch.jagged
        )
    shaped_data = data.clone(recurse=False)
    shaped_data["advantages"] = shaped

    with torch.no_grad():
        num_valid = response_mask.sum().clamp(min=1)
        capped = (alpha * padded_entropy.float() > padded_advantages.float().abs() / kappa) & response_mask
        metrics = host_values(
            dict(zip(METRIC_KEYS, (bonus.sum() / num_valid, capped.sum().float() / num_valid), strict=True)),
            torch.float32,
            bonus.device,
        )
    return shaped_data, metrics

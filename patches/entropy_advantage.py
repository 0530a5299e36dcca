"""Opt-in patch: Entropy Advantage (Cheng et al., arXiv 2506.14758) inside verl's `ppo_loss`.

The method shapes the advantage with the current policy's per-token entropy,
A' = A + min(alpha * H.detach(), |A| / kappa). verl 0.9's policy losses never see the entropy:
the engine hands it (with `actor.calculate_entropy=true`) to `verl.workers.utils.losses.ppo_loss`,
which uses it only for the entropy bonus and calls the registered policy loss with the
advantages alone. `apply_entropy_advantage()` wraps `ppo_loss` so that, when the actor config
says `policy_loss.entropy_advantage.enable=true`, the micro-batch's advantages are shaped before
verl's own `ppo_loss` runs; everything else (policy loss of any `loss_mode`, entropy and KL terms,
aggregation, metrics) stays verl's. With the switch off the wrapper calls verl's `ppo_loss`
unchanged.

The switch is the config key: building `EntropyAdvantageConfig(enable=True)` calls
`apply_entropy_advantage()`, which checks the installed verl version, rebinds `ppo_loss` at verl's
call sites (`verl.workers.utils.losses`, and `verl.workers.engine_workers` /
`verl.trainer.distillation.losses` when already imported; later imports pick up the wrapper) and
logs a warning saying so. `remove_entropy_advantage()` restores verl's function.
"""

from __future__ import annotations

import inspect
import logging
import sys
from typing import Any, Callable, Optional

import torch
from verl.utils.metric import AggregationType, Metric
from verl.workers.utils.padding import no_padding_2_padding

from maspo_verl.config_blocks import config_block_from
from maspo_verl.baselines.entropy_advantage import EntropyAdvantageConfig, entropy_shaped_advantages
from maspo_verl.patches import require_verl_version

__all__ = [
    "METRIC_KEYS",
    "SUPPORTED_VERL_VERSIONS",
    "apply_entropy_advantage",
    "entropy_advantage_applied",
    "ppo_loss_with_entropy_advantage",
    "remove_entropy_advantage",
]

logger = logging.getLogger(__name__)

SUPPORTED_VERL_VERSIONS = ("0.9.1",)

# Modules that hold a reference to verl's ppo_loss (`from verl.workers.utils.losses import ppo_loss`).
_CALL_SITES = ("verl.workers.utils.losses", "verl.workers.engine_workers", "verl.trainer.distillation.losses")
_PPO_LOSS_PARAMETERS = ["config", "model_output", "data", "dp_group"]

METRIC_KEYS = ("actor/entropy_advantage/bonus_mean", "actor/entropy_advantage/capped_frac")

_verl_ppo_loss: Optional[Callable] = None


def entropy_advantage_applied() -> bool:
    """True while verl's `ppo_loss` is wrapped in this process."""
    return _verl_ppo_loss is not None


def apply_entropy_advantage() -> None:
    """Wrap verl's `ppo_loss` with the Entropy Advantage shaping (idempotent).

    Raises:
        UnsupportedVerlVersion: the installed verl is not one this patch was tested with.
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
    """Give verl's call sites their `ppo_loss` back (no-op when the patch is not applied)."""
    global _verl_ppo_loss
    if _verl_ppo_loss is None:
        return
    for name in _CALL_SITES:
        module = sys.modules.get(name)
        if module is not None and getattr(module, "ppo_loss", None) is ppo_loss_with_entropy_advantage:
            module.ppo_loss = _verl_ppo_loss
    _verl_ppo_loss = None


def _entropy_advantage_settings(config: Any) -> Optional[EntropyAdvantageConfig]:
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
    shaped_data, bonus_mean, capped_frac = _shape_advantages(data, entropy, settings.alpha, settings.kappa)
    loss, metrics = _verl_ppo_loss(config, model_output, shaped_data, dp_group)
    metrics.update(
        Metric.from_dict(dict(zip(METRIC_KEYS, (bonus_mean, capped_frac), strict=True)), aggregation=AggregationType.MEAN)
    )
    return loss, metrics


def _shape_advantages(data: Any, entropy: torch.Tensor, alpha: float, kappa: float):
    """A copy of the TensorDict `data` whose "advantages" (padded (bs, response_length), or nested
    per response as verl's TransferQueue trainer stores them) are shaped; plus the mean bonus and
    the fraction of valid tokens where the |A| / kappa cap binds."""
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
        shaped = torch.nested.as_nested_tensor([row[:n] for row, n in zip(shaped, lengths.tolist())], layout=torch.jagged)
    shaped_data = data.clone(recurse=False)
    shaped_data["advantages"] = shaped

    with torch.no_grad():
        num_valid = response_mask.sum().clamp(min=1)
        capped = (alpha * padded_entropy.float() > padded_advantages.float().abs() / kappa) & response_mask
        bonus_mean, capped_frac = (torch.stack([bonus.sum(), capped.sum().float()]) / num_valid).tolist()
    return shaped_data, bonus_mean, capped_frac

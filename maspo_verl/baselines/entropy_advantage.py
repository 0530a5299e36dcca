"""Entropy Advantage (Cheng et al., "Reasoning with Exploration: An Entropy Perspective",
arXiv 2506.14758): the advantage plus a clipped, gradient-free entropy bonus,

    A' = A + min(alpha * H.detach(), |A| / kappa)

with H the per-token entropy of the current policy. The bonus never exceeds |A| / kappa with
kappa > 1 (the paper's requirement), so it cannot reverse the sign of A (it only softens negative
advantages and boosts positive ones), and tokens with A = 0 get none. No official code was found;
the formula is the paper's (arXiv 2506.14758, the entropy-based advantage) as secondary sources
quote it, and the defaults are unverified against the paper's text (docs/baselines.md).

verl 0.9's policy-loss signature carries no entropy, so the shaping happens one level up, in
verl's `ppo_loss`, through the opt-in patch `maspo_verl.patches.entropy_advantage`; it is switched
on by `actor_rollout_ref.actor.policy_loss.entropy_advantage.enable=true` together with
`actor_rollout_ref.actor.calculate_entropy=true` (so verl's engine returns the entropy) and works
with any `loss_mode` (the paper's baseline is GRPO: `loss_mode=vanilla`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from verl.base_config import BaseConfig

from maspo_verl.config_blocks import require_bool, require_number

__all__ = ["EntropyAdvantageConfig", "entropy_shaped_advantages"]


@dataclass
class EntropyAdvantageConfig(BaseConfig):
    """Settings of the entropy-based advantage (arXiv 2506.14758).

    Defaults: kappa = 2 and alpha = 0.4, reported by secondary sources as the paper's values for
    GRPO (0.1 for PPO). UNVERIFIED: the paper's hyper-parameter section could not be read here
    and no official code was found (docs/baselines.md).

    Args:
        enable (bool): apply the shaping. Enabling it applies the `ppo_loss` patch in this process
            (`maspo_verl.patches.entropy_advantage.apply_entropy_advantage`, logged, checked
            against the installed verl version).
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
        if self.enable:
            # The config is built in every process that runs the actor loss (verl's workers build
            # their ActorConfig before they bind `ppo_loss`), so this is where the switch acts.
            from maspo_verl.patches.entropy_advantage import apply_entropy_advantage

            apply_entropy_advantage()


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

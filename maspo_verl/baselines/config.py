"""The policy-loss config that carries MASPO's block and every baseline's: `PolicyLossConfigWithBaselines`.

`configs/maspo.yaml` selects it as `actor_rollout_ref.actor.policy_loss._target_`, so one verl config
tree serves MASPO, its ablations and every baseline of the paper; each block's keys are overridable
there without `+`. It lives with the baselines, not in `maspo_verl.config`, so that MASPO's core
(loss, gate, config, conventions) does not import them. On verl's plain `ppo_trainer`, select it with
`actor_rollout_ref.actor.policy_loss._target_=maspo_verl.baselines.PolicyLossConfigWithBaselines`
and add keys with `+`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from maspo_verl.baselines.bapo import BapoConfig
from maspo_verl.baselines.dac import DacConfig
from maspo_verl.baselines.entropy_advantage import EntropyAdvantageConfig
from maspo_verl.config import MaspoPolicyLossConfig

__all__ = ["PolicyLossConfigWithBaselines"]


@dataclass
class PolicyLossConfigWithBaselines(MaspoPolicyLossConfig):
    """`MaspoPolicyLossConfig` (verl's `PolicyLossConfig` with the `maspo` block) plus the blocks
    `dac` (loss_mode=dac), `bapo` (loss_mode=bapo) and `entropy_advantage` (any loss mode).
    """

    CONFIG_BLOCKS: ClassVar[dict[str, type]] = {
        **MaspoPolicyLossConfig.CONFIG_BLOCKS,
        "dac": DacConfig,
        "bapo": BapoConfig,
        "entropy_advantage": EntropyAdvantageConfig,
    }

    dac: DacConfig = field(default_factory=DacConfig)
    bapo: BapoConfig = field(default_factory=BapoConfig)
    entropy_advantage: EntropyAdvantageConfig = field(default_factory=EntropyAdvantageConfig)

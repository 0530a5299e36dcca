"""The policy-loss config that carries MASPO's block and every baseline's: `PolicyLossConfigWithBaselines`.

The override `+policy_loss=baselines` (configs/policy_loss/baselines.yaml) selects it as
`actor_rollout_ref.actor.policy_loss._target_` over configs/maspo.yaml, so one verl config tree serves
MASPO, its ablations and every baseline of the paper; each block's keys are then overridable without `+`.
It lives with the baselines, not in `maspo_verl.config`, so that MASPO's core (loss, gate, config,
conventions) does not import them. On verl's plain `ppo_trainer`, select it with
`actor_rollout_ref.actor.policy_loss._target_=maspo_verl.baselines.PolicyLossConfigWithBaselines`
and add keys with `+`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from maspo_verl.baselines.bapo import BapoConfig
from maspo_verl.baselines.dac import DacConfig
from maspo_verl.baselines.entropy_advantage import EntropyAdvantageConfig, apply_entropy_advantage
from maspo_verl.config import MaspoPolicyLossConfig

__all__ = ["PolicyLossConfigWithBaselines"]


@dataclass
class PolicyLossConfigWithBaselines(MaspoPolicyLossConfig):
    """`MaspoPolicyLossConfig` (verl's `PolicyLossConfig` with the `maspo` block) plus the blocks
    `dac` (loss_mode=dac), `bapo` (loss_mode=bapo) and `entropy_advantage` (any loss mode).

    Building it with `entropy_advantage.enable=true` calls `apply_entropy_advantage()` in that
    process (see the comment in `__post_init__` for why there).
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

    def __post_init__(self):
        super().__post_init__()
        if self.entropy_advantage.enable:
            # The Entropy Advantage baseline wraps verl's ppo_loss, so the wrapper must be in place
            # in every process that computes the actor loss before verl binds ppo_loss. This is the
            # one point where our code runs there with the config known: verl's
            # ActorRolloutRefWorker.init_model builds the actor config, and with it this class,
            # through `omega_conf_to_dataclass(self.config.actor)`, and only afterwards binds
            # `partial(ppo_loss, config=actor_config)` (verl 0.9.1, workers/engine_workers.py).
            # The plugin runs too early (at `import verl`, before any config exists; and not at all
            # when the package is loaded through `_target_` or VERL_USE_EXTERNAL_MODULES); a
            # registered loss runs too late (ppo_loss is bound by then, and the baseline's GRPO loss
            # is verl's own `vanilla`). The call is version-checked and idempotent; the driver,
            # which builds this config to validate it, gets the (unused) wrapper as well.
            apply_entropy_advantage()

"""The paper's baselines that verl does not ship, registered as verl policy losses.

verl ships GRPO (`vanilla`), Clip Higher (`vanilla` with `clip_ratio_high`) and `sapo`.
Importing this package registers these loss modes (by decorator, as verl's own losses), and
`register_baselines()`, which our plugin (`maspo_verl.integration.plugin`) calls in every process verl
starts, puts them back should anything have replaced them:

- `loss_mode=dac`: DCPO's dynamic adaptive clipping (arXiv 2509.02333), `policy_loss.dac.*`;
- `loss_mode=bapo`: BAPO's adaptive clipping (arXiv 2510.18927), `policy_loss.bapo.*`, as the
  authors' released code (`variant=recipe`, default) or their paper's Eq. 8 and Algorithm 1
  (`variant=paper`);
- `loss_mode=vanilla_with_ratio_stats`: verl's own `vanilla` loss, untouched, plus the ratio's extremes
  per advantage sign every loss here reports (for GRPO arms that log them);

and provides Entropy Advantage (arXiv 2506.14758), `policy_loss.entropy_advantage.*`, which shapes
the advantages of any loss mode through `apply_entropy_advantage()` (a wrapper of verl's
`ppo_loss`). `PolicyLossConfigWithBaselines` carries the `maspo` block and these blocks, and applies
that wrapper when its `entropy_advantage.enable` is true; the override `+policy_loss=baselines`
(configs/policy_loss/baselines.yaml) selects it over configs/maspo.yaml. The baselines use MASPO's
verl conventions (`maspo_verl.conventions`); MASPO's core does not import this package. See
docs/baselines.md.
"""

from verl.trainer.ppo.core_algos import register_policy_loss

from maspo_verl.baselines.bapo import BapoConfig, compute_policy_loss_bapo
from maspo_verl.baselines.config import PolicyLossConfigWithBaselines
from maspo_verl.baselines.dac import DacConfig, compute_policy_loss_dac
from maspo_verl.baselines.entropy_advantage import (
    EntropyAdvantageConfig,
    apply_entropy_advantage,
    entropy_shaped_advantages,
    remove_entropy_advantage,
)
from maspo_verl.baselines.vanilla_with_ratio_stats import compute_policy_loss_vanilla_with_ratio_stats

# Each loss mode this package adds to verl's policy-loss registry, and its function.
BASELINE_LOSSES = {
    "dac": compute_policy_loss_dac,
    "bapo": compute_policy_loss_bapo,
    "vanilla_with_ratio_stats": compute_policy_loss_vanilla_with_ratio_stats,
}

__all__ = [
    "BASELINE_LOSSES",
    "BapoConfig",
    "DacConfig",
    "EntropyAdvantageConfig",
    "PolicyLossConfigWithBaselines",
    "apply_entropy_advantage",
    "compute_policy_loss_bapo",
    "compute_policy_loss_dac",
    "compute_policy_loss_vanilla_with_ratio_stats",
    "entropy_shaped_advantages",
    "register_baselines",
    "remove_entropy_advantage",
]


def register_baselines() -> tuple[str, ...]:
    """Put the baselines' loss modes in verl's policy-loss registry (idempotent); return their names."""
    for loss_mode, loss_fn in BASELINE_LOSSES.items():
        register_policy_loss(loss_mode)(loss_fn)
    return tuple(BASELINE_LOSSES)

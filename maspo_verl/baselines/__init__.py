"""The paper's baselines that verl does not ship, registered as verl policy losses.

verl ships GRPO (`vanilla`), Clip Higher (`vanilla` with `clip_ratio_high`) and `sapo`. Importing
this package (which `import maspo_verl` does) registers:

- `loss_mode=dac`: DCPO's dynamic adaptive clipping (arXiv 2509.02333), `policy_loss.dac.*`;
- `loss_mode=bapo`: BAPO's adaptive clipping (arXiv 2510.18927), `policy_loss.bapo.*`.

See docs/baselines.md.
"""

from maspo_verl.baselines.bapo import BapoConfig, compute_policy_loss_bapo
from maspo_verl.baselines.dac import DacConfig, compute_policy_loss_dac

__all__ = ["BapoConfig", "DacConfig", "compute_policy_loss_bapo", "compute_policy_loss_dac"]

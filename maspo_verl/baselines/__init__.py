"""The paper's baselines that verl does not ship, registered as verl policy losses.

verl ships GRPO (`vanilla`), Clip Higher (`vanilla` with `clip_ratio_high`) and `sapo`. Importing
this package (which `import maspo_verl` does) registers:

- `loss_mode=dac`: DCPO's dynamic adaptive clipping (arXiv 2509.02333), `policy_loss.dac.*`.

See docs/baselines.md.
"""

from maspo_verl.baselines.dac import DacConfig, compute_policy_loss_dac

__all__ = ["DacConfig", "compute_policy_loss_dac"]

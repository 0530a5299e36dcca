"""maspo-verl: MASPO (Mass-Adaptive Soft Policy Optimization, arXiv 2602.17550) for verl.

Importing this package registers `loss_mode="maspo"` (and the baselines in
`maspo_verl.baselines`) in verl's policy-loss registry. verl >= 0.9 imports it in every
process through the `verl.plugins` entry point; older verl through
`VERL_USE_EXTERNAL_MODULES=maspo_verl`.
"""

from maspo_verl import baselines  # noqa: F401  (registers the baseline losses)
from maspo_verl.config import MaspoConfig, MaspoPolicyLossConfig
from maspo_verl.loss import compute_policy_loss_maspo

__version__ = "0.1.0"
SUPPORTED_VERL = ">=0.9.1,<0.10"

__all__ = ["MaspoConfig", "MaspoPolicyLossConfig", "SUPPORTED_VERL", "compute_policy_loss_maspo"]

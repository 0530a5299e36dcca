"""maspo-verl: MASPO (Mass-Adaptive Soft Policy Optimization, arXiv 2602.17550) for verl.

Importing this package registers `loss_mode="maspo"` (and the baselines in
`maspo_verl.baselines`) in verl's policy-loss registry. verl >= 0.9 imports it in every
process through the `verl.plugins` entry point; verl 0.8 through
`VERL_USE_EXTERNAL_MODULES=maspo_verl`. A verl outside the tested versions
(`maspo_verl.compat.TESTED_VERL_VERSIONS`) gets one WARNING line per process saying so.
"""

from maspo_verl import baselines  # noqa: F401  (registers the baseline losses)
from maspo_verl.compat import SUPPORTED_VERL, TESTED_VERL_VERSIONS, log_once_if_untested
from maspo_verl.config import MaspoConfig, MaspoPolicyLossConfig
from maspo_verl.loss import compute_policy_loss_maspo

__version__ = "0.1.0"

log_once_if_untested()

__all__ = [
    "MaspoConfig",
    "MaspoPolicyLossConfig",
    "SUPPORTED_VERL",
    "TESTED_VERL_VERSIONS",
    "compute_policy_loss_maspo",
]

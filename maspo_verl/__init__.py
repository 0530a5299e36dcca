"""maspo-verl: MASPO (Mass-Adaptive Soft Policy Optimization, arXiv 2602.17550) for verl.

Importing this package registers `loss_mode="maspo"` in verl's policy-loss registry and nothing else
of ours: the baselines register through `maspo_verl.baselines.register_baselines()`, the CPU patches
through their own `apply_*` calls. verl >= 0.9 imports `maspo_verl.integration.plugin` in every
process through the `verl.plugins` entry point, which makes both registrations; on verl 0.8 set
`VERL_USE_EXTERNAL_MODULES=maspo_verl.integration.plugin`. A verl outside the tested versions
(`TESTED_VERL_VERSIONS`) gets one WARNING line per process saying so.
"""

# verl first: `import verl` loads verl's plugins, ours (maspo_verl.integration.plugin) among them, which
# imports the baselines and through them maspo_verl.config; importing verl from inside maspo_verl.config
# instead would meet that module half-initialised.
import verl  # noqa: F401, I001

from maspo_verl.config import MaspoConfig, MaspoPolicyLossConfig
from maspo_verl.integration.versions import SUPPORTED_VERL, TESTED_VERL_VERSIONS, log_once_if_untested
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

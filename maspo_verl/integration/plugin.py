"""Target of the `verl.plugins` entry point: verl >= 0.9 imports it in every process (driver and Ray workers).

It registers MASPO (`import maspo_verl`) and the baselines (`register_baselines()`). The CPU patches
are applied only where the user opted in through the environment, each by its own `apply_*` call:
`VERL_PLATFORM=cpu` applies the CPU platform and the hf_cpu rollout backend (they must be in place
before verl's engines are imported, and the entry point is the only code of ours that runs that early
in a Ray worker); `MASPO_FAST_VALIDATION_METRICS=1` applies the vectorized validation bootstrap
(patches/README.md). Without those variables no module of `maspo_verl.patches` is imported.

verl swallows a failing plugin import at debug level (the only symptom would be a later
"Unsupported loss mode: maspo"), so this module logs failures at WARNING before re-raising.
"""

import logging
import os

_logger = logging.getLogger("maspo_verl.integration.plugin")

try:
    import maspo_verl  # noqa: F401  (registers loss_mode="maspo")
    from maspo_verl.baselines import register_baselines

    register_baselines()

    if os.environ.get("VERL_PLATFORM", "").strip().lower() == "cpu":
        from maspo_verl.patches.cpu_platform import apply_cpu_platform
        from maspo_verl.patches.hf_rollout import apply_hf_cpu_rollout

        apply_cpu_platform()
        apply_hf_cpu_rollout()
    if "MASPO_FAST_VALIDATION_METRICS" in os.environ:
        from maspo_verl.patches import fast_validation_metrics

        if fast_validation_metrics.enabled_by_environment():
            fast_validation_metrics.apply_fast_validation_metrics()
except Exception:
    _logger.warning("maspo_verl plugin failed to load; loss_mode=maspo will be unavailable", exc_info=True)
    raise

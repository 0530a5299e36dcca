"""Target of the `verl.plugins` entry point: verl >= 0.9 imports it in every process.

verl swallows a failing plugin import at debug level (the only symptom would be a later
"Unsupported loss mode: maspo"), so this module logs failures at WARNING before re-raising.
It registers the losses and, only when the user opts in with VERL_PLATFORM=cpu, the CPU
platform and the hf_cpu rollout patches (in place before verl's engines are imported); with
MASPO_FAST_VALIDATION_METRICS=1, the vectorized validation bootstrap (patches/README.md).
"""

import logging
import os

_logger = logging.getLogger("maspo_verl.plugin")

try:
    import maspo_verl  # noqa: F401  (registers loss_mode="maspo" and the baselines)

    if os.environ.get("VERL_PLATFORM", "").strip().lower() == "cpu":
        # Opt-in CPU box support (patches/README.md): the CPU platform must be registered before
        # verl's engines are imported; the hf_cpu rollout backend has no use without it.
        from maspo_verl.patches.cpu_platform import apply_cpu_platform
        from maspo_verl.patches.hf_rollout import apply_hf_cpu_rollout

        apply_cpu_platform()
        apply_hf_cpu_rollout()
    from maspo_verl.patches import fast_validation_metrics

    if fast_validation_metrics.enabled_by_environment():
        fast_validation_metrics.apply_fast_validation_metrics()
except Exception:
    _logger.warning("maspo_verl plugin failed to load; loss_mode=maspo will be unavailable", exc_info=True)
    raise

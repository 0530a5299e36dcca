"""Our Hydra configs and composing a trainer config from them as `python -m verl.trainer.main_ppo` does.

`configs/maspo.yaml` composes over verl's own `ppo_trainer` (MASPO's policy-loss config class, MASPO's
block); the override `+policy_loss=baselines` adds the baselines' config class and blocks. `compose` is the one
composer `check`, DRY_RUN and the CPU rehearsal use.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["compose", "config_dir"]


def config_dir() -> Path:
    """Folder holding maspo.yaml (configs/ of a checkout, or maspo_verl/configs when installed)."""
    import maspo_verl.configs

    return Path(maspo_verl.configs.__file__).resolve().parent


def compose(config_name: str = "maspo", overrides: list[str] | None = None, config_path: str | Path | None = None):
    """Compose `<config_path>/<config_name>.yaml` (default: our configs folder) with Hydra overrides.

    `hydra.*` overrides only steer Hydra's own job runtime (output dirs, logging) and are skipped.
    Raises NotADirectoryError for a missing `config_path`; Hydra's own errors otherwise.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    directory = os.path.abspath(os.path.expanduser(str(config_path))) if config_path else str(config_dir())
    if not os.path.isdir(directory):
        raise NotADirectoryError(f"--config-path {str(config_path)!r} is not a directory")
    job_overrides = [o for o in overrides or [] if not o.lstrip("+~").startswith("hydra.")]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=directory, version_base=None):
            return hydra_compose(config_name=config_name, overrides=job_overrides)
    finally:
        GlobalHydra.instance().clear()

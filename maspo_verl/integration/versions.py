"""Which verl versions maspo-verl supports and is tested with, and what to say about the installed one.

`SUPPORTED_VERL` is setup.py's install_requires range; `TESTED_VERL_VERSIONS` are the versions
scripts/test_verl_versions.sh runs (loss, registration, config, verl's `ppo_loss` call site, Hydra
composition). Inside the range but untested (e.g. a later patch release or another commit of
verl's main) the plugin still loads and says so once; `python -m maspo_verl check` says it too.
Code written against verl internals (the CPU patches, Entropy Advantage's `ppo_loss` wrapper)
refuses other versions with `require_verl_version`, which raises `UnsupportedVerlVersion`.
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

__all__ = [
    "PLUGIN_ENTRY_POINTS_SINCE",
    "SUPPORTED_VERL",
    "TESTED_VERL_VERSIONS",
    "UnsupportedVerlVersion",
    "has_plugin_entry_points",
    "installed_verl_version",
    "log_once_if_untested",
    "require_verl_version",
    "verl_support",
]

SUPPORTED_VERL = ">=0.8,<0.11"  # keep equal to setup.py's VERL_RANGE
# 0.10.0.dev0 is verl's main at commit 1dda039b9; every commit of main reports that version, so a
# different main commit passes as "tested" here while only that one was.
TESTED_VERL_VERSIONS = ("0.8.0", "0.9.0", "0.9.1", "0.10.0.dev0")
# verl/__init__.py loads `verl.plugins` entry points from 0.9.0 on; 0.8 only has VERL_USE_EXTERNAL_MODULES.
PLUGIN_ENTRY_POINTS_SINCE = Version("0.9.0")

_logger = logging.getLogger("maspo_verl")
_logged = False


class UnsupportedVerlVersion(RuntimeError):
    """Raised when code written against verl internals runs on a verl it was not written and tested for."""


def installed_verl_version() -> str | None:
    """The installed verl's version, or None when verl is not installed."""
    try:
        return version("verl")
    except PackageNotFoundError:
        return None


def require_verl_version(feature: str, supported: tuple[str, ...]) -> str:
    """Return the installed verl version, or raise `UnsupportedVerlVersion` naming the versions `feature`
    supports. `supported` lists versions or prefixes ending in a dot, e.g. ("0.9.1",) or ("0.9.",)."""
    installed = installed_verl_version()
    if installed is None:
        raise UnsupportedVerlVersion(f"{feature} needs verl, which is not installed")
    if not any(installed == spec or (spec.endswith(".") and installed.startswith(spec)) for spec in supported):
        versions = [f"verl {spec}" for spec in supported]
        listed = versions[0] if len(versions) == 1 else ", for ".join(versions[:-1]) + f" and for {versions[-1]}"
        raise UnsupportedVerlVersion(
            f"{feature} was written and tested for {listed}; the installed verl is "
            f"{installed}. Install a supported verl or leave this patch disabled."
        )
    return installed


def has_plugin_entry_points(verl_version: str) -> bool:
    """Whether `import verl` of this version loads the `verl.plugins` entry points (0.9.0.dev* counts)."""
    return Version(verl_version).release >= PLUGIN_ENTRY_POINTS_SINCE.release


def verl_support(verl_version: str | None) -> tuple[str, str]:
    """("tested" | "untested" | "unsupported", a sentence for the user; empty when tested)."""
    tested = ", ".join(TESTED_VERL_VERSIONS[:-1]) + f" and {TESTED_VERL_VERSIONS[-1]} (verl main at 1dda039b9)"
    if verl_version is None:
        return "unsupported", f"verl is not installed; maspo-verl needs verl{SUPPORTED_VERL}"
    try:
        parsed = Version(verl_version)
    except InvalidVersion:
        return "unsupported", f"verl's version {verl_version!r} is not a PEP 440 version; tested: {tested}"
    if not SpecifierSet(SUPPORTED_VERL).contains(parsed, prereleases=True):
        return "unsupported", (
            f"verl {verl_version} is outside maspo-verl's supported range verl{SUPPORTED_VERL} (tested: {tested}). "
            "The policy-loss registry, ppo_loss or PolicyLossConfig may differ there: expect import or config errors."
        )
    if parsed in {Version(tested_version) for tested_version in TESTED_VERL_VERSIONS}:
        return "tested", ""
    return "untested", (
        f"verl {verl_version} is inside the supported range verl{SUPPORTED_VERL} but not one of the tested "
        f"versions ({tested}). maspo uses only verl's policy-loss registry, agg_loss, ppo_loss and "
        "PolicyLossConfig, so it should work, but nothing has proved it on this version: `python -m maspo_verl "
        "check` proves registration and the config here; scripts/test_verl_versions.sh runs the tests. The CPU "
        "trainer patches (VERL_PLATFORM=cpu) refuse versions they were not tested with."
    )


def log_once_if_untested() -> None:
    """One WARNING per process when the installed verl is not a tested version (called at import)."""
    global _logged
    if _logged:
        return
    _logged = True
    level, message = verl_support(installed_verl_version())
    if level != "tested":
        _logger.warning("maspo-verl: %s", message)

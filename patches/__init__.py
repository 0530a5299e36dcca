"""Opt-in, version-checked patches that make verl do what it lacks (installed as `maspo_verl.patches`).

Each patch is a named function the user calls (or enables with a documented environment
variable), checked against the installed verl version, and tested against verl's unpatched
behaviour. Nothing here runs at import time. See README.md in this folder.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["CPU_BACKEND_VERL_VERSIONS", "UnsupportedVerlVersion", "installed_verl_version", "require_verl_version"]

# The verls the CPU backend (cpu_platform, hf_rollout, fast_replay_buffer, batched_agent_loop) trains with, each
# proven by the version matrix (scripts/test_verl_versions.sh); verl main 1dda039b9 reports 0.10.0.dev0. Here, without a
# verl import, so that a caller can check before importing patches written against verl >= 0.9 internals.
CPU_BACKEND_VERL_VERSIONS = ("0.9.0", "0.9.1", "0.10.0.dev0")


class UnsupportedVerlVersion(RuntimeError):
    """Raised when a patch is enabled on a verl version it was not written and tested for."""


def installed_verl_version() -> str:
    try:
        return version("verl")
    except PackageNotFoundError as error:  # pragma: no cover - verl is a hard dependency
        raise UnsupportedVerlVersion("verl is not installed") from error


def require_verl_version(patch_name: str, supported: tuple[str, ...]) -> str:
    """Return the installed verl version, or raise naming the versions `patch_name` supports.

    `supported` lists version prefixes, e.g. ("0.9.1",) or ("0.9.",).
    """
    installed = installed_verl_version()
    if not any(installed == spec or (spec.endswith(".") and installed.startswith(spec)) for spec in supported):
        versions = [f"verl {spec}" for spec in supported]
        listed = versions[0] if len(versions) == 1 else ", for ".join(versions[:-1]) + f" and for {versions[-1]}"
        raise UnsupportedVerlVersion(
            f"{patch_name} was written and tested for {listed}; the installed verl is "
            f"{installed}. Install a supported verl or leave this patch disabled."
        )
    return installed

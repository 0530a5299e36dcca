"""Opt-in, version-checked patches that make verl do what it lacks (installed as `maspo_verl.patches`).

Each patch is a named function the user calls (or enables with a documented environment
variable), checked against the installed verl version when it is applied, undone by its
`remove_*` function, and tested against verl's unpatched behaviour. Nothing here runs or checks
verl at import time. See README.md in this folder.
"""

from __future__ import annotations

from maspo_verl.integration.versions import UnsupportedVerlVersion, require_verl_version

__all__ = ["CPU_BACKEND_VERL_VERSIONS", "UnsupportedVerlVersion", "require_verl_version"]

# The verls the CPU backend (cpu_platform, hf_rollout, fast_replay_buffer, batched_agent_loop) trains with, each
# proven by the version matrix (scripts/test_verl_versions.sh); verl main 1dda039b9 reports 0.10.0.dev0. Here,
# without a verl import, so that a caller can check before importing patches written against verl >= 0.9 internals.
CPU_BACKEND_VERL_VERSIONS = ("0.9.0", "0.9.1", "0.10.0.dev0")

"""verl's policy-loss conventions shared by every loss of this package (MASPO and the baselines).

The log-ratio clamp verl applies before exp, the NaN/inf check that names the offending tensor,
and verl's dual-clip bound `actor.clip_ratio_c` read and checked from the actor config.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["LOG_RATIO_LIMIT", "dual_clip_bound", "raise_on_non_finite"]

LOG_RATIO_LIMIT = 20.0  # verl's own clamp of log(pi_theta / pi_old) before exp


def raise_on_non_finite(loss_mode: str, response_mask: torch.Tensor, **tensors: torch.Tensor) -> None:
    """Raise ValueError naming each tensor with NaN/inf on a valid response token.

    Losses call it only once a cheap check (a sum of the padding-zeroed inputs) came out
    non-finite, so the per-tensor scan stays off the hot path. When no single tensor holds a
    NaN/inf, the sum overflowed from finite values and the message says so.
    """
    bad = []
    for name, tensor in tensors.items():
        count = int((~torch.isfinite(tensor) & response_mask).sum())
        if count:
            bad.append(f"{name} ({count} token(s))")
    raise ValueError(
        f"loss_mode={loss_mode} got NaN/inf on valid response tokens in: " + ", ".join(bad or ["a product of them"])
        + ". Check the rollout/old-policy log-probs and the advantage estimator."
    )


def dual_clip_bound(config: Any, loss_mode: str) -> float:
    """verl's `actor.clip_ratio_c` (dual-clip bound for negative advantages), checked > 1."""
    clip_ratio_c = config.get("clip_ratio_c", 3.0)
    if not clip_ratio_c > 1.0:
        raise ValueError(
            f"actor.clip_ratio_c (dual-clip bound) must be > 1.0 for loss_mode={loss_mode}, got {clip_ratio_c}"
        )
    return float(clip_ratio_c)

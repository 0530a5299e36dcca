"""verl's policy-loss conventions, written once for MASPO and every baseline of this package.

A policy loss registered with verl (`verl.trainer.ppo.core_algos.register_policy_loss`) is called
once per micro-batch with padded (bs, response_length) tensors and the whole actor config. Every
loss here follows the same four steps, each one function of this module:

1. `prepare_policy_loss_inputs`: cast to at least float32 (bf16 would round ratios near 1 to
   exactly 1), zero the padding (so NaN/inf there reaches neither loss nor gradient) and form the
   ratio r = exp(clamp(log pi_theta - log pi_old, -20, 20)) as verl's vanilla loss does;
2. the loss's own per-token math;
3. `policy_loss_statistics`: one host sync for the valid-token count, the NaN/inf check of the
   inputs (`raise_on_non_finite` names the tensor) and the loss's named statistics, among them the
   ratio's extremes per advantage sign that every loss of this package reports alike
   (`ratio_statistics`, keys RATIO_METRIC_KEYS);
4. `aggregate_policy_loss`: multiply by the rollout importance-sampling weights and reduce only
   through verl's `agg_loss` with the global batch info verl's `ppo_loss` stores in
   `config.global_batch_info`, so gradients do not depend on how a mini-batch is split.

Metrics are Python floats with the same keys on every call (verl averages them over
micro-batches and ranks). verl's actor keys read by the losses: `clip_ratio_c` (dual clip,
`dual_clip_bound`) and `clip_ratio` / `clip_ratio_low` / `clip_ratio_high` (`clip_ratio_bounds`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from verl.trainer.ppo.core_algos import agg_loss

__all__ = [
    "LOG_RATIO_LIMIT",
    "RATIO_METRIC_KEYS",
    "RATIO_PERCENTILE",
    "PolicyLossInputs",
    "aggregate_policy_loss",
    "clip_ratio_bounds",
    "dual_clip_bound",
    "host_values",
    "masked_upper_statistics",
    "policy_loss_statistics",
    "prepare_policy_loss_inputs",
    "raise_on_non_finite",
    "ratio_statistics",
    "upper_statistics",
]

LOG_RATIO_LIMIT = 20.0  # verl's own clamp of log(pi_theta / pi_old) before exp
# The high percentile of the ratio reported beside its maximum, per advantage sign.
RATIO_PERCENTILE = 99
# The ratio's statistics every loss of this package returns (`ratio_statistics`): pos = valid tokens with
# A > 0, neg = valid tokens with A < 0; p99 is the nearest-rank 99th percentile.
RATIO_METRIC_KEYS = (
    "actor/ratio/max_pos",
    "actor/ratio/p99_pos",
    "actor/ratio/max_neg",
    "actor/ratio/p99_neg",
    "actor/ratio/min_neg",
)


@dataclass(frozen=True)
class PolicyLossInputs:
    """One micro-batch as every loss of this package uses it. Tensors are (bs, response_length),
    in `compute_dtype` (at least float32) unless stated, and zero on padding.

    Attributes:
        old_log_prob: log pi_old.
        advantages: A.
        response_mask: valid response tokens, bool.
        log_ratio: log pi_theta - log pi_old, before verl's clamp.
        clamped_log_ratio: the log-ratio clamped to [-20, 20] (verl's `ppo_kl` is its mean, negated).
        ratio: r = exp(clamped_log_ratio); carries log_prob's gradient when prepared with
            `ratio_requires_grad=True`.
        rollout_is_weights: rollout importance-sampling weights in their own dtype, or None.
        compute_dtype: promote_types(log_prob.dtype, float32).
    """

    old_log_prob: torch.Tensor
    advantages: torch.Tensor
    response_mask: torch.Tensor
    log_ratio: torch.Tensor
    clamped_log_ratio: torch.Tensor
    ratio: torch.Tensor
    rollout_is_weights: torch.Tensor | None
    compute_dtype: torch.dtype


def prepare_policy_loss_inputs(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    rollout_is_weights: torch.Tensor | None = None,
    ratio_requires_grad: bool = True,
) -> PolicyLossInputs:
    """verl's policy-loss inputs in the compute dtype, zero on padding, with the ratio formed once.

    Args:
        old_log_prob, log_prob, advantages: (bs, response_length); log_prob carries the gradient.
        response_mask: valid response tokens, (bs, response_length), bool or 0/1.
        rollout_is_weights: optional (bs, response_length); zeroed on padding (verl does not promise
            finite weights there).
        ratio_requires_grad: False computes the ratio without autograd history, for a loss that
            routes the gradient itself (MASPO's soft gate).

    No host sync: the NaN/inf check runs in `policy_loss_statistics`, with the other statistics.

    Raises:
        ValueError: an input whose shape is not log_prob's (torch would broadcast some of them silently, e.g. a
            (1, response_length) mask, and count the valid tokens wrong).
    """
    shapes = {"old_log_prob": old_log_prob, "advantages": advantages, "response_mask": response_mask}
    if rollout_is_weights is not None:
        shapes["rollout_is_weights"] = rollout_is_weights
    for name, tensor in shapes.items():
        if tensor.shape != log_prob.shape:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)} but log_prob has {tuple(log_prob.shape)}: every policy-loss "
                "input is (batch_size, response_length)"
            )
    response_mask = response_mask.bool()
    compute_dtype = torch.promote_types(log_prob.dtype, torch.float32)
    old_log_prob = torch.where(response_mask, old_log_prob.to(compute_dtype), 0.0)
    advantages = torch.where(response_mask, advantages.to(compute_dtype), 0.0)
    if rollout_is_weights is not None:
        rollout_is_weights = torch.where(response_mask, rollout_is_weights, 0.0)
    with torch.set_grad_enabled(ratio_requires_grad and torch.is_grad_enabled()):
        log_ratio = torch.where(response_mask, log_prob.to(compute_dtype) - old_log_prob, 0.0)
        clamped_log_ratio = log_ratio.clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
        ratio = torch.exp(clamped_log_ratio)
    return PolicyLossInputs(
        old_log_prob=old_log_prob,
        advantages=advantages,
        response_mask=response_mask,
        log_ratio=log_ratio,
        clamped_log_ratio=clamped_log_ratio,
        ratio=ratio,
        rollout_is_weights=rollout_is_weights,
        compute_dtype=compute_dtype,
    )


def host_values(
    values: Mapping[str, torch.Tensor | float], dtype: torch.dtype, device: torch.device
) -> dict[str, float]:
    """Named scalars (0-d tensors or Python numbers) as Python floats, with one host sync.

    Each value is cast to `dtype` first (a Python number too, so a metric reads the same whether it
    was computed on the device or on the host). The names key the result, so no statistic is
    read back by its position.
    """
    names = list(values)
    stacked = torch.stack([torch.as_tensor(values[name], dtype=dtype, device=device).reshape(()) for name in names])
    return dict(zip(names, stacked.tolist(), strict=True))


def policy_loss_statistics(
    loss_mode: str,
    inputs: PolicyLossInputs,
    log_prob: torch.Tensor,
    statistics: Mapping[str, torch.Tensor | float],
    per_token_losses: torch.Tensor | None = None,
) -> dict[str, float]:
    """The loss's named `statistics` on the host plus "num_valid" (the valid-token count), in one
    host sync that also checks the inputs and, when given, the per-token losses.

    Sums of the padding-zeroed inputs are finite exactly when no valid token holds NaN/inf, so the
    per-tensor scan of `raise_on_non_finite` (naming the culprit) runs only when that sum is not
    (barring an overflow of finite values, which it then reports as "a product of them").

    Raises:
        ValueError: NaN/inf on a valid token of old_log_prob, log_prob, advantages or the rollout
            importance-sampling weights; or finite inputs whose per-token loss (bs, response_length) is not
            finite, or is beyond what log_prob's dtype holds (float16's 65504), on a valid token.
    """
    with torch.no_grad():
        input_sum = inputs.old_log_prob.sum() + inputs.advantages.sum() + inputs.log_ratio.sum()
        if inputs.rollout_is_weights is not None:
            input_sum = input_sum + inputs.rollout_is_weights.sum()
        checks = {"input_sum": input_sum}
        if per_token_losses is not None and per_token_losses.numel():
            # no mask needed: the inputs' A = 0 on padding makes every loss here 0 there
            checks["loss_abs_max"] = per_token_losses.detach().abs().amax()
        values = host_values(
            {"num_valid": torch.count_nonzero(inputs.response_mask), **checks, **statistics},
            inputs.compute_dtype,
            inputs.ratio.device,
        )
    if not math.isfinite(values.pop("input_sum")):
        checked = dict(old_log_prob=inputs.old_log_prob, log_prob=log_prob.detach(), advantages=inputs.advantages)
        if inputs.rollout_is_weights is not None:
            checked["rollout_is_weights"] = inputs.rollout_is_weights
        raise_on_non_finite(loss_mode, inputs.response_mask, **checked)
    loss_abs_max = values.pop("loss_abs_max", 0.0)
    if not loss_abs_max <= torch.finfo(log_prob.dtype).max:  # also NaN
        raise ValueError(
            f"{loss_mode}: the per-token loss reaches {loss_abs_max:g} on a valid token from finite inputs, beyond "
            f"what log_prob's dtype {log_prob.dtype} holds: extreme advantages or ratios (MASPO leaves A < 0, r > 1 "
            "unbounded unless maspo.clip_ratio_c is set)"
        )
    return values


def aggregate_policy_loss(
    per_token_losses: torch.Tensor,
    inputs: PolicyLossInputs,
    loss_agg_mode: str,
    config: Any,
    num_valid: float,
) -> torch.Tensor:
    """The scalar loss: per-token losses times the rollout importance-sampling weights, reduced by
    verl's `agg_loss` with `config.global_batch_info` (dp_size, batch_num_tokens, global_batch_size,
    loss_scale_factor, written by verl's `ppo_loss`).

    A micro-batch without valid tokens (`num_valid == 0`) gives a zero loss that still reaches the
    graph, with zero gradient: verl's token-mean would divide 0 by 0.
    """
    if inputs.rollout_is_weights is not None:
        per_token_losses = per_token_losses * inputs.rollout_is_weights
    if num_valid == 0:
        return torch.where(inputs.response_mask, per_token_losses, 0.0).sum()
    global_batch_info = getattr(config, "global_batch_info", None) or {}
    return agg_loss(
        loss_mat=per_token_losses, loss_mask=inputs.response_mask, loss_agg_mode=loss_agg_mode, **global_batch_info
    )


def raise_on_non_finite(loss_mode: str, response_mask: torch.Tensor, **tensors: torch.Tensor) -> None:
    """Raise ValueError naming each tensor with NaN/inf on a valid response token.

    Called only once a cheap check (a sum of the padding-zeroed inputs) came out non-finite, so the
    per-tensor scan stays off the hot path. When no single tensor holds a NaN/inf, the sum
    overflowed from finite values and the message says so.
    """
    bad = []
    for name, tensor in tensors.items():
        count = int((~torch.isfinite(tensor) & response_mask).sum())
        if count:
            bad.append(f"{name} ({count} token(s))")
    raise ValueError(
        f"loss_mode={loss_mode} got NaN/inf on valid response tokens in: "
        + ", ".join(bad or ["a product of them"])
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


def clip_ratio_bounds(config: Any) -> tuple[float, float]:
    """verl's PPO clip widths (eps_low, eps_high): `actor.clip_ratio_low` / `clip_ratio_high`, each
    falling back to `actor.clip_ratio` when unset, as verl's vanilla loss reads them."""
    clip_ratio = config.get("clip_ratio", 0.2)
    clip_ratio_low = config.get("clip_ratio_low", None)
    clip_ratio_high = config.get("clip_ratio_high", None)
    return (
        clip_ratio if clip_ratio_low is None else clip_ratio_low,
        clip_ratio if clip_ratio_high is None else clip_ratio_high,
    )


def ratio_statistics(
    inputs: PolicyLossInputs,
    positive: torch.Tensor | None = None,
    negative: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The ratio's extremes per advantage sign, keyed by RATIO_METRIC_KEYS, as 0-d tensors in the compute
    dtype: the largest and the nearest-rank 99th-percentile r over valid tokens with A > 0 (pos) and
    with A < 0 (neg), and the smallest r over neg. Loss-neutral: no gradient, the loss is not touched.
    A side with no token reports 1 (a ratio that did not move).

    The ratio is verl's, r = exp(clamp(log pi_theta - log pi_old, -20, 20)) (`inputs.ratio`). Padding
    has A = 0 in `inputs`, so A > 0 and A < 0 select valid tokens only.

    Args:
        inputs: the micro-batch from `prepare_policy_loss_inputs`.
        positive, negative: `inputs.advantages > 0` and `< 0` (bool, (bs, response_length)) when the
            caller already has them.

    Returns:
        {key: 0-d tensor} for each key of RATIO_METRIC_KEYS, in that order.
    """
    with torch.no_grad():
        ratio = inputs.ratio.detach()
        if positive is None:
            positive = inputs.advantages > 0
        if negative is None:
            negative = inputs.advantages < 0
        if ratio.device.type == "cpu":
            # On the CPU the selected values are compacted (no device to wait for) and only the top share
            # of each side is ordered: about twice as fast as a topk over every position (1M tokens).
            max_pos, p99_pos, _ = upper_statistics(ratio[positive], RATIO_PERCENTILE)
            max_neg, p99_neg, min_neg = upper_statistics(ratio[negative], RATIO_PERCENTILE)
        else:
            # On an accelerator compacting would wait for the device; a topk over all positions does not.
            max_pos, p99_pos, _ = masked_upper_statistics(ratio, positive, RATIO_PERCENTILE)
            max_neg, p99_neg, min_neg = masked_upper_statistics(ratio, negative, RATIO_PERCENTILE)
    return dict(zip(RATIO_METRIC_KEYS, (max_pos, p99_pos, max_neg, p99_neg, min_neg), strict=True))


def upper_statistics(values: torch.Tensor, percentile: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(max, percentile-th percentile, min) of a 1-D tensor, as 0-d tensors; all 1 when it is empty.

    The percentile is the nearest-rank one, the ceil(q n)-th smallest of the n values, i.e. the
    (floor((1 - q) n) + 1)-th largest, taken from one `topk` of that many values.

    Args:
        values: finite values, shape (n,).
        percentile: integer in [1, 100).
    """
    count = values.numel()
    if count == 0:
        one = torch.ones((), dtype=values.dtype, device=values.device)
        return one, one, one
    largest = values.topk(count * (100 - percentile) // 100 + 1).values
    return largest[0], largest[-1], values.min()


def masked_upper_statistics(
    values: torch.Tensor, mask: torch.Tensor, percentile: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`upper_statistics(values[mask], percentile)` without a host sync: one `topk` of the top
    (100 - percentile) % of all positions (an upper bound of the rank needed), the rank picked on the device.

    Args:
        values: finite values, shape (bs, response_length).
        mask: bool, shape (bs, response_length).
        percentile: integer in [1, 100).
    """
    flat = torch.where(mask, values, -torch.inf).view(-1)
    largest = flat.topk(min(flat.numel(), flat.numel() * (100 - percentile) // 100 + 1)).values
    count = torch.count_nonzero(mask)
    rank_from_top = torch.stack([torch.zeros_like(count), count * (100 - percentile) // 100])
    picked = largest.gather(0, rank_from_top.clamp(max=largest.numel() - 1))
    smallest = torch.where(mask, values, torch.inf).min()
    one = torch.ones_like(smallest)
    has_values = count > 0
    return (
        torch.where(has_values, picked[0], one),
        torch.where(has_values, picked[1], one),
        torch.where(has_values, smallest, one),
    )

"""verl's own `vanilla` policy loss (GRPO's PPO clip with verl's dual clip) plus the ratio statistics every
loss of this package reports, registered as `loss_mode="vanilla_with_ratio_stats"`.

The loss and its gradient are verl's, untouched: the function registered under "vanilla" in verl's
policy-loss registry is called with the arguments this one received, and its loss is returned as it
came back. Beside verl's three metrics (`actor/pg_clipfrac`, `actor/ppo_kl`, `actor/pg_clipfrac_lower`)
it returns the ratio's extremes per advantage sign (`maspo_verl.conventions.ratio_statistics`,
`actor/ratio/*`), computed without gradient from the same log-probs, so that a GRPO arm logs how far
its ratios went as MASPO, DAC and BAPO do. Its cost over verl's vanilla is those statistics: one more
host sync and a few passes over the micro-batch.
"""

from __future__ import annotations

from typing import Any

import torch
from verl.trainer.ppo.core_algos import get_policy_loss_fn, register_policy_loss

from maspo_verl.conventions import RATIO_METRIC_KEYS, host_values, prepare_policy_loss_inputs, ratio_statistics

__all__ = ["LOSS_MODE", "METRIC_KEYS", "VANILLA_LOSS_MODE", "compute_policy_loss_vanilla_with_ratio_stats"]

LOSS_MODE = "vanilla_with_ratio_stats"
VANILLA_LOSS_MODE = "vanilla"  # verl's own loss, looked up in verl's registry at each call
METRIC_KEYS = ("actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower", *RATIO_METRIC_KEYS)


@register_policy_loss(LOSS_MODE)
def compute_policy_loss_vanilla_with_ratio_stats(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any | None = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """verl's vanilla PPO-clip loss (verl.trainer.ppo.core_algos.compute_policy_loss_vanilla, via verl's
    registry) with the ratio's extremes per advantage sign added to its metrics.

    Args:
        old_log_prob: log-probs under the old policy, (bs, response_length).
        log_prob: log-probs under the current policy (carries the gradient), (bs, response_length).
        advantages: per-token advantages, (bs, response_length).
        response_mask: valid response tokens, (bs, response_length).
        loss_agg_mode: verl's aggregation mode.
        config: verl's `ActorConfig` (clip_ratio, clip_ratio_low/high, clip_ratio_c, global_batch_info).
        rollout_is_weights: optional rollout-correction weights, (bs, response_length).

    Returns:
        (loss, metrics): verl's vanilla loss as it returned it, and its metrics followed by
        RATIO_METRIC_KEYS (METRIC_KEYS).
    """
    pg_loss, metrics = get_policy_loss_fn(VANILLA_LOSS_MODE)(
        old_log_prob=old_log_prob,
        log_prob=log_prob,
        advantages=advantages,
        response_mask=response_mask,
        loss_agg_mode=loss_agg_mode,
        config=config,
        rollout_is_weights=rollout_is_weights,
    )
    with torch.no_grad():
        # the weights only for the shape check: the statistics are of the ratio
        inputs = prepare_policy_loss_inputs(
            old_log_prob, log_prob.detach(), advantages, response_mask, rollout_is_weights, ratio_requires_grad=False
        )
        statistics = host_values(ratio_statistics(inputs), inputs.compute_dtype, inputs.ratio.device)
    return pg_loss, {**metrics, **statistics}

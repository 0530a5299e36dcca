"""BAPO's adaptive clipping (Xi et al., arXiv 2510.18927), `loss_mode="bapo"`.

BAPO (Balanced Policy Optimization with Adaptive Clipping) picks the ratio bounds per batch:
starting from (c_low, c_high) = (a^-, a^+) it raises c_low by delta^- up to b^-, then c_high by
delta^+ up to b^+, and stops at the first pair where positive-advantage tokens carry at least
rho_0 of the policy-gradient loss, counting each token's r * |A| only where the clipped objective
still passes it a gradient:

    share(c_low, c_high) = P / (P + N),  P = sum_{A>0, r <= c_high} A r,  N = sum_{A<0, r >= c_low} |A| r

Raising c_high lets more positive tokens in, raising c_low clips more negative tokens out, so the
share never falls along the search path. It then applies the clipped surrogate with those bounds
and verl's dual clip; without a pair reaching rho_0 it uses (b^-, b^+). (BAPO's open-source verl
recipe sums the clipped values A * min(r, c_high) and |A| * max(r, c_low) instead, without the
indicators: there raising c_low can only lower the share, so its lower-bound phase always runs to
b^-. We follow the paper's account, c_high admitting positive tokens and c_low excluding
negative ones; see docs/baselines.md.)

Which batch the search sees (verl 0.9): a policy loss is called once per micro-batch and cannot
see the micro-batches of its mini-batch that have not been forwarded yet (their current-policy
ratios do not exist yet). With `search_scope=data_parallel` (default) the per-candidate sums P, N
are all-reduced over torch.distributed's default process group, so every rank chooses the same
bounds from the micro-batches of all ranks at that step: what BAPO's own verl recipe does. With
`search_scope=micro_batch` each micro-batch searches on its own tokens. Either way the search is
per micro-batch and the chosen bounds are logged (`actor/bapo/*`, averaged by verl).

Config: `actor_rollout_ref.actor.policy_loss.bapo.*`, see `BapoConfig`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist
from verl.base_config import BaseConfig
from verl.trainer.ppo.core_algos import register_policy_loss

from maspo_verl.baselines.common import (
    aggregate_policy_loss,
    clip_metrics,
    dual_clip_bound,
    dual_clipped_surrogate,
    metrics_from,
    prepare_policy_loss_inputs,
    require_choice,
    require_number,
    resolve_config_block,
)

__all__ = [
    "BapoConfig",
    "METRIC_KEYS",
    "SEARCH_SCOPES",
    "bound_candidates",
    "choose_bounds",
    "gradient_carrying_mass",
    "compute_policy_loss_bapo",
]

SEARCH_SCOPES = ("data_parallel", "micro_batch")

METRIC_KEYS = (
    "actor/pg_clipfrac",
    "actor/ppo_kl",
    "actor/pg_clipfrac_lower",
    "actor/bapo/lower_bound",
    "actor/bapo/upper_bound",
    "actor/bapo/positive_share",
    "actor/bapo/positive_share_at_start",
    "actor/bapo/search_steps",
    "actor/bapo/search_ranks",
)


@dataclass
class BapoConfig(BaseConfig):
    """Hyper-parameters of BAPO's bound search (arXiv 2510.18927).

    Defaults: rho_0 = 0.5 and the movable ranges [0.6, 0.9] and [1.2, 3.0] are the paper's (as its
    public repository README states); the step sizes are those of the authors' example script
    (recipe/bapo/run_bapo_example.sh: 0.05 for the lower bound, 0.1 for the upper bound).

    Args:
        positive_share_target (float): rho_0, in [0, 1].
        lower_bound_start (float): a^-, first lower ratio bound, in (0, 1].
        lower_bound_max (float): b^-, largest lower bound, in [lower_bound_start, 1].
        lower_bound_step (float): delta^-, > 0.
        upper_bound_start (float): a^+, first upper ratio bound, >= 1.
        upper_bound_max (float): b^+, largest upper bound, >= upper_bound_start.
        upper_bound_step (float): delta^+, > 0.
        search_scope (str): "data_parallel" (sums all-reduced across ranks when torch.distributed
            is initialised) or "micro_batch" (each micro-batch on its own).
    """

    positive_share_target: float = 0.5
    lower_bound_start: float = 0.6
    lower_bound_max: float = 0.9
    lower_bound_step: float = 0.05
    upper_bound_start: float = 1.2
    upper_bound_max: float = 3.0
    upper_bound_step: float = 0.1
    search_scope: str = "data_parallel"

    def __post_init__(self):
        numeric = (
            "positive_share_target",
            "lower_bound_start",
            "lower_bound_max",
            "lower_bound_step",
            "upper_bound_start",
            "upper_bound_max",
            "upper_bound_step",
        )
        for key in numeric:
            require_number(f"policy_loss.bapo.{key}", getattr(self, key))
        require_choice("policy_loss.bapo.search_scope", self.search_scope, SEARCH_SCOPES)
        if not 0.0 <= self.positive_share_target <= 1.0:
            raise ValueError(f"policy_loss.bapo.positive_share_target must be in [0, 1], got {self.positive_share_target}")
        if not 0.0 < self.lower_bound_start <= 1.0:
            raise ValueError(f"policy_loss.bapo.lower_bound_start must be in (0, 1], got {self.lower_bound_start}")
        if not self.lower_bound_start <= self.lower_bound_max <= 1.0:
            raise ValueError(
                f"policy_loss.bapo.lower_bound_max must be in [lower_bound_start ({self.lower_bound_start}), 1], "
                f"got {self.lower_bound_max}"
            )
        if self.upper_bound_start < 1.0:
            raise ValueError(f"policy_loss.bapo.upper_bound_start must be >= 1, got {self.upper_bound_start}")
        if self.upper_bound_max < self.upper_bound_start:
            raise ValueError(
                f"policy_loss.bapo.upper_bound_max must be >= upper_bound_start ({self.upper_bound_start}), "
                f"got {self.upper_bound_max}"
            )
        for key in ("lower_bound_step", "upper_bound_step"):
            if not getattr(self, key) > 0.0:
                raise ValueError(f"policy_loss.bapo.{key} must be > 0, got {getattr(self, key)}")


def bound_candidates(start: float, maximum: float, step: float) -> list[float]:
    """start, start + step, ... and finally `maximum` (the last step is cut at it), as BAPO's recipe
    steps min(c + step, maximum). Rounding noise (0.3 / 0.05 = 6.000000000000001) adds no step."""
    num_steps = max(math.ceil((maximum - start) / step - 1e-9), 0)
    return [round(start + k * step, 12) for k in range(num_steps)] + [maximum]


def gradient_carrying_mass(
    ratio: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    lower_candidates: list[float],
    upper_candidates: list[float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and negative mass of the policy-gradient loss for every candidate bound.

    P(c_high) = sum over valid tokens with A > 0 and r <= c_high of A * r;
    N(c_low) = sum over valid tokens with A < 0 and r >= c_low of |A| * r.
    (PPO's clip cuts the gradient of a positive token above c_high and of a negative one below
    c_low: P depends on c_high only, N on c_low only.)

    Args:
        ratio: r, detached, (bs, response_length); advantages: A, (bs, response_length).

    Returns:
        (P, N): shapes (len(upper_candidates),) and (len(lower_candidates),), float32.
    """
    valid_ratio = ratio[response_mask].float()
    valid_advantages = advantages[response_mask].float()
    positive_terms = valid_advantages.clamp(min=0.0) * valid_ratio
    negative_terms = (-valid_advantages).clamp(min=0.0) * valid_ratio
    uppers = torch.tensor(upper_candidates, dtype=torch.float32, device=ratio.device)
    lowers = torch.tensor(lower_candidates, dtype=torch.float32, device=ratio.device)
    positive_mass = torch.where(valid_ratio[None, :] <= uppers[:, None], positive_terms[None, :], 0.0).sum(-1)
    negative_mass = torch.where(valid_ratio[None, :] >= lowers[:, None], negative_terms[None, :], 0.0).sum(-1)
    return positive_mass, negative_mass


def choose_bounds(
    positive_mass: list[float],
    negative_mass: list[float],
    lower_candidates: list[float],
    upper_candidates: list[float],
    positive_share_target: float,
) -> tuple[float, float, float, float, int]:
    """BAPO's search order: raise c_low first, then c_high; the first pair whose positive share
    P / (P + N) reaches the target wins, else the largest pair. A batch with no non-zero advantage
    (P + N = 0) has nothing to rebalance: share 1, start bounds.

    Returns:
        (c_low, c_high, share at the chosen pair, share at the start pair, number of steps taken).
    """

    def share(lower_index: int, upper_index: int) -> float:
        total = positive_mass[upper_index] + negative_mass[lower_index]
        return positive_mass[upper_index] / total if total > 0 else 1.0

    path = [(i, 0) for i in range(len(lower_candidates))]
    path += [(len(lower_candidates) - 1, j) for j in range(1, len(upper_candidates))]
    start_share = share(*path[0])
    for steps, (i, j) in enumerate(path):
        if share(i, j) >= positive_share_target:
            break
    return lower_candidates[i], upper_candidates[j], share(i, j), start_share, steps


def _sum_across_ranks(stats: torch.Tensor, bapo: BapoConfig, config: Any) -> int:
    """All-reduce `stats` in place over the default process group when the search scope asks for
    it; returns how many ranks' micro-batches the search saw."""
    if bapo.search_scope != "data_parallel" or not (dist.is_available() and dist.is_initialized()):
        return 1
    engine = config.get("engine", None)
    pipeline_stages = engine.get("pipeline_model_parallel_size", 1) if engine is not None else 1
    if pipeline_stages and pipeline_stages > 1:
        # Only the last pipeline stage computes the loss: a collective here would never complete.
        raise ValueError(
            "policy_loss.bapo.search_scope=data_parallel cannot all-reduce under pipeline parallelism "
            f"(pipeline_model_parallel_size={pipeline_stages}); set policy_loss.bapo.search_scope=micro_batch"
        )
    dist.all_reduce(stats, op=dist.ReduceOp.SUM)
    return dist.get_world_size()


@register_policy_loss("bapo")
def compute_policy_loss_bapo(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Optional[Any] = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """PPO-clip loss with BAPO's searched ratio bounds (arXiv 2510.18927) and verl's dual clip.

    Args:
        old_log_prob: log-probs under the old policy, (bs, response_length).
        log_prob: log-probs under the current policy (carries the gradient), (bs, response_length).
        advantages: per-token advantages, (bs, response_length).
        response_mask: valid response tokens, (bs, response_length).
        loss_agg_mode: verl's aggregation mode.
        config: verl's `ActorConfig`; `config.policy_loss.bapo` holds the BAPO keys,
            `config.clip_ratio_c` is the dual-clip bound.
        rollout_is_weights: optional rollout-correction weights, (bs, response_length); they scale
            the loss, not the search (as in BAPO's recipe).

    Returns:
        (loss, metrics): the scalar loss in log_prob's dtype and the scalar metrics METRIC_KEYS.
    """
    bapo = resolve_config_block(config, "bapo", BapoConfig, "bapo")
    clip_ratio_c = dual_clip_bound(config, "bapo")
    inputs = prepare_policy_loss_inputs("bapo", old_log_prob, log_prob, advantages, response_mask)

    lower_candidates = bound_candidates(bapo.lower_bound_start, bapo.lower_bound_max, bapo.lower_bound_step)
    upper_candidates = bound_candidates(bapo.upper_bound_start, bapo.upper_bound_max, bapo.upper_bound_step)
    with torch.no_grad():
        positive_mass, negative_mass = gradient_carrying_mass(
            inputs.ratio.detach(), inputs.advantages, inputs.response_mask, lower_candidates, upper_candidates
        )
        stats = torch.cat([positive_mass, negative_mass])
        search_ranks = _sum_across_ranks(stats, bapo, config)
        stats = stats.tolist()
    c_low, c_high, positive_share, start_share, search_steps = choose_bounds(
        stats[: len(upper_candidates)], stats[len(upper_candidates) :], lower_candidates, upper_candidates,
        bapo.positive_share_target,
    )

    pg_losses, clip_active, dual_clip_active = dual_clipped_surrogate(
        inputs.ratio, inputs.advantages, c_low, c_high, clip_ratio_c
    )
    pg_loss = aggregate_policy_loss(
        pg_losses, inputs.response_mask, loss_agg_mode, config, inputs.num_valid, rollout_is_weights
    )

    with torch.no_grad():
        metrics = metrics_from(
            METRIC_KEYS,
            clip_metrics(inputs, clip_active, dual_clip_active)
            + [c_low, c_high, positive_share, start_share, search_steps, search_ranks],
            inputs.ratio.device,
        )
    return pg_loss.to(log_prob.dtype), metrics

"""BAPO's adaptive clipping (Xi et al., arXiv 2510.18927), `loss_mode="bapo"`.

BAPO (BAlanced Policy Optimization with adaptive clipping) picks the ratio bounds (c_low, c_high)
per batch: starting from (a^-, a^+) it steps the bounds along a fixed path and stops at the first
pair where the positive-advantage tokens carry enough of the clipped surrogate, then applies PPO's
clipped loss with that pair. Both balance sums use the clipped surrogate's values:

    P(c_high) = sum_{A>0} w * A * min(r, c_high)        N(c_low) = sum_{A<0} w * |A| * max(r, c_low)

Two variants, `policy_loss.bapo.variant`, each from one source (docs/baselines.md has the lines):

- `recipe` (default): the authors' released verl code, github WooooDyy/BAPO
  recipe/bapo/policy_loss.py (HEAD 7287044). w = 1 (lines 37-44); criterion P / (N + eps) >=
  target, infinite when N <= 0 (lines 57-60); raise c_low by its step up to its max first
  (lines 126-138), then c_high (lines 140-152), each step min(c + step, max); loss = PPO clip with
  verl's dual clip `actor.clip_ratio_c` (lines 163-176). Defaults: recipe/bapo/run_bapo_example.sh.
  Chosen as default because it is the code that runs BAPO as its authors released it, with no
  reading of ours in it (Eq. 8 as printed needs one, see below).
- `paper`: the paper (paper.pdf in the same repository, commit 602d517). Eq. 8 (Sec. 4.2, p. 6):
  w = pi_rollout(y_t) = exp(old_log_prob), criterion P / (P + N) >= rho_0; Algorithm 1 (p. 7,
  lines 9-17): raise c_high by delta_1 while c_high + delta_1 <= b^+, then c_low by delta_2 while
  c_low + delta_2 <= b^-; loss = Algorithm 1 line 19, min(r A, clip(r, c_low, c_high) A), which
  has no dual clip. Defaults: Sec. 5.1 "Implementation details" (p. 9).
  Ours, labelled: Eq. 8 prints its denominator as |sum_t pi_rollout * min(r A, clip(r, c_low,
  c_high) A)|, the absolute value of a signed sum (|P - N|), which calls a positive share
  "infinite" when P = N; we take the bars per token (P + N), which makes rho the "positive token
  contribution" Sec. 4.2 and Algorithm 1 name. For rho_0 <= 1 the printed placement is the same
  test with the target rho_0 / (1 + 2 rho_0) (0.4 -> 0.2222): set positive_share_target to that.

Neither source leaves dual-clipped negatives (A < 0, r > clip_ratio_c) out of N: the recipe sums
every valid token before it applies the dual clip (policy_loss.py lines 41-44 vs 170-176), Eq. 8
sums every A < 0 token and the paper has no dual clip. Both variants count them at |A| * r.
Raising c_low can only raise N, so in both sources the c_low phase never helps meet the target:
once entered it runs to its end (the recipe enters it first, whenever the start pair misses).

Which batch the search sees (verl 0.9): a policy loss is called once per micro-batch, after that
micro-batch's forward pass. With `search_scope=data_parallel` (default) the sums P and N of every
candidate bound are all-reduced over torch.distributed's default process group in one call, so
every rank chooses the same bounds from the micro-batches of all ranks at that step: what the
recipe does by all-reducing at each search step (policy_loss.py lines 46-55). With
`search_scope=micro_batch` each micro-batch searches on its own tokens.

Config: `actor_rollout_ref.actor.policy_loss.bapo.*`, see `BapoConfig`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from verl.base_config import BaseConfig
from verl.trainer.ppo.core_algos import register_policy_loss

from maspo_verl.baselines.common import clip_metrics, dual_clipped_surrogate, resolve_baseline_block
from maspo_verl.config import require_choice, require_number
from maspo_verl.conventions import (
    RATIO_METRIC_KEYS,
    aggregate_policy_loss,
    dual_clip_bound,
    policy_loss_statistics,
    prepare_policy_loss_inputs,
    ratio_statistics,
)

__all__ = [
    "BapoConfig",
    "METRIC_KEYS",
    "SEARCH_SCOPES",
    "VARIANTS",
    "VARIANT_DEFAULTS",
    "clipped_surrogate_mass",
    "compute_policy_loss_bapo",
    "paper_bound_grid",
    "paper_search_path",
    "recipe_bound_candidates",
    "recipe_search_path",
]

VARIANTS = ("recipe", "paper")
SEARCH_SCOPES = ("data_parallel", "micro_batch")

# Every default with its source. recipe: github WooooDyy/BAPO at 7287044, the launch script
# recipe/bapo/run_bapo_example.sh (its values override the recipe's yaml; lines 23-27 and
# 122-129), eps from recipe/bapo/config.py line 49. paper: Sec. 5.1 "Implementation details"
# (p. 9 of paper.pdf): "rho_0 = 0.4, the movable range a- = 0.6, b- = 0.9, a+ = 1.2, b+ = 3.0,
# and the step size delta_1 = 0.05, delta_2 = 0.02" (delta_1 moves c_high, delta_2 c_low:
# Algorithm 1's inputs).
VARIANT_DEFAULTS: dict[str, dict[str, float]] = {
    "recipe": dict(
        positive_to_negative_target=0.5,  # run_bapo_example.sh:27 target_pos_ratio -> adv_ratio_target (:123)
        lower_bound_start=0.8,  # :23 low_start -> ratio_lower_start (:127)
        lower_bound_max=0.95,  # :24 low_max -> ratio_lower_max (:128)
        lower_bound_step=0.05,  # :129 ratio_lower_step
        upper_bound_start=1.2,  # :25 high_start -> ratio_upper_start (:124)
        upper_bound_max=2.0,  # :26 high_max -> ratio_upper_max (:125)
        upper_bound_step=0.1,  # :126 ratio_upper_step
        eps=1e-8,  # recipe/bapo/config.py:49 (also config/bapo_trainer.yaml:22)
    ),
    "paper": dict(
        positive_share_target=0.4,  # rho_0
        lower_bound_start=0.6,  # a^-
        lower_bound_max=0.9,  # b^-
        lower_bound_step=0.02,  # delta_2
        upper_bound_start=1.2,  # a^+
        upper_bound_max=3.0,  # b^+
        upper_bound_step=0.05,  # delta_1
    ),
}
_VARIANT_ONLY_KEYS = {"recipe": ("positive_to_negative_target", "eps"), "paper": ("positive_share_target",)}

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
    *RATIO_METRIC_KEYS,
)


@dataclass
class BapoConfig(BaseConfig):
    """Hyper-parameters of BAPO's bound search (arXiv 2510.18927). A key left None takes the
    variant's default, `VARIANT_DEFAULTS[variant]` (each with its source line); a key of the
    other variant must stay None.

    Args:
        variant (str): "recipe" (the authors' released code, default) or "paper" (Eq. 8 and
            Algorithm 1).
        positive_to_negative_target (float): recipe only, `adv_ratio_target`: the search stops once
            P / (N + eps) reaches it; >= 0. Default 0.5.
        positive_share_target (float): paper only, rho_0: the search stops once P / (P + N) reaches
            it; in [0, 1]. Default 0.4.
        lower_bound_start, lower_bound_max (float): a^-, b^- (recipe `ratio_lower_start/max`);
            0 < start <= max <= 1. Defaults recipe 0.8, 0.95; paper 0.6, 0.9.
        lower_bound_step (float): c_low's step (paper delta_2), > 0. Defaults recipe 0.05, paper 0.02.
        upper_bound_start, upper_bound_max (float): a^+, b^+; 1 <= start <= max. Defaults 1.2 and
            recipe 2.0, paper 3.0.
        upper_bound_step (float): c_high's step (paper delta_1), > 0. Defaults recipe 0.1, paper 0.05.
        eps (float): recipe only, the P / (N + eps) stabiliser, >= 0. Default 1e-8.
        search_scope (str): "data_parallel" (sums all-reduced across ranks when torch.distributed
            is initialised) or "micro_batch" (each micro-batch on its own).
    """

    variant: str = "recipe"
    positive_to_negative_target: float | None = None
    positive_share_target: float | None = None
    lower_bound_start: float | None = None
    lower_bound_max: float | None = None
    lower_bound_step: float | None = None
    upper_bound_start: float | None = None
    upper_bound_max: float | None = None
    upper_bound_step: float | None = None
    eps: float | None = None
    search_scope: str = "data_parallel"

    def __post_init__(self):
        require_choice("policy_loss.bapo.variant", self.variant, VARIANTS)
        require_choice("policy_loss.bapo.search_scope", self.search_scope, SEARCH_SCOPES)
        other = "paper" if self.variant == "recipe" else "recipe"
        for key in _VARIANT_ONLY_KEYS[other]:
            if getattr(self, key) is not None:
                raise ValueError(
                    f"policy_loss.bapo.{key} belongs to variant={other}, but variant={self.variant}; "
                    f"remove it or set policy_loss.bapo.variant={other}"
                )
        for key, default in VARIANT_DEFAULTS[self.variant].items():
            value = getattr(self, key)
            value = default if value is None else require_number(f"policy_loss.bapo.{key}", value)
            object.__setattr__(self, key, float(value))  # BaseConfig freezes fields after __init__

        if self.variant == "paper" and not 0.0 <= self.positive_share_target <= 1.0:
            raise ValueError(
                f"policy_loss.bapo.positive_share_target must be in [0, 1], got {self.positive_share_target}"
            )
        if self.variant == "recipe":
            for key in ("positive_to_negative_target", "eps"):
                if getattr(self, key) < 0:
                    raise ValueError(f"policy_loss.bapo.{key} must be >= 0, got {getattr(self, key)}")
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


def recipe_bound_candidates(start: float, maximum: float, step: float) -> list[float]:
    """The values the recipe's bound takes: start, then min(c + step, maximum) while c < maximum
    (recipe/bapo/policy_loss.py lines 127-128, 141-142), so the last one is `maximum`. Computed
    as start + k * step, rounded, so float noise (0.3 / 0.05 = 6.000000000000001) adds no step."""
    num_steps = max(math.ceil((maximum - start) / step - 1e-9), 0)
    return [round(start + k * step, 12) for k in range(num_steps)] + [maximum]


def paper_bound_grid(start: float, maximum: float, step: float) -> list[float]:
    """The values Algorithm 1 lets a bound take: start + k * step while it stays <= maximum (its
    tests c_high + delta_1 <= b^+, c_low + delta_2 <= b^-); `maximum` itself only when the range
    is a whole number of steps."""
    num_steps = math.floor((maximum - start) / step + 1e-9)
    return [round(start + k * step, 12) for k in range(num_steps + 1)]


def recipe_search_path(num_lower: int, num_upper: int) -> list[tuple[int, int]]:
    """(lower index, upper index) pairs in the recipe's order: c_low first, to its last value,
    then c_high (recipe/bapo/policy_loss.py lines 126-152)."""
    path = [(i, 0) for i in range(num_lower)]
    return path + [(num_lower - 1, j) for j in range(1, num_upper)]


def paper_search_path(num_lower: int, num_upper: int) -> list[tuple[int, int]]:
    """(lower index, upper index) pairs in Algorithm 1's order (lines 9-17): while c_low can still
    step, c_high steps if it can, else c_low does. With a single c_low value the loop never runs
    (its condition c_low + delta_2 <= b^- fails), so the path is the start pair alone."""
    if num_lower == 1:
        return [(0, 0)]
    path = [(0, j) for j in range(num_upper)]
    return path + [(i, num_upper - 1) for i in range(1, num_lower)]


def clipped_surrogate_mass(
    ratio: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    token_weights: torch.Tensor | None,
    lower_candidates: list[float],
    upper_candidates: list[float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """BAPO's positive and negative masses of the clipped surrogate for every candidate bound
    (paper Eq. 8; recipe/bapo/policy_loss.py lines 37-44):

        P(c_high) = sum_{valid, A>0} w A min(r, c_high),   N(c_low) = sum_{valid, A<0} w |A| max(r, c_low)

    (min(r A, clip(r, c_low, c_high) A) is A min(r, c_high) for A > 0 and A max(r, c_low) for A < 0.)

    Args:
        ratio: r, detached, (bs, response_length); advantages: A, (bs, response_length);
        response_mask: bool, (bs, response_length); token_weights: w, (bs, response_length), or
            None for w = 1.

    Returns:
        (P, N): shapes (len(upper_candidates),) and (len(lower_candidates),), float32.
    """
    valid_ratio = ratio[response_mask].float()
    valid_advantages = advantages[response_mask].float()
    weights = torch.ones_like(valid_ratio) if token_weights is None else token_weights[response_mask].float()
    positive_weight = (weights * valid_advantages.clamp(min=0.0))[None, :]
    negative_weight = (weights * (-valid_advantages).clamp(min=0.0))[None, :]
    uppers = torch.tensor(upper_candidates, dtype=torch.float32, device=ratio.device)[:, None]
    lowers = torch.tensor(lower_candidates, dtype=torch.float32, device=ratio.device)[:, None]
    positive_mass = (positive_weight * torch.minimum(valid_ratio[None, :], uppers)).sum(-1)
    negative_mass = (negative_weight * torch.maximum(valid_ratio[None, :], lowers)).sum(-1)
    return positive_mass, negative_mass


def positive_share(positive_mass: float, negative_mass: float) -> float:
    """P / (P + N); 1 when both are 0 (no non-zero advantage: nothing to rebalance)."""
    total = positive_mass + negative_mass
    return positive_mass / total if total > 0 else 1.0


def _target_met(bapo: BapoConfig, positive_mass: float, negative_mass: float) -> bool:
    if bapo.variant == "paper":  # Eq. 8 with the bars per token (see the module docstring)
        return positive_share(positive_mass, negative_mass) >= bapo.positive_share_target
    if negative_mass <= 0:  # recipe/bapo/policy_loss.py lines 57-60
        return True
    return positive_mass / (negative_mass + bapo.eps) >= bapo.positive_to_negative_target


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


def clipped_surrogate(
    ratio: torch.Tensor, advantages: torch.Tensor, lower: float, upper: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The paper's per-token loss, -min(r A, clip(r, lower, upper) A) (Algorithm 1 line 19), no
    dual clip. Returns (losses, clip_active, dual_clip_active = all False), shapes of `ratio`."""
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, lower, upper)
    with torch.no_grad():
        clip_active = clipped > unclipped
    return torch.maximum(unclipped, clipped), clip_active, torch.zeros_like(clip_active)


@register_policy_loss("bapo")
def compute_policy_loss_bapo(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any | None = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """PPO-clip loss with BAPO's searched ratio bounds (arXiv 2510.18927), as the configured variant.

    Args:
        old_log_prob: log-probs under the old policy, (bs, response_length).
        log_prob: log-probs under the current policy (carries the gradient), (bs, response_length).
        advantages: per-token advantages, (bs, response_length).
        response_mask: valid response tokens, (bs, response_length).
        loss_agg_mode: verl's aggregation mode.
        config: verl's `ActorConfig`; `config.policy_loss.bapo` holds the BAPO keys,
            `config.clip_ratio_c` is the dual-clip bound (variant=recipe only).
        rollout_is_weights: optional rollout-correction weights, (bs, response_length); they scale
            the loss, not the search (recipe/bapo/policy_loss.py lines 178-179).

    Returns:
        (loss, metrics): the scalar loss in log_prob's dtype and the scalar metrics METRIC_KEYS;
        `actor/bapo/positive_share` is P / (P + N) at the chosen pair for either variant.
    """
    bapo = resolve_baseline_block(config, "bapo", BapoConfig, "bapo")
    clip_ratio_c = dual_clip_bound(config, "bapo") if bapo.variant == "recipe" else None
    inputs = prepare_policy_loss_inputs(old_log_prob, log_prob, advantages, response_mask, rollout_is_weights)

    if bapo.variant == "paper":
        lower_candidates = paper_bound_grid(bapo.lower_bound_start, bapo.lower_bound_max, bapo.lower_bound_step)
        upper_candidates = paper_bound_grid(bapo.upper_bound_start, bapo.upper_bound_max, bapo.upper_bound_step)
        path = paper_search_path(len(lower_candidates), len(upper_candidates))
        token_weights = torch.exp(inputs.old_log_prob)  # pi_rollout(y_t) of Eq. 8
    else:
        lower_candidates = recipe_bound_candidates(bapo.lower_bound_start, bapo.lower_bound_max, bapo.lower_bound_step)
        upper_candidates = recipe_bound_candidates(bapo.upper_bound_start, bapo.upper_bound_max, bapo.upper_bound_step)
        path = recipe_search_path(len(lower_candidates), len(upper_candidates))
        token_weights = None
    with torch.no_grad():
        positive_mass, negative_mass = clipped_surrogate_mass(
            inputs.ratio.detach(),
            inputs.advantages,
            inputs.response_mask,
            token_weights,
            lower_candidates,
            upper_candidates,
        )
        stats = torch.cat([positive_mass, negative_mass])
        search_ranks = _sum_across_ranks(stats, bapo, config)
        stats = stats.tolist()
    positive_mass, negative_mass = stats[: len(upper_candidates)], stats[len(upper_candidates) :]
    search_steps = next(
        (k for k, (i, j) in enumerate(path) if _target_met(bapo, positive_mass[j], negative_mass[i])), len(path) - 1
    )
    lower_index, upper_index = path[search_steps]
    c_low, c_high = lower_candidates[lower_index], upper_candidates[upper_index]

    if bapo.variant == "paper":
        pg_losses, clip_active, dual_clip_active = clipped_surrogate(inputs.ratio, inputs.advantages, c_low, c_high)
    else:
        pg_losses, clip_active, dual_clip_active = dual_clipped_surrogate(
            inputs.ratio, inputs.advantages, c_low, c_high, clip_ratio_c
        )
    with torch.no_grad():
        statistics = {
            **clip_metrics(inputs, clip_active, dual_clip_active),
            "actor/bapo/lower_bound": c_low,
            "actor/bapo/upper_bound": c_high,
            "actor/bapo/positive_share": positive_share(positive_mass[upper_index], negative_mass[lower_index]),
            "actor/bapo/positive_share_at_start": positive_share(positive_mass[0], negative_mass[0]),
            "actor/bapo/search_steps": search_steps,
            "actor/bapo/search_ranks": search_ranks,
            **ratio_statistics(inputs),  # the ratio's extremes per advantage sign, as every loss here
        }
    metrics = policy_loss_statistics("bapo", inputs, log_prob, statistics, pg_losses)  # one sync besides the search's
    pg_loss = aggregate_policy_loss(pg_losses, inputs, loss_agg_mode, config, metrics.pop("num_valid"))
    return pg_loss.to(log_prob.dtype), metrics

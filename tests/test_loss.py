"""compute_policy_loss_maspo against an independent reference of the paper's equations,
verl's vanilla loss (the hard-gate identity), gradcheck, bad input, dtypes and metrics."""

import dataclasses
import logging
import math

import pytest
import torch
from helpers import PAPER_DEFAULTS, actor_config, random_loss_inputs
from verl.trainer.ppo.core_algos import compute_policy_loss_vanilla, get_policy_loss_fn

import maspo_verl.config as maspo_config
from maspo_verl import MaspoConfig
from maspo_verl.loss import METRIC_KEYS, compute_policy_loss_maspo

pytestmark = pytest.mark.kind("unit")

AGG_MODES = ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]


def reference_token_losses(old_log_prob, log_prob, advantages, maspo, clip_low=0.2, clip_high=0.2, clip_c=3.0):
    """The paper's per-token MASPO loss written out element by element in float64 (no code
    shared with maspo_verl). Returns the per-token loss as a tensor built from `log_prob`."""
    rows, cols = advantages.shape
    losses = torch.zeros(rows, cols, dtype=torch.float64)
    for i in range(rows):
        for t in range(cols):
            a = float(advantages[i, t])
            lp = log_prob[i, t].double()
            log_ratio = torch.clamp(lp - float(old_log_prob[i, t]), -20.0, 20.0)
            r = torch.exp(log_ratio)
            r_value = float(r.detach())
            p_old = math.exp(float(old_log_prob[i, t]))
            m = maspo["sigma_base"]
            if maspo["mass_adaptive"]:
                m = min(max(maspo["sigma_base"] / p_old ** maspo["alpha"], maspo["sigma_base"]), maspo["sigma_high"])
            k_pos = k_neg = 1.0
            if maspo["risk_control"]:
                k_pos = min(max(1 + maspo["beta_pos"] * a, maspo["adv_low"]), maspo["adv_high"])
                # the clamp as written: past the pole (A > 1/beta_neg) 1/(1 - beta_neg A) < 0 clamps to adv_low
                denominator = 1 - maspo["beta_neg"] * a
                inverse = math.inf if denominator == 0 else 1 / denominator
                k_neg = min(max(inverse, maspo["adv_low"]), maspo["adv_high"])
            sigma_pos, sigma_neg = m * k_pos, m * k_neg
            if maspo["gate"] == "gaussian":
                if a > 0 and r_value > 1:
                    w = math.exp(-((r_value - 1) ** 2) / (2 * sigma_pos**2))
                elif a < 0 and r_value < 1:
                    w = math.exp(-((r_value - 1) ** 2) / (2 * sigma_neg**2))
                else:
                    w = 1.0
                losses[i, t] = -a * w * r
            else:
                low = 1 - clip_low * sigma_neg / maspo["sigma_base"]
                high = 1 + clip_high * sigma_pos / maspo["sigma_base"]
                surrogate = torch.maximum(-a * r, -a * torch.clamp(r, low, high))
                if a < 0:
                    surrogate = torch.minimum(surrogate, torch.tensor(-a * clip_c, dtype=torch.float64))
                losses[i, t] = surrogate
    return losses


def reference_aggregate(losses, mask, mode):
    mask = mask.double()
    if mode == "token-mean":
        return (losses * mask).sum() / mask.sum()
    if mode == "token-sum":
        return (losses * mask).sum()
    per_sequence_sum = (losses * mask).sum(-1)
    has_tokens = mask.sum(-1) > 0
    if mode == "seq-mean-token-sum":
        return per_sequence_sum[has_tokens].mean()
    if mode == "seq-mean-token-sum-norm":
        return per_sequence_sum[has_tokens].mean() / mask.shape[-1]
    if mode == "seq-mean-token-mean":
        return (per_sequence_sum[has_tokens] / mask.sum(-1)[has_tokens]).mean()
    raise AssertionError(mode)


def _loss_and_grad(config, inputs, mode="token-mean", use_weights=False):
    inputs.log_prob.grad = None
    loss, metrics = compute_policy_loss_maspo(
        inputs.old_log_prob,
        inputs.log_prob,
        inputs.advantages,
        inputs.response_mask,
        mode,
        config,
        inputs.rollout_is_weights if use_weights else None,
    )
    loss.backward()
    return loss.detach(), inputs.log_prob.grad.clone(), metrics


CASES = [
    {},
    {"alpha": 0.5, "beta_pos": 0.2, "beta_neg": 0.4},  # strong risk control, tail-heavy limiter
    {"sigma_base": 0.1, "sigma_high": 0.5},  # narrow region: the gate bites
    {"adv_low": 0.5, "adv_high": 1.2, "beta_pos": 0.5, "beta_neg": 0.5},  # clamps active
    {"mass_adaptive": False},
    {"risk_control": False},
    {"gate": "hard"},
    {"gate": "hard", "sigma_base": 0.5, "alpha": 0.5, "beta_pos": 0.3, "beta_neg": 0.3},
]


@pytest.mark.parametrize("overrides", CASES, ids=[str(c) for c in CASES])
@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_value_and_gradient_match_independent_reference(overrides, mode):
    maspo = {**PAPER_DEFAULTS, **overrides}
    config = actor_config(loss_agg_mode=mode, clip_ratio_low=0.2, clip_ratio_high=0.28, **maspo)
    inputs = random_loss_inputs(seed=3, ratio_spread=0.6)
    loss, grad, _ = _loss_and_grad(config, inputs, mode)

    log_prob = inputs.log_prob.detach().double().requires_grad_(True)
    reference = reference_aggregate(
        reference_token_losses(inputs.old_log_prob, log_prob, inputs.advantages, maspo, 0.2, 0.28),
        inputs.response_mask,
        mode,
    )
    reference.backward()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5, abs=1e-7)
    torch.testing.assert_close(grad.double(), log_prob.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("gate", ["gaussian", "hard"])
def test_advantages_at_and_past_the_risk_controllers_pole_match_the_clamp_as_written(gate):
    # 1 - beta_neg A is 0 at A = 1/beta_neg and negative past it; there k_neg is never read (it acts on A < 0)
    beta_neg = PAPER_DEFAULTS["beta_neg"]
    advantages = torch.tensor([[1 / beta_neg, 34.0, 100.0, -1 / beta_neg, -100.0, 0.0]])
    old_log_prob = torch.log(torch.full_like(advantages, 0.3))
    log_prob = old_log_prob + torch.tensor([[0.4, -0.4, 0.9, -0.6, 0.5, 0.2]])
    mask = torch.ones_like(advantages, dtype=torch.bool)
    maspo = {**PAPER_DEFAULTS, "gate": gate}
    config = actor_config(clip_ratio_low=0.2, clip_ratio_high=0.2, **maspo)
    log_prob = log_prob.requires_grad_(True)
    loss, _ = compute_policy_loss_maspo(old_log_prob, log_prob, advantages, mask, "token-mean", config)
    loss.backward()
    reference_log_prob = log_prob.detach().double().requires_grad_(True)
    reference = reference_token_losses(old_log_prob, reference_log_prob, advantages, maspo).mean()
    reference.backward()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    torch.testing.assert_close(log_prob.grad.double(), reference_log_prob.grad, rtol=1e-6, atol=1e-9)


def test_gaussian_gate_attenuates_instead_of_cutting_the_gradient():
    """A>0 token far outside a hard clip's range: vanilla's gradient is 0, MASPO's is -A*w*r."""
    old = torch.log(torch.tensor([[0.5]]))
    log_prob = (old + math.log(1.6)).requires_grad_(True)  # r = 1.6
    advantages, mask = torch.tensor([[1.0]]), torch.tensor([[True]])
    loss, _ = compute_policy_loss_maspo(old, log_prob, advantages, mask, "token-mean", actor_config(risk_control=False))
    loss.backward()
    sigma = min(max(0.5**-0.3, 1.0), 10.0)
    expected = -1.0 * math.exp(-(0.6**2) / (2 * sigma**2)) * 1.6
    assert log_prob.grad.item() == pytest.approx(expected, rel=1e-6)
    log_prob.grad = None
    vanilla, _ = compute_policy_loss_vanilla(old, log_prob, advantages, mask, "token-mean", actor_config())
    vanilla.backward()
    assert log_prob.grad.item() == 0.0


@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("use_weights", [False, True])
def test_hard_gate_without_limiter_and_risk_control_is_verl_vanilla(mode, use_weights):
    config = actor_config(
        loss_agg_mode=mode,
        gate="hard",
        mass_adaptive=False,
        risk_control=False,
        clip_ratio_low=0.15,
        clip_ratio_high=0.3,
        clip_ratio_c=2.0,
    )
    inputs = random_loss_inputs(seed=7, ratio_spread=1.2, with_rollout_is_weights=True)  # dual clip fires
    loss, grad, metrics = _loss_and_grad(config, inputs, mode, use_weights)
    inputs.log_prob.grad = None
    vanilla, vanilla_metrics = compute_policy_loss_vanilla(
        inputs.old_log_prob,
        inputs.log_prob,
        inputs.advantages,
        inputs.response_mask,
        mode,
        config,
        inputs.rollout_is_weights if use_weights else None,
    )
    vanilla.backward()
    torch.testing.assert_close(loss, vanilla.detach(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(grad, inputs.log_prob.grad, rtol=1e-6, atol=1e-7)
    assert vanilla_metrics["actor/pg_clipfrac_lower"] > 0  # the case exercises the dual clip
    for key, value in vanilla_metrics.items():
        assert metrics[key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.parametrize("gate", ["gaussian", "hard"])
def test_zero_alpha_and_beta_equal_switching_the_components_off(gate):
    inputs = random_loss_inputs(seed=11, ratio_spread=0.8)
    zero = _loss_and_grad(actor_config(gate=gate, alpha=0.0, beta_pos=0.0, beta_neg=0.0), inputs)
    off = _loss_and_grad(actor_config(gate=gate, mass_adaptive=False, risk_control=False), inputs)
    torch.testing.assert_close(zero[0], off[0], rtol=0, atol=0)
    torch.testing.assert_close(zero[1], off[1], rtol=0, atol=0)
    # and the components do something when on
    on = _loss_and_grad(actor_config(gate=gate, sigma_base=0.3, alpha=0.5, beta_pos=0.3, beta_neg=0.3), inputs)
    assert not torch.allclose(on[1], off[1])


def test_gradcheck_float64_hard_gate():
    inputs = random_loss_inputs(batch_size=3, response_length=4, seed=5, dtype=torch.float64, ratio_spread=0.5)
    config = actor_config(gate="hard", sigma_base=0.4)

    def loss_of(log_prob):
        return compute_policy_loss_maspo(
            inputs.old_log_prob, log_prob, inputs.advantages, inputs.response_mask, "token-mean", config
        )[0]

    assert torch.autograd.gradcheck(loss_of, (inputs.log_prob,), eps=1e-7, atol=1e-6)


def test_gradcheck_float64_gaussian_gate_with_the_gate_held_constant():
    """The soft gate's weight carries no gradient by design (w.detach()), so the loss's derivative
    is that of the surrogate -A * w * r at frozen w: checked against finite differences."""
    inputs = random_loss_inputs(batch_size=3, response_length=4, seed=5, dtype=torch.float64, ratio_spread=0.5)
    assert _gradcheck_with_frozen_gate(inputs, actor_config(sigma_base=0.4))


def _gradcheck_with_frozen_gate(inputs, config):
    """For the soft gate, d loss / d log_prob = -A * w * r with w held fixed: compare the analytic
    gradient with finite differences of the surrogate at frozen w."""
    log_prob = inputs.log_prob.detach().clone().requires_grad_(True)
    loss, _ = compute_policy_loss_maspo(
        inputs.old_log_prob, log_prob, inputs.advantages, inputs.response_mask, "token-mean", config
    )
    (analytic,) = torch.autograd.grad(loss, log_prob)
    maspo = {**PAPER_DEFAULTS, "sigma_base": 0.4}
    base = log_prob.detach()
    r = torch.exp(base - inputs.old_log_prob)
    weights = reference_token_losses(inputs.old_log_prob, base, inputs.advantages, maspo) / (-inputs.advantages * r)
    weights = torch.where(inputs.advantages == 0, torch.ones_like(weights), weights)

    def frozen(lp):
        ratio = torch.exp(lp - inputs.old_log_prob)
        return reference_aggregate(-inputs.advantages * weights * ratio, inputs.response_mask, "token-mean")

    numeric = torch.zeros_like(base)
    eps = 1e-6
    for index in range(base.numel()):
        bump = torch.zeros_like(base).view(-1)
        bump[index] = eps
        bump = bump.view_as(base)
        numeric.view(-1)[index] = (frozen(base + bump) - frozen(base - bump)) / (2 * eps)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-8)
    return True


@pytest.mark.parametrize("name", ["old_log_prob", "log_prob", "advantages"])
@pytest.mark.parametrize("bad_value", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_inf_on_valid_tokens_raises_naming_the_tensor(name, bad_value):
    inputs = random_loss_inputs(seed=1)
    tensors = {
        "old_log_prob": inputs.old_log_prob,
        "log_prob": inputs.log_prob.detach().clone(),
        "advantages": inputs.advantages.clone(),
    }
    tensors[name][0, 0] = bad_value
    with pytest.raises(ValueError, match=name):
        compute_policy_loss_maspo(
            tensors["old_log_prob"],
            tensors["log_prob"],
            tensors["advantages"],
            inputs.response_mask,
            "token-mean",
            actor_config(),
        )


@pytest.mark.parametrize("name", ["old_log_prob", "advantages", "response_mask", "rollout_is_weights"])
@pytest.mark.parametrize("loss_mode", ["maspo", "dac", "vanilla_with_ratio_stats"])
def test_an_input_of_another_shape_than_log_prob_raises_naming_it(name, loss_mode):
    from maspo_verl.baselines import register_baselines

    register_baselines()
    inputs = random_loss_inputs(seed=1)
    tensors = {
        "old_log_prob": inputs.old_log_prob,
        "advantages": inputs.advantages,
        "response_mask": inputs.response_mask,
        "rollout_is_weights": torch.ones_like(inputs.old_log_prob),
    }
    # a first row only: torch would broadcast it against (bs, response_length) without a word
    tensors[name] = tensors[name][:1]
    with pytest.raises(ValueError, match=f"{name} has shape \\(1, "):
        get_policy_loss_fn(loss_mode)(
            old_log_prob=tensors["old_log_prob"],
            log_prob=inputs.log_prob,
            advantages=tensors["advantages"],
            response_mask=tensors["response_mask"],
            loss_agg_mode="token-mean",
            config=actor_config(),
            rollout_is_weights=tensors["rollout_is_weights"],
        )


def test_finite_inputs_whose_loss_overflows_raise_instead_of_returning_inf():
    # A < 0 and r > 1 is unbounded in the paper's MASPO: -A r passes float16's 65504 at log r = 12
    old_log_prob = torch.zeros(1, 2, dtype=torch.float16)
    log_prob = torch.tensor([[12.0, 0.0]], dtype=torch.float16, requires_grad=True)
    advantages = -torch.ones(1, 2, dtype=torch.float16)
    mask = torch.ones(1, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="maspo: the per-token loss reaches .* torch.float16 .*clip_ratio_c"):
        compute_policy_loss_maspo(old_log_prob, log_prob, advantages, mask, "token-mean", actor_config())
    # bounded by the opt-in dual clip, the same tensors give a finite loss
    loss, _ = compute_policy_loss_maspo(
        old_log_prob, log_prob, advantages, mask, "token-mean", _with_maspo_clip_ratio_c(actor_config(), 3.0)
    )
    assert torch.isfinite(loss)
    # float32: finite inputs whose product overflows
    advantages = torch.tensor([[-1e37, 1e38]])
    log_prob = torch.tensor([[5.0, 0.0]], requires_grad=True)
    with pytest.raises(ValueError, match="per-token loss reaches inf"):
        compute_policy_loss_maspo(torch.zeros(1, 2), log_prob, advantages, mask, "token-mean", actor_config())


@pytest.mark.parametrize("gate", ["gaussian", "hard"])
def test_nan_in_padding_reaches_neither_loss_nor_gradient(gate):
    inputs = random_loss_inputs(seed=2)
    padded = ~inputs.response_mask
    assert padded.any()
    clean_loss, clean_grad, _ = _loss_and_grad(actor_config(gate=gate), inputs)
    old = inputs.old_log_prob.masked_fill(padded, float("nan"))
    advantages = inputs.advantages.masked_fill(padded, float("inf"))
    log_prob = inputs.log_prob.detach().masked_fill(padded, float("nan")).requires_grad_(True)
    loss, _ = compute_policy_loss_maspo(
        old, log_prob, advantages, inputs.response_mask, "token-mean", actor_config(gate=gate)
    )
    loss.backward()
    assert loss.item() == pytest.approx(clean_loss.item())
    assert torch.isfinite(log_prob.grad).all()
    torch.testing.assert_close(log_prob.grad, clean_grad)


@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("gate", ["gaussian", "hard"])
def test_empty_mask_gives_zero_loss_zero_grad_and_finite_metrics(mode, gate):
    inputs = random_loss_inputs(seed=4)
    empty = torch.zeros_like(inputs.response_mask)
    loss, metrics = compute_policy_loss_maspo(
        inputs.old_log_prob, inputs.log_prob, inputs.advantages, empty, mode, actor_config(gate=gate)
    )
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(inputs.log_prob.grad) == 0
    assert all(math.isfinite(v) for v in metrics.values())


def test_bfloat16_inputs_compute_in_float32_and_return_bfloat16():
    inputs32 = random_loss_inputs(seed=6, ratio_spread=0.05)
    inputs16 = random_loss_inputs(seed=6, ratio_spread=0.05, dtype=torch.bfloat16)
    loss16, metrics16 = compute_policy_loss_maspo(
        inputs16.old_log_prob,
        inputs16.log_prob,
        inputs16.advantages,
        inputs16.response_mask,
        "token-mean",
        actor_config(sigma_base=0.02),
    )
    loss16.backward()
    assert loss16.dtype == torch.bfloat16 and inputs16.log_prob.grad.dtype == torch.bfloat16
    # same bf16 values promoted to float32 by hand: MASPO must agree to float32 rounding of the output
    upcast = [t.float() for t in (inputs16.old_log_prob, inputs16.log_prob.detach(), inputs16.advantages)]
    loss32, metrics32 = compute_policy_loss_maspo(
        upcast[0],
        upcast[1].requires_grad_(),
        upcast[2],
        inputs16.response_mask,
        "token-mean",
        actor_config(sigma_base=0.02),
    )
    assert loss16.float().item() == pytest.approx(loss32.item(), rel=1e-2)
    # ratios near 1 are resolved (float32 math), so the narrow gate actually fires
    assert metrics16["actor/maspo/gate_weight_mean"] == pytest.approx(
        metrics32["actor/maspo/gate_weight_mean"], rel=1e-6
    )
    assert metrics16["actor/maspo/gate_weight_mean"] < 1.0
    del inputs32


def test_metrics_are_scalars_with_the_same_keys_and_documented_meaning():
    inputs = random_loss_inputs(seed=8, ratio_spread=0.7)
    _, _, metrics = _loss_and_grad(actor_config(), inputs)
    assert tuple(metrics) == METRIC_KEYS
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    mask = inputs.response_mask
    ratio = torch.exp(inputs.log_prob.detach() - inputs.old_log_prob)
    pos = (inputs.advantages > 0) & (ratio > 1) & mask
    neg = (inputs.advantages < 0) & (ratio < 1) & mask
    assert metrics["actor/maspo/gated_frac_pos"] == pytest.approx(pos.sum().item() / mask.sum().item())
    assert metrics["actor/maspo/gated_frac_neg"] == pytest.approx(neg.sum().item() / mask.sum().item())
    assert metrics["actor/pg_clipfrac"] == pytest.approx((pos | neg).sum().item() / mask.sum().item())
    assert metrics["actor/pg_clipfrac_lower"] == 0.0
    assert 0 < metrics["actor/maspo/gate_weight_mean"] < 1
    assert metrics["actor/ppo_kl"] == pytest.approx(
        (-(inputs.log_prob.detach() - inputs.old_log_prob))[mask].mean().item(), rel=1e-5
    )
    for gate in ("gaussian", "hard"):
        _, _, other = _loss_and_grad(actor_config(gate=gate), random_loss_inputs(seed=9))
        assert tuple(other) == METRIC_KEYS


def test_extreme_inputs_stay_finite():
    inputs = random_loss_inputs(seed=10)
    old = torch.full_like(inputs.old_log_prob, -80.0)  # p_old ~ 1e-35
    log_prob = (old + 40.0 * torch.randn_like(old)).requires_grad_(True)  # log-ratios beyond +-20
    advantages = inputs.advantages * 1e4
    for gate in ("gaussian", "hard"):
        log_prob.grad = None
        loss, metrics = compute_policy_loss_maspo(
            old, log_prob, advantages, inputs.response_mask, "token-mean", actor_config(gate=gate)
        )
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(log_prob.grad).all()
        assert all(math.isfinite(v) for v in metrics.values())


def test_registered_in_verl_and_plain_policy_loss_config_uses_defaults_with_one_warning(caplog, monkeypatch):
    assert get_policy_loss_fn("maspo") is compute_policy_loss_maspo
    monkeypatch.setattr(maspo_config, "_warned_default_blocks", set())
    inputs = random_loss_inputs(seed=12)
    with caplog.at_level(logging.WARNING, logger="maspo_verl.config"):
        plain = _loss_and_grad(actor_config(plain=True), inputs)
        _loss_and_grad(actor_config(plain=True), inputs)
    warnings = [r for r in caplog.records if "without a policy_loss.maspo block: using the defaults" in r.getMessage()]
    assert len(warnings) == 1
    ours = _loss_and_grad(actor_config(), inputs)
    torch.testing.assert_close(plain[0], ours[0])


def test_hard_gate_rejects_invalid_dual_clip():
    inputs = random_loss_inputs(seed=13)
    with pytest.raises(ValueError, match="clip_ratio_c"):
        compute_policy_loss_maspo(
            inputs.old_log_prob,
            inputs.log_prob,
            inputs.advantages,
            inputs.response_mask,
            "token-mean",
            actor_config(gate="hard", clip_ratio_c=1.0),
        )


def test_missing_config_is_a_clear_error():
    inputs = random_loss_inputs(seed=14)
    with pytest.raises(ValueError, match="config"):
        compute_policy_loss_maspo(
            inputs.old_log_prob, inputs.log_prob, inputs.advantages, inputs.response_mask, "token-mean", None
        )


def test_gate_weight_metric_is_the_mean_over_gated_tokens_in_both_modes():
    inputs = random_loss_inputs(seed=15, ratio_spread=1.5)
    ratio = torch.exp(inputs.log_prob.detach() - inputs.old_log_prob)
    outward = ((inputs.advantages > 0) & (ratio > 1) | (inputs.advantages < 0) & (ratio < 1)) & inputs.response_mask
    for gate in ("gaussian", "hard"):
        config = actor_config(gate=gate, clip_ratio_c=1.5)
        _, _, metrics = _loss_and_grad(config, inputs)
        # per-token gradient weight = d loss_t / d log_prob_t divided by the ungated -A * r
        log_prob = inputs.log_prob.detach().clone().requires_grad_(True)
        loss, _ = compute_policy_loss_maspo(
            inputs.old_log_prob, log_prob, inputs.advantages, inputs.response_mask, "token-sum", config
        )
        (grad,) = torch.autograd.grad(loss, log_prob)
        weight = grad / (-inputs.advantages * ratio)
        assert metrics["actor/maspo/gate_weight_mean"] == pytest.approx(weight[outward].mean().item(), rel=1e-5), gate


def test_empty_mask_with_nan_rollout_weights_in_padding_is_still_zero():
    inputs = random_loss_inputs(seed=16, with_rollout_is_weights=True)
    empty = torch.zeros_like(inputs.response_mask)
    weights = torch.full_like(inputs.rollout_is_weights, float("nan"))
    loss, _ = compute_policy_loss_maspo(
        inputs.old_log_prob, inputs.log_prob, inputs.advantages, empty, "token-mean", actor_config(), weights
    )
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(inputs.log_prob.grad) == 0


def test_legacy_dictconfig_actor_config_reads_the_maspo_block():
    """verl's older workers pass the actor config as an OmegaConf DictConfig."""
    from omegaconf import OmegaConf

    inputs = random_loss_inputs(seed=17, ratio_spread=0.6)
    legacy = OmegaConf.create(
        {
            "clip_ratio": 0.2,
            "clip_ratio_c": 3.0,
            "policy_loss": {"loss_mode": "maspo", "maspo": {"sigma_base": 0.3, "gate": "gaussian"}},
        }
    )
    ours = _loss_and_grad(legacy, inputs)
    reference = _loss_and_grad(actor_config(sigma_base=0.3), inputs)
    torch.testing.assert_close(ours[0], reference[0])
    torch.testing.assert_close(ours[1], reference[1])
    bad = OmegaConf.create({"policy_loss": {"maspo": {"sigma_base": -1}}})
    with pytest.raises(ValueError, match="sigma_base must be > 0"):
        compute_policy_loss_maspo(
            inputs.old_log_prob, inputs.log_prob, inputs.advantages, inputs.response_mask, "token-mean", bad
        )


def test_nan_rollout_weight_on_a_valid_token_raises_naming_it():
    inputs = random_loss_inputs(seed=18, with_rollout_is_weights=True)
    inputs.rollout_is_weights[0, 0] = float("nan")
    with pytest.raises(ValueError, match="rollout_is_weights"):
        compute_policy_loss_maspo(
            inputs.old_log_prob,
            inputs.log_prob,
            inputs.advantages,
            inputs.response_mask,
            "token-mean",
            actor_config(),
            inputs.rollout_is_weights,
        )


def test_gate_weight_metric_stays_exact_on_a_million_tokens():
    """One gated token among 2^20: the mean gate weight must be that token's weight."""
    size = 1 << 20
    old = torch.full((1, size), math.log(0.5))
    log_prob = old.clone()
    log_prob[0, 0] += math.log(1.6)  # r = 1.6 on the first token only
    advantages = torch.ones(1, size)
    mask = torch.ones(1, size, dtype=torch.bool)
    _, metrics = compute_policy_loss_maspo(
        old, log_prob, advantages, mask, "token-mean", actor_config(risk_control=False)
    )
    sigma = 0.5**-0.3
    assert metrics["actor/maspo/gate_weight_mean"] == pytest.approx(math.exp(-(0.6**2) / (2 * sigma**2)), rel=1e-5)


def _nearest_rank(values, percentile):
    """The ceil(percentile/100 * n)-th smallest of a list, in integer arithmetic."""
    ordered = sorted(values)
    return ordered[-(-percentile * len(ordered) // 100) - 1]


def test_width_metrics_average_each_width_over_the_tokens_it_acts_on():
    inputs = random_loss_inputs(batch_size=16, response_length=40, seed=19, ratio_spread=0.8)
    maspo = dict(sigma_base=1.0, alpha=0.5, beta_pos=0.2, beta_neg=0.4, sigma_high=10.0, adv_low=0.1, adv_high=10.0)
    for gate in ("gaussian", "hard"):
        _, _, metrics = _loss_and_grad(actor_config(gate=gate, **maspo), inputs)
        pos_widths, neg_widths = [], []
        for i, t in inputs.response_mask.nonzero().tolist():
            a = float(inputs.advantages[i, t])
            r = math.exp(float(inputs.log_prob[i, t]) - float(inputs.old_log_prob[i, t]))
            m = min(max(math.exp(float(inputs.old_log_prob[i, t])) ** -maspo["alpha"], 1.0), maspo["sigma_high"])
            if a > 0 and r > 1:
                pos_widths.append(m * min(max(1 + maspo["beta_pos"] * a, 0.1), 10.0))
            elif a < 0 and r < 1:
                neg_widths.append(m * min(max(1 / (1 - maspo["beta_neg"] * a), 0.1), 10.0))
        assert pos_widths and neg_widths
        assert metrics["actor/maspo/sigma_pos_mean"] == pytest.approx(sum(pos_widths) / len(pos_widths), rel=1e-5), gate
        assert metrics["actor/maspo/sigma_neg_mean"] == pytest.approx(sum(neg_widths) / len(neg_widths), rel=1e-5), gate

    # only A > 0: sigma_neg acts nowhere and reports sigma_base, not the width of tokens it never touched
    positive = random_loss_inputs(seed=20, ratio_spread=0.8)
    positive.advantages = positive.advantages.abs() + 0.5
    _, _, metrics = _loss_and_grad(actor_config(sigma_base=0.7, alpha=0.5), positive)
    assert metrics["actor/maspo/sigma_neg_mean"] == 0.7 and metrics["actor/maspo/gated_frac_neg"] == 0.0
    assert metrics["actor/maspo/sigma_pos_mean"] > 0.7  # the limiter widened tail tokens


def test_ratio_extremes_per_advantage_sign_include_the_unbounded_side():
    inputs = random_loss_inputs(batch_size=24, response_length=50, seed=21, ratio_spread=0.6)
    negative_row = int((inputs.advantages[:, 0] < 0).nonzero()[0])
    inputs.log_prob.data[negative_row, 0] = inputs.old_log_prob[negative_row, 0] + math.log(50.0)
    for gate in ("gaussian", "hard"):
        _, _, metrics = _loss_and_grad(actor_config(gate=gate, clip_ratio_c=3.0), inputs)
        ratio = torch.exp(inputs.log_prob.detach() - inputs.old_log_prob)
        valid = inputs.response_mask
        pos = ratio[valid & (inputs.advantages > 0)].tolist()
        neg = ratio[valid & (inputs.advantages < 0)].tolist()
        assert len(pos) >= 200 and len(neg) >= 200  # the 99th percentile is not the maximum here
        assert metrics["actor/ratio/max_pos"] == pytest.approx(max(pos), rel=1e-6)
        assert metrics["actor/ratio/p99_pos"] == pytest.approx(_nearest_rank(pos, 99), rel=1e-6)
        assert metrics["actor/ratio/p99_pos"] < metrics["actor/ratio/max_pos"]
        assert metrics["actor/ratio/min_neg"] == pytest.approx(min(neg), rel=1e-6)
        # nothing bounds A < 0, r > 1 (the authors' MASPO): the metric shows the ratio reached 50
        assert metrics["actor/ratio/max_neg"] == pytest.approx(50.0, rel=1e-5)
        assert metrics["actor/ratio/p99_neg"] == pytest.approx(_nearest_rank(neg, 99), rel=1e-6)
        unbounded = sum(r > 1 for r in neg) / int(valid.sum())
        assert metrics["actor/maspo/unbounded_frac_neg"] == pytest.approx(unbounded)


def test_ratio_extremes_of_an_empty_side_are_one_with_the_same_keys():
    inputs = random_loss_inputs(seed=22, ratio_spread=0.8)
    inputs.advantages = inputs.advantages.abs() + 0.5  # no A < 0 token
    _, _, metrics = _loss_and_grad(actor_config(), inputs)
    assert tuple(metrics) == METRIC_KEYS
    assert metrics["actor/ratio/min_neg"] == metrics["actor/ratio/max_neg"] == 1.0
    assert metrics["actor/ratio/p99_neg"] == 1.0 and metrics["actor/maspo/unbounded_frac_neg"] == 0.0
    assert metrics["actor/ratio/max_pos"] > 1.0
    empty = torch.zeros_like(inputs.response_mask)
    _, metrics = compute_policy_loss_maspo(
        inputs.old_log_prob, inputs.log_prob, inputs.advantages, empty, "token-mean", actor_config()
    )
    assert tuple(metrics) == METRIC_KEYS and metrics["actor/ratio/max_pos"] == 1.0


def _with_maspo_clip_ratio_c(config, clip_ratio_c):
    """`config` with `policy_loss.maspo.clip_ratio_c` set (the test helper sends clip_ratio_c to the actor)."""
    maspo = dataclasses.replace(config.policy_loss.maspo, clip_ratio_c=clip_ratio_c)
    return dataclasses.replace(config, policy_loss=dataclasses.replace(config.policy_loss, maspo=maspo))


@pytest.mark.parametrize("clip_ratio_c", [None, 3.0])
def test_soft_gate_dual_clip_by_hand(clip_ratio_c):
    """Four tokens, p_old = 1, sigma = 1 (limiter and risk controller off), token-sum:
    A = -1, r = 4: unbounded loss -A r = 4 (gradient 4); with c = 3 the constant -A c = 3 (gradient 0);
    A = -1, r = 2 < c: -A r = 2 either way (gradient 2);
    A = +1, r = 4: gated, -A w r with w = exp(-9/2) (gradient -4 w);
    A = -2, r = 0.5: gated, -A w r = w with w = exp(-1/8) (gradient w)."""
    old = torch.zeros(1, 4)
    log_prob = torch.log(torch.tensor([[4.0, 2.0, 4.0, 0.5]])).requires_grad_(True)
    advantages = torch.tensor([[-1.0, -1.0, 1.0, -2.0]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    config = _with_maspo_clip_ratio_c(actor_config(mass_adaptive=False, risk_control=False), clip_ratio_c)
    loss, metrics = compute_policy_loss_maspo(old, log_prob, advantages, mask, "token-sum", config)
    loss.backward()
    w_pos, w_neg = math.exp(-4.5), math.exp(-0.125)
    first_loss, first_grad = (4.0, 4.0) if clip_ratio_c is None else (3.0, 0.0)
    assert loss.item() == pytest.approx(first_loss + 2.0 - 4.0 * w_pos + w_neg, rel=1e-6)
    torch.testing.assert_close(log_prob.grad, torch.tensor([[first_grad, 2.0, -4.0 * w_pos, w_neg]]))
    assert metrics["actor/pg_clipfrac_lower"] == (0.0 if clip_ratio_c is None else 0.25)
    assert metrics["actor/pg_clipfrac"] == 0.5  # the two gated tokens; the dual clip is counted apart, as verl
    assert metrics["actor/maspo/unbounded_frac_neg"] == 0.5  # A < 0, r > 1 whether or not c bounds it
    assert metrics["actor/ratio/max_neg"] == pytest.approx(4.0)  # loss-neutral: the ratio itself


def test_soft_gate_dual_clip_matches_reference_with_weights_in_every_mode():
    """Random inputs: the soft gate with c equals the paper's loss with min(., -A c) on A < 0, r > 1 tokens."""
    maspo = {**PAPER_DEFAULTS, "sigma_base": 0.5}
    inputs = random_loss_inputs(seed=23, ratio_spread=1.2, with_rollout_is_weights=True)
    for mode in AGG_MODES:
        config = _with_maspo_clip_ratio_c(actor_config(loss_agg_mode=mode, sigma_base=0.5), 2.0)
        loss, grad, metrics = _loss_and_grad(config, inputs, mode, use_weights=True)
        log_prob = inputs.log_prob.detach().double().requires_grad_(True)
        token_losses = reference_token_losses(inputs.old_log_prob, log_prob, inputs.advantages, maspo)
        negative = inputs.advantages.double() < 0
        capped = torch.minimum(token_losses, -inputs.advantages.double() * 2.0)
        token_losses = torch.where(negative, capped, token_losses) * inputs.rollout_is_weights.double()
        reference = reference_aggregate(token_losses, inputs.response_mask, mode)
        reference.backward()
        assert loss.item() == pytest.approx(reference.item(), rel=1e-5, abs=1e-7), mode
        torch.testing.assert_close(grad.double(), log_prob.grad, rtol=1e-5, atol=1e-7)
        ratio = torch.exp(inputs.log_prob.detach() - inputs.old_log_prob)
        cut = (negative & (ratio > 2.0) & inputs.response_mask).sum().item()
        assert cut > 0 and metrics["actor/pg_clipfrac_lower"] == pytest.approx(cut / inputs.response_mask.sum().item())


def test_hard_gate_takes_maspo_clip_ratio_c_in_place_of_the_actors():
    inputs = random_loss_inputs(seed=24, ratio_spread=1.2)
    settings = dict(gate="hard", mass_adaptive=False, risk_control=False)
    ours = _loss_and_grad(_with_maspo_clip_ratio_c(actor_config(clip_ratio_c=3.0, **settings), 1.5), inputs)
    actors = _loss_and_grad(actor_config(clip_ratio_c=1.5, **settings), inputs)
    default = _loss_and_grad(actor_config(clip_ratio_c=3.0, **settings), inputs)
    assert torch.equal(ours[0], actors[0]) and torch.equal(ours[1], actors[1]) and ours[2] == actors[2]
    assert not torch.equal(ours[1], default[1])  # the bound changed something


@pytest.mark.parametrize("bad", [1.0, 0.5, -3.0, float("nan"), float("inf"), "3", True])
def test_maspo_clip_ratio_c_must_be_a_number_above_one_or_null(bad):
    with pytest.raises(ValueError, match=r"policy_loss\.maspo\.clip_ratio_c"):
        MaspoConfig(clip_ratio_c=bad)
    assert MaspoConfig().clip_ratio_c is None and MaspoConfig(clip_ratio_c=3).clip_ratio_c == 3.0

"""maspo_verl.baselines.entropy_advantage: Entropy Advantage (arXiv 2506.14758) through its wrapper of
verl's ppo_loss: the shaping formula, the wrapped ppo_loss against verl's unwrapped ppo_loss (switch
off, alpha = 0, and on with advantages shaped in the test), both advantage layouts, the call sites,
the explicit switch (`apply_entropy_advantage`, called by PolicyLossConfigWithBaselines and by
nothing else), the version check, bad input."""

import dataclasses
import inspect

import helpers
import pytest
import torch
import verl.trainer.distillation.losses as verl_distillation_losses
import verl.workers.engine_workers as verl_engine_workers
import verl.workers.utils.losses as verl_losses
from helpers import actor_config, random_loss_inputs, run_verl_ppo_loss

import maspo_verl.integration.versions
from maspo_verl.baselines import PolicyLossConfigWithBaselines
from maspo_verl.baselines.entropy_advantage import (
    METRIC_KEYS,
    EntropyAdvantageConfig,
    apply_entropy_advantage,
    entropy_advantage_applied,
    entropy_shaped_advantages,
    ppo_loss_with_entropy_advantage,
    remove_entropy_advantage,
)
from maspo_verl.patches import UnsupportedVerlVersion

pytestmark = pytest.mark.kind("unit")

VERL_PPO_LOSS = verl_losses.ppo_loss


@pytest.fixture
def unpatched_afterwards():
    """Every test starts and ends with verl's own ppo_loss. Building the policy-loss config with
    enable=True applies the wrapper, so an earlier test in this process (a dry run of
    entropy_adv.sh, say) may have left it applied: undo that first."""
    remove_entropy_advantage()
    assert not entropy_advantage_applied() and verl_losses.ppo_loss is VERL_PPO_LOSS
    yield
    remove_entropy_advantage()
    assert verl_losses.ppo_loss is VERL_PPO_LOSS and verl_engine_workers.ppo_loss is VERL_PPO_LOSS


def entropy_actor_config(loss_mode="vanilla", loss_agg_mode="token-mean", **settings):
    """verl's actor config with the policy-loss config configs/maspo.yaml selects; with
    enable=True, building it applies the wrapper in this process."""
    base = actor_config(loss_mode=loss_mode, loss_agg_mode=loss_agg_mode, plain=True)
    policy_loss = PolicyLossConfigWithBaselines(
        loss_mode=loss_mode, entropy_advantage=EntropyAdvantageConfig(**settings)
    )
    return dataclasses.replace(base, policy_loss=policy_loss)


def entropy_of(log_prob):
    """A stand-in per-token entropy laid out like the engine's log-probs (same nested layout)."""
    return 0.5 - 0.3 * log_prob


def run_ppo_loss(monkeypatch, loss_function, config, inputs, nested_advantages=False):
    """helpers.run_verl_ppo_loss, calling `loss_function` with the entropy the engine would return
    (and, with `nested_advantages`, the advantages nested per response as verl's TransferQueue
    trainer stores them)."""

    def with_entropy(config, model_output, data):
        if nested_advantages:
            lengths = data["response_mask"].sum(-1).tolist()
            advantages = data["advantages"]
            data["advantages"] = torch.nested.as_nested_tensor(
                [advantages[i, :n] for i, n in enumerate(lengths)], layout=torch.jagged
            )
        model_output = {**model_output, "entropy": entropy_of(model_output["log_probs"].detach())}
        return loss_function(config, model_output, data)

    monkeypatch.setattr(helpers, "ppo_loss", with_entropy)
    loss, metrics = run_verl_ppo_loss(config, inputs)
    (grad,) = torch.autograd.grad(loss, inputs.log_prob)
    return (
        loss,
        grad,
        {key: value.aggregate() if hasattr(value, "aggregate") else value for key, value in metrics.items()},
    )


def fresh(inputs):
    return dataclasses.replace(inputs, log_prob=inputs.log_prob.detach().clone().requires_grad_(True))


def test_shaping_formula_element_by_element():
    generator = torch.Generator().manual_seed(0)
    advantages = torch.randn(4, 6, generator=generator) * 2
    entropy = (torch.rand(4, 6, generator=generator) * 3).requires_grad_(True)
    mask = torch.rand(4, 6, generator=generator) > 0.3
    shaped, bonus = entropy_shaped_advantages(advantages, entropy, mask, alpha=0.4, kappa=2.0)
    for i in range(4):
        for t in range(6):
            a, h = float(advantages[i, t]), float(entropy[i, t].detach())
            expected = a + min(0.4 * h, abs(a) / 2.0) if mask[i, t] else a
            assert float(shaped[i, t]) == pytest.approx(expected, rel=1e-6, abs=1e-7)
            assert (expected > 0) == (a > 0) or a == 0  # kappa >= 1 never flips the sign
    assert not shaped.requires_grad and not bonus.requires_grad  # H is detached
    assert torch.equal(bonus[~mask], torch.zeros_like(bonus[~mask]))


def test_switch_off_is_verls_ppo_loss(monkeypatch, unpatched_afterwards):
    inputs = random_loss_inputs(seed=1, ratio_spread=0.5)
    config = entropy_actor_config(enable=False)
    expected = run_ppo_loss(monkeypatch, VERL_PPO_LOSS, config, fresh(inputs))
    apply_entropy_advantage()
    assert verl_losses.ppo_loss is ppo_loss_with_entropy_advantage
    for patched_config in (config, actor_config(loss_mode="vanilla", plain=True)):  # off; no block at all
        loss, grad, metrics = run_ppo_loss(monkeypatch, verl_losses.ppo_loss, patched_config, fresh(inputs))
        torch.testing.assert_close(loss, expected[0])
        torch.testing.assert_close(grad, expected[1])
        assert metrics == expected[2]


def test_alpha_zero_leaves_verls_result_unchanged(monkeypatch, unpatched_afterwards):
    inputs = random_loss_inputs(seed=2, ratio_spread=0.5)
    expected = run_ppo_loss(monkeypatch, VERL_PPO_LOSS, entropy_actor_config(enable=False), fresh(inputs))
    config = entropy_actor_config(enable=True, alpha=0.0)  # applies the wrapper
    loss, grad, metrics = run_ppo_loss(monkeypatch, verl_losses.ppo_loss, config, fresh(inputs))
    torch.testing.assert_close(loss, expected[0])
    torch.testing.assert_close(grad, expected[1])
    assert {key: metrics[key] for key in expected[2]} == expected[2]
    assert metrics["actor/entropy_advantage/bonus_mean"] == 0.0


@pytest.mark.parametrize("loss_mode, nested", [("vanilla", False), ("vanilla", True), ("dac", False)])
def test_on_equals_verl_with_advantages_shaped_in_the_test(monkeypatch, unpatched_afterwards, loss_mode, nested):
    inputs = random_loss_inputs(seed=3, ratio_spread=0.5)
    config = entropy_actor_config(loss_mode=loss_mode, enable=True, alpha=0.4, kappa=2.0)
    assert entropy_advantage_applied()  # building the config with enable=True applied the wrapper
    loss, grad, metrics = run_ppo_loss(monkeypatch, verl_losses.ppo_loss, config, fresh(inputs), nested)

    entropy = entropy_of(inputs.log_prob.detach())
    bonus = torch.minimum(0.4 * entropy, inputs.advantages.abs() / 2.0) * inputs.response_mask
    shaped = dataclasses.replace(fresh(inputs), advantages=inputs.advantages + bonus)
    off = entropy_actor_config(loss_mode=loss_mode, enable=False)
    expected_loss, expected_grad, expected_metrics = run_ppo_loss(monkeypatch, VERL_PPO_LOSS, off, shaped)
    torch.testing.assert_close(loss, expected_loss)
    torch.testing.assert_close(grad, expected_grad)
    assert not torch.allclose(grad, run_ppo_loss(monkeypatch, VERL_PPO_LOSS, off, fresh(inputs))[1])
    valid = inputs.response_mask
    capped = (0.4 * entropy > inputs.advantages.abs() / 2.0) & valid
    assert metrics["actor/entropy_advantage/bonus_mean"] == pytest.approx(float(bonus[valid].mean()), rel=1e-5)
    assert metrics["actor/entropy_advantage/capped_frac"] == pytest.approx(float(capped.sum() / valid.sum()), rel=1e-5)
    assert set(METRIC_KEYS) <= set(metrics) and set(expected_metrics) <= set(metrics)


def test_missing_entropy_names_calculate_entropy(unpatched_afterwards):
    """verl's engine returns no entropy unless actor.calculate_entropy (or entropy_coeff) is set."""
    config = entropy_actor_config(enable=True)
    with pytest.raises(ValueError, match="actor_rollout_ref.actor.calculate_entropy=true"):
        ppo_loss_with_entropy_advantage(config, {"log_probs": None}, data=None)


def test_call_sites_are_rebound_and_restored(unpatched_afterwards):
    apply_entropy_advantage()
    apply_entropy_advantage()  # idempotent
    for module in (verl_losses, verl_engine_workers, verl_distillation_losses):
        assert module.ppo_loss is ppo_loss_with_entropy_advantage
    remove_entropy_advantage()
    for module in (verl_losses, verl_engine_workers, verl_distillation_losses):
        assert module.ppo_loss is VERL_PPO_LOSS
    assert not entropy_advantage_applied()


def test_unsupported_verl_version_refuses(monkeypatch, unpatched_afterwards):
    monkeypatch.setattr(maspo_verl.integration.versions, "installed_verl_version", lambda: "0.8.0")
    with pytest.raises(UnsupportedVerlVersion, match="apply_entropy_advantage was written and tested for verl 0.9.1"):
        apply_entropy_advantage()
    with pytest.raises(UnsupportedVerlVersion, match="apply_entropy_advantage"):
        PolicyLossConfigWithBaselines(loss_mode="vanilla", entropy_advantage={"enable": True})
    assert verl_losses.ppo_loss is VERL_PPO_LOSS


@pytest.mark.parametrize(
    "keys, message",
    [
        (dict(alpha=-0.1), "policy_loss.entropy_advantage.alpha"),
        (dict(kappa=0.5), "policy_loss.entropy_advantage.kappa"),
        (dict(enable="yes"), "policy_loss.entropy_advantage.enable"),
        (dict(kappa=float("inf")), "policy_loss.entropy_advantage.kappa"),
    ],
)
def test_bad_config_names_the_key(keys, message, unpatched_afterwards):
    with pytest.raises(ValueError, match=message):
        EntropyAdvantageConfig(**keys)


@pytest.mark.parametrize("kappa", [1.0, 1, 0.999, 0.0, -2.0])
def test_kappa_must_exceed_one_as_the_paper_requires(kappa, unpatched_afterwards):
    """arXiv 2506.14758 requires kappa > 1: kappa = 1 is rejected too, naming the full key."""
    with pytest.raises(
        ValueError, match=r"actor_rollout_ref\.actor\.policy_loss\.entropy_advantage\.kappa must be > 1"
    ):
        EntropyAdvantageConfig(kappa=kappa)
    assert EntropyAdvantageConfig(kappa=1.0001).kappa == 1.0001


def test_building_the_block_alone_changes_nothing(unpatched_afterwards):
    """The block is a plain value: only the explicit call (made by the policy-loss config) wraps."""
    assert EntropyAdvantageConfig(enable=True).enable is True
    assert PolicyLossConfigWithBaselines(loss_mode="vanilla").entropy_advantage.enable is False
    assert not entropy_advantage_applied() and verl_losses.ppo_loss is VERL_PPO_LOSS


def test_hydra_instantiation_of_the_policy_loss_config_is_the_switch(unpatched_afterwards):
    """verl's workers build their actor config with Hydra before binding ppo_loss: instantiating
    the policy-loss config with an enabled block applies the wrapper in that process."""
    from omegaconf import OmegaConf
    from verl.utils.config import omega_conf_to_dataclass

    policy_loss = OmegaConf.create(
        {
            "_target_": "maspo_verl.baselines.PolicyLossConfigWithBaselines",
            "loss_mode": "vanilla",
            "entropy_advantage": {"_target_": "maspo_verl.baselines.EntropyAdvantageConfig", "enable": False},
        }
    )
    assert omega_conf_to_dataclass(policy_loss).entropy_advantage.enable is False and not entropy_advantage_applied()
    policy_loss.entropy_advantage.enable = True
    settings = omega_conf_to_dataclass(policy_loss).entropy_advantage
    assert (settings.enable, settings.alpha, settings.kappa) == (True, 0.4, 2.0)
    assert verl_engine_workers.ppo_loss is ppo_loss_with_entropy_advantage


def test_verl_builds_the_actor_config_before_it_binds_ppo_loss():
    """Why the policy-loss config is where the wrapper is applied: in verl's worker, the actor
    config (and with it that class) is built before `ppo_loss` is bound into the loss function."""
    source = inspect.getsource(verl_engine_workers.ActorRolloutRefWorker.init_model)
    built = source.index("omega_conf_to_dataclass(self.config.actor)")
    bound = source.index("partial(ppo_loss, config=actor_config)")
    assert built < bound

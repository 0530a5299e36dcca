"""MaspoConfig validation and Hydra composition with verl's real ppo_trainer config."""

import dataclasses
import os

import pytest
from helpers import PAPER_DEFAULTS
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from omegaconf import OmegaConf
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.config import ActorConfig, PolicyLossConfig

from maspo_verl import MaspoConfig, MaspoPolicyLossConfig
from maspo_verl.config import maspo_config_from
from maspo_verl.integration.hydra_config import config_dir

pytestmark = pytest.mark.kind("unit")

# Micro-batch size is the experiment's choice; verl's ActorConfig refuses to build without one.
BUILDABLE = ["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1"]


def test_defaults_are_the_papers():
    config = MaspoConfig()
    assert {k: getattr(config, k) for k in PAPER_DEFAULTS} == PAPER_DEFAULTS
    assert MaspoPolicyLossConfig().loss_mode == "maspo"
    assert isinstance(MaspoPolicyLossConfig(), PolicyLossConfig)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("sigma_base", 0.0, "sigma_base must be > 0"),
        ("sigma_base", -1.0, "sigma_base must be > 0"),
        ("sigma_high", 0.5, "sigma_high must be >= sigma_base"),
        ("alpha", -0.1, "alpha must be >= 0"),
        ("beta_pos", -0.01, "beta_pos must be >= 0"),
        ("beta_neg", -0.01, "beta_neg must be >= 0"),
        ("adv_low", 0.0, "adv_low must be > 0"),
        ("adv_high", 0.05, "adv_high must be >= adv_low"),
        ("gate", "soft", "gate must be one of"),
        ("mass_adaptive", "yes", "mass_adaptive must be true or false"),
        ("risk_control", 1, "risk_control must be true or false"),
        ("alpha", float("nan"), "alpha must be finite"),
        ("sigma_high", float("inf"), "sigma_high must be finite"),
        ("beta_pos", "0.03", "beta_pos must be a number"),
    ],
)
def test_invalid_values_raise_naming_the_key_and_range(key, value, message):
    with pytest.raises(ValueError, match=message):
        MaspoConfig(**{key: value})


def test_block_from_mapping_rejects_unknown_keys_and_is_frozen():
    assert maspo_config_from({"alpha": 0.5, "_target_": "maspo_verl.MaspoConfig"}).alpha == 0.5
    with pytest.raises(ValueError, match="unknown key.*sigma_low"):
        maspo_config_from({"sigma_low": 1.0})
    config = MaspoPolicyLossConfig(maspo={"alpha": 0.4})
    assert isinstance(config.maspo, MaspoConfig) and config.maspo.alpha == 0.4
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.maspo.alpha = 1.0


@pytest.mark.parametrize("misspelt", ["maspoo", "mapso", "Maspo"])
def test_a_misspelt_block_in_a_legacy_dict_config_raises_naming_it(misspelt):
    from maspo_verl.loss import resolve_maspo_config

    legacy = OmegaConf.create({"policy_loss": {"loss_mode": "maspo", misspelt: {"alpha": 0.5}}})
    with pytest.raises(ValueError, match=f"policy_loss has a key '{misspelt}' but no 'maspo'"):
        resolve_maspo_config(legacy)
    # the block spelt right is read; another loss's block is not taken for a misspelling
    assert resolve_maspo_config(OmegaConf.create({"policy_loss": {"maspo": {"alpha": 0.5}}})).alpha == 0.5
    assert resolve_maspo_config(OmegaConf.create({"policy_loss": {"bapo": {}, "dac": {}}})) == MaspoConfig()


def _compose(config_name, overrides, directory=None):
    directory = directory or str(config_dir())
    with initialize_config_dir(config_dir=directory, version_base=None):
        return compose(config_name=config_name, overrides=overrides)


def _verl_config_dir():
    import verl.trainer.config

    return os.path.dirname(verl.trainer.config.__file__)


@pytest.mark.verl
def test_verl_ppo_trainer_with_loss_mode_maspo_builds_actor_config():
    cfg = _compose(
        "ppo_trainer", BUILDABLE + ["actor_rollout_ref.actor.policy_loss.loss_mode=maspo"], _verl_config_dir()
    )
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    assert isinstance(actor, ActorConfig)
    assert actor.policy_loss.loss_mode == "maspo"  # plain PolicyLossConfig: the loss uses the defaults


@pytest.mark.verl
def test_verl_ppo_trainer_with_our_target_takes_maspo_keys_with_plus():
    overrides = BUILDABLE + [
        "actor_rollout_ref.actor.policy_loss._target_=maspo_verl.MaspoPolicyLossConfig",
        "actor_rollout_ref.actor.policy_loss.loss_mode=maspo",
        "+actor_rollout_ref.actor.policy_loss.maspo.alpha=0.5",
    ]
    actor = omega_conf_to_dataclass(_compose("ppo_trainer", overrides, _verl_config_dir()).actor_rollout_ref.actor)
    assert isinstance(actor.policy_loss, MaspoPolicyLossConfig)
    assert actor.policy_loss.maspo.alpha == 0.5 and actor.policy_loss.maspo.beta_pos == 0.03


@pytest.mark.verl
def test_our_maspo_yaml_composes_over_verl_and_overrides_need_no_plus():
    overrides = BUILDABLE + [
        "actor_rollout_ref.actor.policy_loss.maspo.alpha=0.5",
        "actor_rollout_ref.actor.policy_loss.maspo.gate=hard",
        "actor_rollout_ref.actor.policy_loss.maspo.risk_control=false",
    ]
    cfg = _compose("maspo", overrides)
    assert cfg.algorithm.adv_estimator == "grpo" and cfg.actor_rollout_ref.actor.use_kl_loss is False
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    assert isinstance(actor, ActorConfig) and isinstance(actor.policy_loss, MaspoPolicyLossConfig)
    assert actor.policy_loss.loss_mode == "maspo"
    maspo = actor.policy_loss.maspo
    assert (maspo.alpha, maspo.gate, maspo.risk_control, maspo.mass_adaptive) == (0.5, "hard", False, True)
    yaml_defaults = OmegaConf.to_container(cfg.actor_rollout_ref.actor.policy_loss.maspo)
    yaml_defaults.pop("_target_")
    # clip_ratio_c: our opt-in dual clip, null (none) as in the paper
    expected = {**PAPER_DEFAULTS, "clip_ratio_c": None, "alpha": 0.5, "gate": "hard", "risk_control": False}
    assert yaml_defaults == expected


@pytest.mark.verl
def test_our_yaml_keeps_verl_baselines_selectable():
    cfg = _compose("maspo", BUILDABLE + ["actor_rollout_ref.actor.policy_loss.loss_mode=vanilla"])
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    assert actor.policy_loss.loss_mode == "vanilla"


@pytest.mark.parametrize(
    "override, key",
    [
        ("actor_rollout_ref.actor.policy_loss.maspo.sigma_base=0", "sigma_base"),
        ("actor_rollout_ref.actor.policy_loss.maspo.gate=soft", "gate"),
        ("actor_rollout_ref.actor.policy_loss.maspo.adv_low=-1", "adv_low"),
    ],
)
def test_invalid_override_fails_at_config_build_naming_the_key(override, key):
    cfg = _compose("maspo", BUILDABLE + [override])
    with pytest.raises(InstantiationException, match=f"policy_loss.maspo.{key}"):
        omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)


def test_the_core_config_carries_maspo_only_and_the_baselines_subclass_adds_their_blocks():
    from maspo_verl.baselines import BapoConfig, DacConfig, EntropyAdvantageConfig, PolicyLossConfigWithBaselines

    assert MaspoPolicyLossConfig.CONFIG_BLOCKS == {"maspo": MaspoConfig}
    with pytest.raises(TypeError, match="dac"):
        MaspoPolicyLossConfig(dac={"eps_low": 0.1})
    config = PolicyLossConfigWithBaselines(loss_mode="dac", maspo={"alpha": 0.5}, dac={"eps_low": 0.1})
    assert isinstance(config, MaspoPolicyLossConfig) and config.maspo.alpha == 0.5
    assert (type(config.dac), type(config.bapo), type(config.entropy_advantage)) == (
        DacConfig,
        BapoConfig,
        EntropyAdvantageConfig,
    )
    assert config.dac.eps_low == 0.1 and config.bapo.variant == "recipe" and config.entropy_advantage.enable is False
    with pytest.raises(ValueError, match=r"policy_loss.bapo has unknown key\(s\) \['varient'\]"):
        PolicyLossConfigWithBaselines(bapo={"varient": "paper"})


def test_our_maspo_yaml_selects_maspos_own_config_class_with_its_block_alone():
    from maspo_verl import MaspoPolicyLossConfig

    config = _compose("maspo", BUILDABLE + ["actor_rollout_ref.actor.policy_loss.maspo.alpha=0.5"])
    assert "dac" not in config.actor_rollout_ref.actor.policy_loss
    policy_loss = omega_conf_to_dataclass(config.actor_rollout_ref.actor).policy_loss
    assert type(policy_loss) is MaspoPolicyLossConfig
    assert (policy_loss.loss_mode, policy_loss.maspo.alpha) == ("maspo", 0.5)


def test_the_baselines_override_selects_their_class_with_every_block_overridable_without_plus():
    from maspo_verl.baselines import PolicyLossConfigWithBaselines

    overrides = BUILDABLE + [
        "actor_rollout_ref.actor.policy_loss.loss_mode=dac",
        "actor_rollout_ref.actor.policy_loss.maspo.alpha=0.5",
        "actor_rollout_ref.actor.policy_loss.dac.eps_high=0.3",
        "actor_rollout_ref.actor.policy_loss.bapo.variant=paper",
        "actor_rollout_ref.actor.policy_loss.entropy_advantage.kappa=3.0",
    ]
    policy_loss = omega_conf_to_dataclass(
        _compose("maspo", ["+policy_loss=baselines", *overrides]).actor_rollout_ref.actor
    ).policy_loss
    assert type(policy_loss) is PolicyLossConfigWithBaselines
    assert (policy_loss.loss_mode, policy_loss.maspo.alpha, policy_loss.dac.eps_high) == ("dac", 0.5, 0.3)
    assert (policy_loss.bapo.variant, policy_loss.bapo.positive_share_target) == ("paper", 0.4)
    assert policy_loss.entropy_advantage.kappa == 3.0 and policy_loss.entropy_advantage.enable is False


def test_verl_ppo_trainer_with_the_baselines_target_takes_their_keys_with_plus():
    overrides = BUILDABLE + [
        "actor_rollout_ref.actor.policy_loss._target_=maspo_verl.baselines.PolicyLossConfigWithBaselines",
        "actor_rollout_ref.actor.policy_loss.loss_mode=dac",
        "+actor_rollout_ref.actor.policy_loss.dac.eps_low=0.1",
    ]
    actor = omega_conf_to_dataclass(_compose("ppo_trainer", overrides, _verl_config_dir()).actor_rollout_ref.actor)
    assert actor.policy_loss.dac.eps_low == 0.1 and actor.policy_loss.maspo.alpha == 0.3

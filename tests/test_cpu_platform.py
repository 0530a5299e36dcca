"""The opt-in CPU patches (CPU platform, hf_cpu rollout): off unless enabled, version-checked, undone by their
`remove_*` down to the same objects verl held, leaving no environment behind, and each fix tested against verl's
unpatched behaviour. No patch module checks or changes verl when imported."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys

import pytest
import torch
from conftest_cpu import build_actor_worker, cpu_platform, single_process_group, tiny_workdir, to_verl_batch  # noqa: F401

import maspo_verl.integration.versions
from maspo_verl.patches import UnsupportedVerlVersion

pytestmark = pytest.mark.kind("verl")

PROBE = """
import json, verl
from verl.plugin.platform import PlatformRegistry, get_platform
from verl.workers.rollout.base import _ROLLOUT_REGISTRY
from verl.workers.rollout.replica import RolloutReplicaRegistry
from verl.experimental.agent_loop.agent_loop import _agent_loop_registry
print(json.dumps({
    "platforms": list(PlatformRegistry.registered_names()),
    "device": get_platform().device_name,
    "rollout_replicas": list(RolloutReplicaRegistry._registry),
    "rollout_adapters": [name for name, _ in _ROLLOUT_REGISTRY],
    "agent_loops": list(_agent_loop_registry),
}))
"""


def _probe_fresh_process(**env) -> dict:
    environment = {key: value for key, value in os.environ.items() if key != "VERL_PLATFORM"}
    environment.update(env)
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env=environment, capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(240)
def test_patches_apply_only_when_verl_platform_is_cpu():
    plain = _probe_fresh_process()
    assert "cpu" not in plain["platforms"] and plain["device"] != "cpu"
    assert "hf_cpu" not in plain["rollout_replicas"] and "hf_cpu" not in plain["rollout_adapters"]
    assert not any(name.startswith("hf_cpu") for name in plain["agent_loops"])

    enabled = _probe_fresh_process(VERL_PLATFORM="cpu")
    assert "cpu" in enabled["platforms"] and enabled["device"] == "cpu"
    assert "hf_cpu" in enabled["rollout_replicas"] and "hf_cpu" in enabled["rollout_adapters"]
    assert {"hf_cpu_single_turn_agent", "hf_cpu_single_turn_agent_local_reward"} <= set(enabled["agent_loops"])


@pytest.mark.parametrize("patch", ["apply_cpu_platform", "apply_hf_cpu_rollout"])
def test_unsupported_verl_version_is_refused_naming_the_supported_ones(monkeypatch, patch):
    from maspo_verl.patches.cpu_platform import apply_cpu_platform
    from maspo_verl.patches.hf_rollout import apply_hf_cpu_rollout

    monkeypatch.setattr(maspo_verl.integration.versions, "installed_verl_version", lambda: "0.8.0")
    apply = {"apply_cpu_platform": apply_cpu_platform, "apply_hf_cpu_rollout": apply_hf_cpu_rollout}[patch]
    with pytest.raises(
        UnsupportedVerlVersion,
        match=r"tested for verl 0\.9\.0, for verl 0\.9\.1 and for verl 0\.10\.0\.dev0; the installed verl is 0\.8\.0",
    ):
        apply()


def test_cpu_platform_is_refused_where_a_gpu_is_visible(monkeypatch):
    from maspo_verl.patches.cpu_platform import CpuPlatformError, apply_cpu_platform

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(CpuPlatformError, match="GPU is visible"):
        apply_cpu_platform()


def test_cpu_platform_answers_what_verl_asks_a_platform(cpu_platform):  # noqa: F811
    from verl.utils.device import get_device_id, get_device_name, get_nccl_backend, get_torch_device

    from maspo_verl.patches.cpu_platform import PlatformCPU

    platform = PlatformCPU()
    assert (get_device_name(), get_nccl_backend(), get_device_id()) == ("cpu", "gloo", "cpu")
    assert platform.ray_resource_name() == "CPU" and platform.ray_resource_options(0.5) == {"num_cpus": 0.5}
    assert not platform.is_platform_available(use_smi_check=True), "the CPU platform must never be auto-detected"
    device = get_torch_device()
    assert device.memory_allocated() == 0 and device.max_memory_reserved() == 0
    free, total = device.mem_get_info()
    assert 0 < free <= total
    assert device.get_device_name() == "CPU"


def test_gloo_process_group_fix_against_verls_backend_string(cpu_platform, monkeypatch):  # noqa: F811
    """Unpatched, verl asks torch for "cpu:gloo,cpu:gloo" on the CPU platform; torch refuses that string."""
    import verl.workers.engine_workers as engine_workers
    from torch.distributed.distributed_c10d import BackendConfig

    from maspo_verl.patches import cpu_platform as patch

    requested = []
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend, **kwargs: requested.append(backend))
    patch._VERL_INITIALIZE_PROCESS_GROUP()  # verl's own function
    engine_workers.initialize_global_process_group_ray()  # what verl's workers call once patched
    assert requested == ["cpu:gloo,cpu:gloo", "gloo"]
    with pytest.raises(ValueError, match="Duplicate device type cpu"):
        BackendConfig(requested[0])
    BackendConfig(requested[1])


def test_offload_policy_fix_against_pinned_memory(cpu_platform):  # noqa: F811
    """Unpatched, verl's reference model asks FSDP2 to pin CPU memory, which needs an accelerator."""
    import verl.workers.engine.fsdp.transformer_impl as fsdp_engine_module
    from torch.distributed.fsdp import CPUOffloadPolicy

    with pytest.raises(RuntimeError, match="accelerator"):
        torch.empty(2).pin_memory()
    policy = fsdp_engine_module.CPUOffloadPolicy(pin_memory=True)
    assert isinstance(policy, CPUOffloadPolicy) and policy.pin_memory is False


@pytest.mark.timeout(120)
def test_fsdp1_is_refused_with_the_key_to_change(cpu_platform, single_process_group, tiny_workdir):  # noqa: F811
    from maspo_verl.patches.cpu_platform import CpuPlatformError

    with pytest.raises(CpuPlatformError, match=r"actor_rollout_ref\.actor\.strategy=fsdp2"):
        build_actor_worker(
            tiny_workdir["model"],
            "actor",
            "actor_rollout_ref.actor.strategy=fsdp",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
            "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
        )


@pytest.mark.timeout(120)
def test_reference_model_computes_log_probs_on_cpu(cpu_platform, single_process_group, tiny_workdir):  # noqa: F811
    """verl's ref worker (FSDP2 with a CPU offload policy) runs once the offload policy no longer pins memory."""
    from verl.utils import tensordict_utils as tu

    worker = build_actor_worker(
        tiny_workdir["model"], "ref", "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=2"
    )
    batch = to_verl_batch([[1, 2, 3], [4, 5]], [[6, 7], [8, 9, 10]], pad_token_id=0)
    tu.assign_non_tensor(batch, calculate_entropy=False, compute_loss=False, temperature=1.0, global_token_num=None)
    log_probs = tu.get(worker.compute_ref_log_prob(batch), "log_probs")
    values = torch.cat([row for row in log_probs.unbind()])
    assert values.numel() == 10 and torch.isfinite(values).all() and (values < 0).all()  # one per token


def _verl_state() -> dict[tuple, object]:
    """Every place in verl the two CPU patches write, flattened: (place, key, ...) -> the object it holds now."""
    import verl.plugin.platform.platform_manager as platform_manager
    import verl.utils.distributed as verl_distributed
    import verl.workers.engine.fsdp.transformer_impl as fsdp_engine_module
    import verl.workers.engine_workers as engine_workers
    from verl.experimental.agent_loop import agent_loop
    from verl.workers.engine.base import EngineRegistry
    from verl.workers.rollout import base as rollout_base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    state: dict[tuple, object] = {
        ("current_platform",): platform_manager._current_platform,
        ("process_group",): verl_distributed.initialize_global_process_group_ray,
        ("engine_workers_process_group",): engine_workers.initialize_global_process_group_ray,
        ("offload_policy",): fsdp_engine_module.CPUOffloadPolicy,
        ("VERL_PLATFORM",): os.environ.get("VERL_PLATFORM"),
    }
    for place, registry in (
        ("platforms", platform_manager.PlatformRegistry._platforms),
        ("rollout_replicas", RolloutReplicaRegistry._registry),
        ("rollout_adapters", rollout_base._ROLLOUT_REGISTRY),
        ("agent_loops", agent_loop._agent_loop_registry),
    ):
        state.update({(place, key): value for key, value in registry.items()})
    for model_type, backends in EngineRegistry._engines.items():
        state[("engines", model_type)] = backends  # the dicts themselves too: none created, none left behind
        for backend, devices in backends.items():
            state[("engines", model_type, backend)] = devices
            state.update({("engines", model_type, backend, device): engine for device, engine in devices.items()})
    return state


def _assert_same_objects(state: dict[tuple, object], expected: dict[tuple, object]) -> None:
    """The same places, each holding the very same object (`is`), not an equal copy; the environment variable
    by value (`os.environ` builds a new str at every read)."""
    assert state.keys() == expected.keys(), f"places differ: {sorted(map(str, state.keys() ^ expected.keys()))}"
    changed = [
        place
        for place, value in state.items()
        if not (value is expected[place] or (place == ("VERL_PLATFORM",) and value == expected[place]))
    ]
    assert not changed, f"verl holds other objects at {changed}"


@pytest.fixture
def without_cpu_patches():
    """Both CPU patches removed for the test, and put back afterwards where they were applied before."""
    from maspo_verl.patches.cpu_platform import apply_cpu_platform, cpu_platform_applied, remove_cpu_platform
    from maspo_verl.patches.hf_rollout import apply_hf_cpu_rollout, hf_cpu_rollout_applied, remove_hf_cpu_rollout

    was_applied = cpu_platform_applied(), hf_cpu_rollout_applied()
    remove_hf_cpu_rollout()
    remove_cpu_platform()
    yield
    remove_hf_cpu_rollout()
    remove_cpu_platform()
    if was_applied[0]:
        apply_cpu_platform()
    if was_applied[1]:
        apply_hf_cpu_rollout()


@pytest.mark.parametrize("user_value", [None, " CPU "], ids=["unset", "set-by-the-user"])
def test_remove_cpu_platform_gives_verl_back_its_own_objects_and_the_environment(
    without_cpu_patches, monkeypatch, user_value
):
    import verl.workers.engine.fsdp.transformer_impl as fsdp_engine_module
    import verl.workers.engine_workers as engine_workers
    from verl.plugin.platform import get_platform
    from verl.utils.device import get_device_name, get_nccl_backend

    from maspo_verl.patches import cpu_platform as patch
    from maspo_verl.patches.cpu_engines import CpuFSDPEngineWithLMHead, CpuFSDPEngineWithValueHead

    if user_value is None:
        monkeypatch.delenv("VERL_PLATFORM", raising=False)
    else:
        monkeypatch.setenv("VERL_PLATFORM", user_value)
    unpatched = _verl_state()
    for attempt in ("first", "again"):
        patch.apply_cpu_platform()
        patch.apply_cpu_platform()  # idempotent
        applied = _verl_state()
        assert patch.cpu_platform_applied() and os.environ["VERL_PLATFORM"] == "cpu", attempt
        assert applied[("platforms", "cpu")] is patch.PlatformCPU and get_platform() is applied[("current_platform",)]
        assert (get_device_name(), get_nccl_backend()) == ("cpu", "gloo")
        for backend in ("fsdp", "fsdp2"):
            assert applied[("engines", "language_model", backend, "cpu")] is CpuFSDPEngineWithLMHead
            assert applied[("engines", "value_model", backend, "cpu")] is CpuFSDPEngineWithValueHead
        assert engine_workers.initialize_global_process_group_ray is patch._initialize_gloo_process_group
        assert fsdp_engine_module.CPUOffloadPolicy is patch.UnpinnedCPUOffloadPolicy
        patch.remove_cpu_platform()
        _assert_same_objects(_verl_state(), unpatched)
        assert os.environ.get("VERL_PLATFORM") == user_value and not patch.cpu_platform_applied()
        patch.remove_cpu_platform()  # idempotent
        _assert_same_objects(_verl_state(), unpatched)


def test_remove_hf_cpu_rollout_gives_verl_back_its_registries(without_cpu_patches):
    from verl.experimental.agent_loop.agent_loop import _agent_loop_registry
    from verl.workers.rollout.base import get_rollout_class
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    from maspo_verl.patches import hf_rollout as patch
    from maspo_verl.patches.hf_agent_loop import AGENT_LOOP_NAME, LOCAL_REWARD_AGENT_LOOP_NAME

    unpatched = _verl_state()
    assert ("rollout_replicas", "hf_cpu") not in unpatched and ("agent_loops", AGENT_LOOP_NAME) not in unpatched
    for attempt in ("first", "again"):
        patch.apply_hf_cpu_rollout()
        patch.apply_hf_cpu_rollout()  # idempotent
        assert patch.hf_cpu_rollout_applied(), attempt
        assert RolloutReplicaRegistry.get("hf_cpu") is patch.HfCpuReplica
        assert get_rollout_class("hf_cpu") is patch.HfCpuServerAdapter
        assert _agent_loop_registry[AGENT_LOOP_NAME]["_target_"].endswith("hf_agent_loop.HfCpuSingleTurnAgentLoop")
        assert _agent_loop_registry[LOCAL_REWARD_AGENT_LOOP_NAME]["_target_"].endswith("LocalRewardSingleTurnAgentLoop")
        patch.remove_hf_cpu_rollout()
        _assert_same_objects(_verl_state(), unpatched)
        assert not patch.hf_cpu_rollout_applied()
        with pytest.raises(ValueError, match="Unknown rollout mode: hf_cpu"):
            RolloutReplicaRegistry.get("hf_cpu")
        patch.remove_hf_cpu_rollout()  # idempotent
        _assert_same_objects(_verl_state(), unpatched)


def test_remove_puts_back_an_entry_verl_held_before(without_cpu_patches, monkeypatch):
    """A registry entry that existed before the patch (here: another "hf_cpu" replica) comes back, the same object."""
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    from maspo_verl.patches import hf_rollout as patch

    def someone_elses_loader():
        return None

    monkeypatch.setitem(RolloutReplicaRegistry._registry, "hf_cpu", someone_elses_loader)
    patch.apply_hf_cpu_rollout()
    assert RolloutReplicaRegistry._registry["hf_cpu"] is not someone_elses_loader
    patch.remove_hf_cpu_rollout()
    assert RolloutReplicaRegistry._registry["hf_cpu"] is someone_elses_loader


PATCH_MODULES = sorted(
    module.name
    for module in pkgutil.iter_modules([os.path.dirname(importlib.import_module("maspo_verl.patches").__file__)])
)


@pytest.mark.parametrize("name", PATCH_MODULES)
def test_no_patch_module_checks_or_changes_verl_at_import(name, monkeypatch):
    """Imported again under an unsupported verl (faked), each module imports, and verl holds the same objects."""
    import maspo_verl.integration.versions
    import maspo_verl.patches

    full_name = f"maspo_verl.patches.{name}"
    loaded = importlib.import_module(full_name)
    before = _verl_state()
    monkeypatch.setattr(maspo_verl.integration.versions, "installed_verl_version", lambda: "0.8.0")
    monkeypatch.delitem(sys.modules, full_name)  # put back, with the package attribute, after the test
    monkeypatch.setattr(maspo_verl.patches, name, loaded)
    fresh = importlib.import_module(full_name)
    assert fresh is not loaded
    _assert_same_objects(_verl_state(), before)

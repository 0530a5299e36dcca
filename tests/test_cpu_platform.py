"""The opt-in CPU platform patch: off unless enabled, version-checked, and each fix tested against verl's unpatched
behaviour."""

from __future__ import annotations

import json
import os
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
print(json.dumps({
    "platforms": list(PlatformRegistry.registered_names()),
    "device": get_platform().device_name,
    "rollout_replicas": list(RolloutReplicaRegistry._registry),
    "rollout_adapters": [name for name, _ in _ROLLOUT_REGISTRY],
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

    enabled = _probe_fresh_process(VERL_PLATFORM="cpu")
    assert "cpu" in enabled["platforms"] and enabled["device"] == "cpu"
    assert "hf_cpu" in enabled["rollout_replicas"] and "hf_cpu" in enabled["rollout_adapters"]


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

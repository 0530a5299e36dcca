"""Opt-in patch: a CPU platform for verl, so its FSDP2 actor and whole trainer run on a CPU-only box.

verl 0.9 ships platforms for CUDA, NPU and ROCm only; on a machine without an accelerator its
trainer stops at device setup. `apply_cpu_platform()` adds what is missing without editing verl:

- `PlatformCPU`, registered with verl's public `PlatformRegistry.register(platform="cpu")` and
  made the current platform (and `VERL_PLATFORM=cpu` set while applied, which Ray workers started
  meanwhile inherit);
- the FSDP engines registered for device "cpu" through verl's public `EngineRegistry.register`
  (verl registers them for cuda/npu only), refusing FSDP1 with a clear error: torch cannot run
  FSDP1 on CPU (`sync_module_states=True` needs an accelerator);
- two rebinds of verl internals, all in `_rebind_verl_internals()`: the gloo process group
  (verl builds the backend string "cpu:gloo,cpu:gloo", which torch rejects) and an FSDP2 CPU
  offload policy without pinned memory (verl always pins the reference model's; pinning needs
  an accelerator).

`remove_cpu_platform()` undoes every one of these: verl's registries, platform singleton, rebound
names and `VERL_PLATFORM` hold the same objects and value as before `apply_cpu_platform()`.

Enable it with `VERL_PLATFORM=cpu` (maspo_verl's `verl.plugins` entry point then calls
`apply_cpu_platform()` in every process, before verl's engines are imported) or call it
yourself before building verl workers. It refuses to run where a GPU/NPU is visible.
Ray settings cannot be made from inside a process: `examples/run_scripts/cpu/train_maspo_cpu.sh`
passes them as Hydra overrides (a logical GPU for verl's resource check, which counts only
GPU/NPU resources; logical CPUs for TransferQueue). See patches/README.md and docs/cpu.md.
"""

from __future__ import annotations

import logging
import os
import sys
import types
from contextlib import contextmanager
from typing import Any

import torch
from torch.distributed.fsdp import CPUOffloadPolicy
from verl.plugin.platform import PlatformBase

from maspo_verl.patches import CPU_BACKEND_VERL_VERSIONS, require_verl_version

__all__ = [
    "SUPPORTED_VERL_VERSIONS",
    "CpuPlatformError",
    "PlatformCPU",
    "UnpinnedCPUOffloadPolicy",
    "apply_cpu_platform",
    "cpu_platform_applied",
    "refuse_fsdp1_on_cpu",
    "remove_cpu_platform",
]

logger = logging.getLogger(__name__)

SUPPORTED_VERL_VERSIONS = CPU_BACKEND_VERL_VERSIONS


class CpuPlatformError(RuntimeError):
    """Raised when the CPU platform is asked for something it cannot do (FSDP1, a visible GPU)."""


def _memory_stat_zero(*args, **kwargs) -> int:
    return 0


def _no_op(*args, **kwargs) -> None:
    return None


def _mem_get_info(*args, **kwargs) -> tuple[int, int]:
    """(free, total) bytes of host memory: what verl logs as device memory."""
    import psutil

    memory = psutil.virtual_memory()
    return memory.available, memory.total


def _build_cpu_device_module() -> types.ModuleType:
    """The `torch.<device>`-like namespace verl calls through `get_torch_device()`.

    torch.cpu provides streams, events and synchronize; the memory statistics verl logs are 0
    on CPU, the allocator calls are no-ops and the RNG state is torch's global one.
    """
    module = types.ModuleType("maspo_verl.patches.cpu_device", "torch.cpu plus the calls verl makes on a device module")
    for name in ("is_available", "synchronize", "current_stream", "stream", "Stream", "Event", "device_count"):
        setattr(module, name, getattr(torch.cpu, name))
    module.set_device = _no_op
    module.current_device = lambda: "cpu"
    module.get_device_name = lambda *args, **kwargs: "CPU"  # verl's flops counter looks it up
    module.empty_cache = _no_op
    module.ipc_collect = _no_op
    module.reset_peak_memory_stats = _no_op
    module.set_per_process_memory_fraction = _no_op
    module.mem_get_info = _mem_get_info
    for name in ("memory_allocated", "memory_reserved", "max_memory_allocated", "max_memory_reserved"):
        setattr(module, name, _memory_stat_zero)
    module.get_rng_state = lambda *args, **kwargs: torch.get_rng_state()
    module.set_rng_state = lambda state, *args, **kwargs: torch.set_rng_state(state)
    module.manual_seed = torch.manual_seed
    module.manual_seed_all = torch.manual_seed
    return module


_CPU_DEVICE_MODULE = _build_cpu_device_module()


class PlatformCPU(PlatformBase):
    """verl platform for a host without accelerators: device "cpu", collectives over gloo."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> types.ModuleType:
        return _CPU_DEVICE_MODULE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # Never auto-detected: the CPU platform is chosen only by VERL_PLATFORM=cpu.
        return False

    def current_device(self) -> str:
        # A device string, not an index: verl moves modules with `.to(get_device_id())`, and an
        # int would mean cuda:<int> (fsdp2_load_full_state_dict fails with one).
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: int | None = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "CPU"

    def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
        # verl asks for "one device per worker"; on CPU that is a share of a logical CPU.
        return {"num_cpus": num_gpus}

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


def refuse_fsdp1_on_cpu(strategy: str | None) -> None:
    """Raise a clear error for `strategy=fsdp` (FSDP1), which torch cannot run on CPU."""
    if strategy != "fsdp2":
        raise CpuPlatformError(
            f"VERL_PLATFORM=cpu supports strategy=fsdp2 only, got strategy={strategy!r}: torch's FSDP1 "
            "cannot run on CPU (sync_module_states needs an accelerator). Set "
            "actor_rollout_ref.actor.strategy=fsdp2 (the reference model follows it) and, with a critic, "
            "critic.strategy=fsdp2."
        )


def _accelerator_present() -> str | None:
    if torch.cuda.is_available():
        return "CUDA/ROCm GPU"
    npu = getattr(torch, "npu", None)
    if npu is not None and npu.is_available():
        return "Ascend NPU"
    return None


# verl's own initialize_global_process_group_ray, kept when the patch rebinds the name (and after its removal,
# so that a reference to the wrapper taken while the patch was applied still reaches verl's function).
_VERL_INITIALIZE_PROCESS_GROUP = None


def _initialize_gloo_process_group(timeout_second=None, backend=None):
    """verl's `initialize_global_process_group_ray` with the plain "gloo" backend on CPU."""
    return _VERL_INITIALIZE_PROCESS_GROUP(timeout_second=timeout_second, backend=backend or "gloo")


class UnpinnedCPUOffloadPolicy(CPUOffloadPolicy):
    """FSDP2's CPUOffloadPolicy with pin_memory forced off: pinning needs an accelerator."""

    def __init__(self, pin_memory: bool = False):
        super().__init__(pin_memory=False)


_MISSING = object()  # "had no such entry" in what the patch recorded


class _Applied:
    """What `apply_cpu_platform` changed, with the value each place held before (for `remove_cpu_platform`)."""

    def __init__(self, platform_entry, current_platform, environment_value, rebinds):
        self.platform_entry = platform_entry  # PlatformRegistry._platforms["cpu"] before, or _MISSING
        self.current_platform = current_platform  # verl's platform singleton before (None: not resolved yet)
        self.environment_value = environment_value  # os.environ["VERL_PLATFORM"] before, or None
        self.rebinds = rebinds  # [(module, attribute name, verl's object, ours)]


_applied: _Applied | None = None


def _rebind_verl_internals(record: list[tuple[types.ModuleType, str, Any, Any]]) -> None:
    """Every rebinding of a verl-internal name this patch makes, in one place (verl 0.9.1), each appended to
    `record` as (module, name, verl's object, ours) as it is made, for `remove_cpu_platform`.

    1. `initialize_global_process_group_ray` (verl.utils.distributed, imported by name into
       verl.workers.engine_workers): its default backend "cpu:gloo,<device>:<backend>" becomes
       "cpu:gloo,cpu:gloo" on CPU, which torch rejects; ours passes "gloo".
    2. `CPUOffloadPolicy` as seen by verl.workers.engine.fsdp.transformer_impl: verl builds the
       reference model with `CPUOffloadPolicy(pin_memory=True)`; ours never pins.
    """
    global _VERL_INITIALIZE_PROCESS_GROUP
    import verl.utils.distributed as verl_distributed
    import verl.workers.engine.fsdp.transformer_impl as fsdp_engine_module
    import verl.workers.engine_workers as engine_workers

    rebinds = [
        (verl_distributed, "initialize_global_process_group_ray", _initialize_gloo_process_group),
        (engine_workers, "initialize_global_process_group_ray", _initialize_gloo_process_group),
        (fsdp_engine_module, "CPUOffloadPolicy", UnpinnedCPUOffloadPolicy),
    ]
    verls = verl_distributed.initialize_global_process_group_ray
    if verls is not _initialize_gloo_process_group:
        _VERL_INITIALIZE_PROCESS_GROUP = verls
    for module, name, ours in rebinds:
        record.append((module, name, getattr(module, name), ours))
        setattr(module, name, ours)


def cpu_platform_applied() -> bool:
    """True while `apply_cpu_platform` is in effect in this process."""
    return _applied is not None


def apply_cpu_platform() -> None:
    """Make verl run on CPU in this process (and, through VERL_PLATFORM, in the Ray workers it starts).

    Version-checked (verl 0.9.0, 0.9.1, main), idempotent, refused where a GPU/NPU is visible. Must run
    before verl builds any worker; the `verl.plugins` entry point does it at `import verl`.
    `remove_cpu_platform()` undoes all of it, the environment variable included.
    """
    global _applied
    require_verl_version("apply_cpu_platform", SUPPORTED_VERL_VERSIONS)
    accelerator = _accelerator_present()
    if accelerator is not None:
        raise CpuPlatformError(
            f"VERL_PLATFORM=cpu but a {accelerator} is visible: use verl's own platform there "
            "(unset VERL_PLATFORM), or hide the device (CUDA_VISIBLE_DEVICES=) to debug on CPU."
        )
    if _applied is not None:
        return
    import verl.plugin.platform.platform_manager as platform_manager
    from verl.plugin.platform import PlatformRegistry, get_platform, set_platform

    _applied = _Applied(
        platform_entry=PlatformRegistry._platforms.get("cpu", _MISSING),
        current_platform=platform_manager._current_platform,
        environment_value=os.environ.get("VERL_PLATFORM"),
        rebinds=[],
    )
    try:
        PlatformRegistry.register(platform="cpu")(PlatformCPU)
        # Ray workers started while the patch is applied inherit it and apply the patch too (through the
        # plugin); remove_cpu_platform() puts the previous value back.
        os.environ["VERL_PLATFORM"] = "cpu"
        if not isinstance(get_platform(), PlatformCPU):
            set_platform(PlatformCPU())  # verl resolved a platform before this patch was applied
        # only now: importing verl's FSDP engine module resolves verl's platform
        from maspo_verl.patches.cpu_engines import register_cpu_engines

        register_cpu_engines()
        _rebind_verl_internals(_applied.rebinds)
    except BaseException:
        remove_cpu_platform()  # a half-applied patch leaves nothing behind
        raise
    logger.info("maspo_verl: verl CPU platform applied (gloo, FSDP2 only)")


def remove_cpu_platform() -> None:
    """Undo `apply_cpu_platform` (no-op when it is not applied): verl's rebound names, its platform
    registry and platform singleton, its engine registry and `VERL_PLATFORM` get back exactly what they held
    before (the same objects; an unset variable is unset again). A place something else has changed since
    the patch was applied keeps that change."""
    global _applied
    applied = _applied
    if applied is None:
        return
    import verl.plugin.platform.platform_manager as platform_manager
    from verl.plugin.platform import PlatformRegistry

    for module, name, verls, ours in reversed(applied.rebinds):
        if getattr(module, name) is ours:
            setattr(module, name, verls)
    engines = sys.modules.get("maspo_verl.patches.cpu_engines")  # not imported: nothing was registered
    if engines is not None:
        engines.unregister_cpu_engines()
    if isinstance(platform_manager._current_platform, PlatformCPU):
        # set_platform cannot put back None (an unresolved platform): it logs the new platform's device name
        platform_manager._current_platform = applied.current_platform
    if PlatformRegistry._platforms.get("cpu") is PlatformCPU:
        if applied.platform_entry is _MISSING:
            del PlatformRegistry._platforms["cpu"]
        else:
            PlatformRegistry._platforms["cpu"] = applied.platform_entry
    if os.environ.get("VERL_PLATFORM") == "cpu":
        if applied.environment_value is None:
            del os.environ["VERL_PLATFORM"]
        else:
            os.environ["VERL_PLATFORM"] = applied.environment_value
    _applied = None
    logger.info("maspo_verl: verl CPU platform removed")

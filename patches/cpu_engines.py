"""verl's FSDP engines registered for device "cpu", FSDP2 only (part of `apply_cpu_platform`).

Imported only by `maspo_verl.patches.cpu_platform.apply_cpu_platform()` (and `remove_cpu_platform()`):
importing this module imports verl's FSDP engine module and registers nothing. verl 0.9.1
registers `FSDPEngineWithLMHead` and `FSDPEngineWithValueHead` for devices cuda/npu; these
subclasses add nothing but a clear refusal of FSDP1, which torch cannot run on CPU.
"""

from __future__ import annotations

from verl.workers.engine.base import EngineRegistry
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead

__all__ = ["CpuFSDPEngineWithLMHead", "CpuFSDPEngineWithValueHead", "register_cpu_engines", "unregister_cpu_engines"]


class _RefuseFsdp1:
    """Checks the strategy before verl's engine __init__ runs (mixed in before the verl engine)."""

    def __init__(self, model_config, engine_config, *args, **kwargs):
        from maspo_verl.patches.cpu_platform import refuse_fsdp1_on_cpu

        refuse_fsdp1_on_cpu(engine_config.strategy)
        super().__init__(model_config, engine_config, *args, **kwargs)


class CpuFSDPEngineWithLMHead(_RefuseFsdp1, FSDPEngineWithLMHead):
    """verl's FSDP engine with a language-model head (actor, reference), FSDP2 only."""


class CpuFSDPEngineWithValueHead(_RefuseFsdp1, FSDPEngineWithValueHead):
    """verl's FSDP engine with a value head (critic), FSDP2 only."""


_ENGINES = {"language_model": CpuFSDPEngineWithLMHead, "value_model": CpuFSDPEngineWithValueHead}
_BACKENDS = ("fsdp", "fsdp2")
# While registered: the registry's keys that `register_cpu_engines` created (model types, (model type, backend)
# pairs), so that the undo leaves no empty dict verl did not have. None while not registered.
_created: set | None = None


def register_cpu_engines() -> None:
    """Register both engines for device "cpu" through verl's public `EngineRegistry.register` (idempotent)."""
    global _created
    if _created is not None:
        return
    registry = EngineRegistry._engines
    created = {model_type for model_type in _ENGINES if model_type not in registry}
    created |= {
        (model_type, backend)
        for model_type in _ENGINES
        for backend in _BACKENDS
        if backend not in registry.get(model_type, {})
    }
    for model_type, engine in _ENGINES.items():
        EngineRegistry.register(model_type=model_type, backend=list(_BACKENDS), device="cpu")(engine)
    _created = created


def unregister_cpu_engines() -> None:
    """Take the "cpu" entries out of `EngineRegistry._engines` again (verl has no unregister), with any dict
    `register_cpu_engines` created: the registry is then what it was before (idempotent). An entry another
    class has taken since is left alone."""
    global _created
    if _created is None:
        return
    registry = EngineRegistry._engines
    for model_type, engine in _ENGINES.items():
        backends = registry.get(model_type, {})
        for backend in _BACKENDS:
            devices = backends.get(backend, {})
            if devices.get("cpu") is engine:
                del devices["cpu"]
            if (model_type, backend) in _created and backend in backends and not devices:
                del backends[backend]
        if model_type in _created and model_type in registry and not backends:
            del registry[model_type]
    _created = None

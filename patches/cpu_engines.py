"""verl's FSDP engines registered for device "cpu", FSDP2 only (part of `apply_cpu_platform`).

Imported only by `maspo_verl.patches.cpu_platform.apply_cpu_platform()`: importing this module
imports verl's FSDP engine module. verl 0.9.1 registers `FSDPEngineWithLMHead` and
`FSDPEngineWithValueHead` for devices cuda/npu; these subclasses add nothing but a clear
refusal of FSDP1, which torch cannot run on CPU.
"""

from __future__ import annotations

from verl.workers.engine.base import EngineRegistry
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead

__all__ = ["CpuFSDPEngineWithLMHead", "CpuFSDPEngineWithValueHead", "register_cpu_engines"]


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


_registered = False


def register_cpu_engines() -> None:
    """Register both engines for device "cpu" through verl's public `EngineRegistry.register` (idempotent)."""
    global _registered
    if _registered:
        return
    EngineRegistry.register(model_type="language_model", backend=["fsdp", "fsdp2"], device="cpu")(
        CpuFSDPEngineWithLMHead
    )
    EngineRegistry.register(model_type="value_model", backend=["fsdp", "fsdp2"], device="cpu")(
        CpuFSDPEngineWithValueHead
    )
    _registered = True

"""The GPU stack around verl: what is installed here against the stack verl 0.9.1 pins.

maspo-verl requires none of torch, vLLM, transformers or flash-attn (setup.py), so it installs next to
whatever stack a cluster built. For a fresh GPU environment it offers verl 0.9.1's own pins as a
constraints file, requirements/gpu-stack-verl-0.9.1.txt, mirrored here as `TESTED_STACK`
(tests/test_stack.py keeps the two equal and checks them against verl 0.9.1's metadata).
`python -m maspo_verl check` prints `stack_report_lines()`: the installed stack, the tested one, and
one NOTE per difference. A difference is a note, never a failure: verl's pins are one working set,
not the only one, and a CPU box has no GPU packages at all.

Versions are read from installed distributions' metadata (importlib.metadata); nothing here imports
vllm or flash_attn, and torch only inside `torch_cuda_version()` for the CUDA it was built with.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from packaging.version import InvalidVersion, Version

__all__ = [
    "STACK_FILE",
    "TESTED_CUDA",
    "TESTED_STACK",
    "MIN_NVIDIA_DRIVER",
    "InstalledStack",
    "installed_stack",
    "nvidia_smi_gpus",
    "stack_differences",
    "stack_report_lines",
    "torch_cuda_version",
]

STACK_FILE = "requirements/gpu-stack-verl-0.9.1.txt"
# Distribution name -> version, as pinned by verl 0.9.1's extras `vllm` and `fsdp` (flash-attn).
TESTED_STACK = {
    "verl": "0.9.1",
    "torch": "2.11.0",
    "torchvision": "0.26.0",
    "torchaudio": "2.11.0",
    "vllm": "0.24.0",
    "transformers": "5.9.0",
    "flash-attn": "2.8.3",
}
TESTED_CUDA = "13.0"  # torch 2.11.0's and vLLM 0.24.0's PyPI wheels (cu130)
MIN_NVIDIA_DRIVER = "580.65.06"  # CUDA 13.0's minimum Linux driver
# Packages only a GPU box has: on a CPU box their absence is expected.
GPU_ONLY = ("torchvision", "torchaudio", "vllm", "flash-attn")


@dataclass(frozen=True)
class InstalledStack:
    """What is installed: distribution versions (None: absent), torch's CUDA (None: CPU-only build or
    no torch), whether nvidia-smi answers, the NVIDIA driver it reports (None: none) and the GPUs it lists."""

    versions: dict[str, str | None]
    torch_cuda: str | None
    has_nvidia_smi: bool
    nvidia_driver: str | None
    gpu_count: int


def _distribution_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def torch_cuda_version() -> str | None:
    """The CUDA version torch was built with ("13.0"), or None for a CPU-only build or no torch."""
    try:
        import torch
    except ImportError:
        return None
    return torch.version.cuda


def nvidia_smi_gpus(timeout: float = 30) -> list[tuple[str, str]] | None:
    """(driver version, GPU name) per GPU from `nvidia-smi`, or None when nvidia-smi is absent or fails."""
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return None
    try:
        result = subprocess.run(
            [executable, "--query-gpu=driver_version,name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    rows = [line.split(",", 1) for line in result.stdout.splitlines() if line.strip()]
    return [(row[0].strip(), row[1].strip() if len(row) > 1 else "") for row in rows]


def installed_stack(
    version_of: Callable[[str], str | None] = _distribution_version,
    torch_cuda: Callable[[], str | None] = torch_cuda_version,
    gpus: Callable[[], list[tuple[str, str]] | None] = nvidia_smi_gpus,
) -> InstalledStack:
    """The installed stack, for the packages of `TESTED_STACK`. The callables are the sources (metadata,
    torch, nvidia-smi), replaceable for tests."""
    listed = gpus()
    return InstalledStack(
        versions={name: version_of(name) for name in TESTED_STACK},
        torch_cuda=torch_cuda() if version_of("torch") is not None else None,
        has_nvidia_smi=listed is not None,
        nvidia_driver=listed[0][0] if listed else None,
        gpu_count=len(listed) if listed else 0,
    )


def _public(text: str) -> Version | None:
    """A version without its local part ("2.11.0+cu130" -> 2.11.0), None when not a PEP 440 version."""
    try:
        return Version(Version(text).public)
    except InvalidVersion:
        return None


def _driver_tuple(text: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in text.strip().split("."))
    except ValueError:
        return None


def stack_differences(stack: InstalledStack) -> list[str]:
    """One line per difference between `stack` and the tested stack, each naming the package and both
    versions (or what is absent)."""
    differences = []
    cpu_box = not stack.has_nvidia_smi
    for name, tested in TESTED_STACK.items():
        installed = stack.versions.get(name)
        if installed is None:
            where = "; a CPU box needs none" if cpu_box and name in GPU_ONLY else ""
            differences.append(f"{name} is not installed (tested stack: {name} {tested}{where})")
        elif _public(installed) != _public(tested):
            differences.append(f"{name} {installed} differs from the tested stack's {name} {tested}")
    if stack.versions.get("torch") is not None:
        if stack.torch_cuda is None:
            differences.append(f"torch is a CPU-only build (tested stack: built for CUDA {TESTED_CUDA})")
        elif _public(stack.torch_cuda) != _public(TESTED_CUDA):
            differences.append(f"torch is built for CUDA {stack.torch_cuda} (tested stack: CUDA {TESTED_CUDA})")
    if cpu_box:
        differences.append("no nvidia-smi: no NVIDIA driver or GPU found (a CPU box)")
    elif stack.nvidia_driver is not None:
        driver, minimum = _driver_tuple(stack.nvidia_driver), _driver_tuple(MIN_NVIDIA_DRIVER)
        if driver is None or driver < minimum:
            differences.append(
                f"NVIDIA driver {stack.nvidia_driver} is older than {MIN_NVIDIA_DRIVER}, CUDA {TESTED_CUDA}'s "
                "minimum, which the tested stack's wheels need"
            )
    if stack.has_nvidia_smi and stack.gpu_count == 0:
        differences.append("nvidia-smi lists no GPU")
    return differences


def _describe(versions: dict[str, str | None], torch_cuda: str | None) -> str:
    parts = []
    for name in TESTED_STACK:
        installed = versions.get(name)
        text = f"{name} {installed if installed is not None else '-'}"
        if name == "torch" and installed is not None:
            text += f" (CUDA {torch_cuda})" if torch_cuda else " (CPU-only build)"
        parts.append(text)
    return ", ".join(parts)


def stack_report_lines(stack: InstalledStack | None = None) -> list[str]:
    """What `check` prints about the stack: the installed one, the tested one, and a NOTE per difference."""
    stack = installed_stack() if stack is None else stack
    driver = stack.nvidia_driver or ("-" if stack.has_nvidia_smi else "- (no nvidia-smi)")
    lines = [
        f"stack: installed {_describe(stack.versions, stack.torch_cuda)}, NVIDIA driver {driver}, "
        f"GPUs {stack.gpu_count}",
        f"stack: tested ({STACK_FILE}) {_describe(dict(TESTED_STACK), TESTED_CUDA)}, "
        f"NVIDIA driver >= {MIN_NVIDIA_DRIVER}",
    ]
    lines += [f"NOTE: stack: {difference}" for difference in stack_differences(stack)]
    return lines

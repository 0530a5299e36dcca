"""maspo_verl.integration.stack: the installed GPU stack against verl 0.9.1's pins, as `check` prints it.

The sources (distribution metadata, torch's CUDA, nvidia-smi) are replaced by fakes: these are unit
tests, no subprocess. The tested stack is checked against requirements/gpu-stack-verl-0.9.1.txt and the
installed verl 0.9.1's own metadata.
"""

import ast
from importlib.metadata import requires, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from maspo_verl.integration import stack

pytestmark = pytest.mark.kind("unit")

ROOT = Path(__file__).resolve().parents[1]
A100_DRIVER = [("580.95.05", "NVIDIA A100-SXM4-80GB")] * 8


def _installed(versions, torch_cuda=stack.TESTED_CUDA, gpus=A100_DRIVER):
    return stack.installed_stack(
        version_of=lambda name: versions.get(name), torch_cuda=lambda: torch_cuda, gpus=lambda: gpus
    )


def test_the_tested_stack_on_a_gpu_box_has_no_notes():
    installed = _installed({**stack.TESTED_STACK, "torch": "2.11.0+cu130"})
    assert installed.gpu_count == 8 and installed.nvidia_driver == "580.95.05"
    assert stack.stack_differences(installed) == []
    lines = stack.stack_report_lines(installed)
    assert lines[0].startswith("stack: installed verl 0.9.1, torch 2.11.0+cu130 (CUDA 13.0),")
    assert lines[0].endswith("NVIDIA driver 580.95.05, GPUs 8")
    assert not any(line.startswith("NOTE") for line in lines)


def test_each_difference_is_one_note_naming_the_package_and_both_versions():
    versions = {**stack.TESTED_STACK, "torch": "2.9.1", "vllm": "0.34.0", "transformers": "5.10.4"}
    notes = stack.stack_differences(_installed(versions, torch_cuda="12.8"))
    assert notes == [
        "torch 2.9.1 differs from the tested stack's torch 2.11.0",
        "vllm 0.34.0 differs from the tested stack's vllm 0.24.0",
        "transformers 5.10.4 differs from the tested stack's transformers 5.9.0",
        "torch is built for CUDA 12.8 (tested stack: CUDA 13.0)",
    ]
    lines = stack.stack_report_lines(_installed(versions, torch_cuda="12.8"))
    assert [line for line in lines if line.startswith("NOTE: stack: ")] == [f"NOTE: stack: {n}" for n in notes]


def test_a_cpu_box_says_the_gpu_packages_are_absent_and_why_that_is_fine():
    versions = {"verl": "0.9.1", "torch": "2.13.0+cpu", "transformers": "5.10.4"}
    notes = stack.stack_differences(_installed(versions, torch_cuda=None, gpus=None))
    for name in ("vllm", "flash-attn", "torchvision", "torchaudio"):
        assert (
            f"{name} is not installed (tested stack: {name} {stack.TESTED_STACK[name]}; a CPU box needs none)" in notes
        )
    assert "torch is a CPU-only build (tested stack: built for CUDA 13.0)" in notes
    assert "no nvidia-smi: no NVIDIA driver or GPU found (a CPU box)" in notes
    line = stack.stack_report_lines(_installed(versions, torch_cuda=None, gpus=None))[0]
    assert "torch 2.13.0+cpu (CPU-only build)" in line and "vllm -" in line and "flash-attn -" in line
    assert line.endswith("NVIDIA driver - (no nvidia-smi), GPUs 0")


def test_an_old_driver_or_no_gpu_is_a_note():
    old = stack.stack_differences(_installed(dict(stack.TESTED_STACK), gpus=[("550.54.15", "NVIDIA H100")]))
    assert old == [
        f"NVIDIA driver 550.54.15 is older than {stack.MIN_NVIDIA_DRIVER}, CUDA 13.0's minimum, "
        "which the tested stack's wheels need"
    ]
    assert stack.stack_differences(_installed(dict(stack.TESTED_STACK), gpus=[("590.1", "NVIDIA B200")])) == []
    assert stack.stack_differences(_installed(dict(stack.TESTED_STACK), gpus=[])) == ["nvidia-smi lists no GPU"]


def test_the_stack_file_pins_exactly_the_tested_stack():
    pins = {}
    for line in (ROOT / stack.STACK_FILE).read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", line
            pins[requirement.name] = specifier.version
    assert pins == stack.TESTED_STACK
    header = (ROOT / stack.STACK_FILE).read_text()
    assert f"CUDA {stack.TESTED_CUDA}" in header and stack.MIN_NVIDIA_DRIVER in header


def test_the_tested_stack_is_what_the_installed_verl_0_9_1_pins():
    """verl 0.9.1's extras `vllm` (torch, torchvision, torchaudio, vllm, transformers) and its flash-attn extra."""
    assert version("verl") == stack.TESTED_STACK["verl"]
    pinned = {}
    for line in requires("verl"):
        requirement = Requirement(line)
        marker = str(requirement.marker or "")
        if any(f'extra == "{extra}"' in marker for extra in ("vllm", "flash-attn-cu130torch211")):
            if requirement.name in stack.TESTED_STACK and len(requirement.specifier) == 1:
                (specifier,) = requirement.specifier
                pinned[requirement.name] = specifier.version
    assert pinned == {name: v for name, v in stack.TESTED_STACK.items() if name != "verl"}


def test_the_module_imports_no_gpu_package_at_import_time():
    tree = ast.parse(Path(stack.__file__).read_text())
    top_level = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top_level |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            top_level.add(node.module.split(".")[0])
    assert not top_level & {"torch", "vllm", "flash_attn", "transformers", "verl"}, top_level


def test_the_real_environment_is_read_from_metadata():
    installed = stack.installed_stack(gpus=lambda: None)
    assert installed.versions["verl"] == version("verl")
    assert installed.versions["torch"] == version("torch")
    lines = stack.stack_report_lines(installed)
    assert lines[0].startswith(f"stack: installed verl {version('verl')}, torch {version('torch')}")
    assert lines[1].startswith(f"stack: tested ({stack.STACK_FILE}) verl 0.9.1, torch 2.11.0 (CUDA 13.0)")

"""The wheel, installed outside any checkout: metadata and pip's resolution of every extra that leave a
GPU box's torch, vLLM, transformers and flash-attn alone, the package data `check`, `config-dir` and
`check --e2e` need, and those commands run from the wheel.

The wheel is built from a copy of the checkout (no build/ or egg-info left in the repo) and installed
with --no-deps into a fresh venv whose only link to the project's .venv is a .pth line adding that
venv's site-packages (verl, torch, ...) after its own: maspo_verl itself comes from the wheel. The
.pth path is not a site dir, so the editable install of the checkout in .venv is not processed there.
"""

from __future__ import annotations

import email
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from maspo_verl.integration.versions import SUPPORTED_VERL, TESTED_VERL_VERSIONS

pytestmark = pytest.mark.kind("verl")

ROOT = Path(__file__).resolve().parents[1]
# What a GPU box's verl/vLLM stack was built with: no requirement or extra of ours may install or change them.
GPU_STACK = {"torch", "torchvision", "torchaudio", "vllm", "transformers", "flash-attn"}
NOT_PACKAGED = shutil.ignore_patterns(".venv", ".git", "runs", "outputs", "build", "dist", "*.egg-info", "__pycache__")


def _run(command, cwd, timeout=600, env=None):
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("source") / "maspo-verl"
    shutil.copytree(ROOT, source, ignore=NOT_PACKAGED)
    out = tmp_path_factory.mktemp("dist")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(out),
            str(source),
        ],
        cwd=out,
    )
    (built,) = out.glob("maspo_verl-*.whl")
    return built


@pytest.fixture(scope="module")
def wheel_venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with only the wheel installed, seeing this environment's packages after its own."""
    home = tmp_path_factory.mktemp("wheel-venv") / "venv"
    venv.EnvBuilder(with_pip=False).create(home)
    python = home / "bin" / "python"
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        cwd=home,
    )
    own_site = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=home).stdout.strip()
    )
    (own_site / "zz_project_env.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return home


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VERL_USE_EXTERNAL", "PYTHONPATH"))}
    env.update(extra)
    return env


def test_wheel_metadata_leaves_torch_to_verl_and_states_the_tested_verl_range(wheel):
    with zipfile.ZipFile(wheel) as archive:
        (metadata_name,) = [name for name in archive.namelist() if name.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(archive.read(metadata_name))
    requirements = [Requirement(line) for line in metadata.get_all("Requires-Dist")]
    base = [r for r in requirements if r.marker is None]
    by_extra = {}
    for r in requirements:
        if r.marker is not None:
            extra = str(r.marker).split("==")[-1].strip().strip("\"'")
            by_extra.setdefault(extra, []).append(r)

    assert set(metadata.get_all("Provides-Extra")) == {"cpu", "gpu", "math", "plot", "test"}
    assert "cpu" not in by_extra  # kept for `.[cpu]`; the CPU torch pin is requirements/cpu-constraints.txt
    for extra, listed in [("install_requires", base), *by_extra.items()]:
        named = {canonicalize_name(r.name) for r in listed}
        assert not named & GPU_STACK, f"{extra} names {sorted(named & GPU_STACK)}: it would replace a GPU box's stack"
        assert not any(canonicalize_name(r.name) == "verl" and r.extras for r in listed), (
            f"{extra} requires verl with an extra (verl[vllm] / verl[fsdp] pin torch, vLLM, transformers)"
        )
    (verl,) = [r for r in base if r.name == "verl"]
    assert verl.specifier == SpecifierSet(SUPPORTED_VERL)
    for tested in TESTED_VERL_VERSIONS:
        assert verl.specifier.contains(tested, prereleases=True), tested
    assert any(r.name == "scipy" and r.specifier.contains("1.10") for r in base)
    assert {r.name for r in by_extra["gpu"]} == {"math-verify"}


def _dry_run(target: str, report: Path) -> dict:
    """pip's resolution of `pip install <target>` into this environment (nothing is installed)."""
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report), target]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    if result.returncode != 0:
        pytest.fail(
            f"pip could not resolve {target} (is the package index, PyPI, reachable from here?): "
            f"{' '.join(command)}\n{result.stderr[-3000:]}",
            pytrace=False,
        )
    return json.loads(report.read_text())


def _stack_changes(resolution: dict) -> dict[str, str]:
    return {
        canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
        for item in resolution["install"]
        if canonicalize_name(item["metadata"]["name"]) in GPU_STACK
    }


@pytest.mark.timeout(2400)
def test_no_extra_would_install_or_change_the_gpu_stack(wheel, tmp_path):
    """Every extra resolved by pip into this environment, whose torch (2.13.0, CPU) is not the one verl
    0.9.1's vllm extra pins (2.11.0): nothing of torch, torchvision, torchaudio, vLLM, transformers or
    flash-attn would be installed or changed. The control, `verl[vllm]` (what the gpu extra used to
    require), shows the check can fail: it would replace torch and transformers and add vLLM."""
    control = _stack_changes(_dry_run("verl[vllm]==0.9.1", tmp_path / "control.json"))
    assert control.get("torch") == "2.11.0" and control.get("vllm") == "0.24.0", control
    assert version("torch") != control["torch"], "the control needs an environment holding another torch"

    with zipfile.ZipFile(wheel) as archive:
        (metadata_name,) = [name for name in archive.namelist() if name.endswith(".dist-info/METADATA")]
        extras = email.message_from_bytes(archive.read(metadata_name)).get_all("Provides-Extra")
    assert {"cpu", "gpu", "math", "plot", "test"} <= set(extras)
    for extra in ["", *extras]:
        target = f"{wheel}[{extra}]" if extra else str(wheel)
        changes = _stack_changes(_dry_run(target, tmp_path / f"extra-{extra or 'base'}.json"))
        assert changes == {}, f"pip install maspo-verl[{extra}] would install or change {changes}"


def test_wheel_ships_configs_patches_cpu_script_and_the_entry_point(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points_name,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
        entry_points = archive.read(entry_points_name).decode()
    for path in (
        "maspo_verl/configs/maspo.yaml",
        "maspo_verl/configs/policy_loss/baselines.yaml",
        "maspo_verl/configs/experiment/r1_distill_7b.yaml",
        "maspo_verl/patches/cpu_platform.py",
        "maspo_verl/patches/README.md",
        "maspo_verl/sandbox/tiny/train_cpu.sh",
        "maspo_verl/integration/versions.py",
    ):
        assert path in names, path
    assert not any(name.startswith(("tests/", "examples/", "configs/", "patches/")) for name in names)
    assert "[verl.plugins]\nmaspo = maspo_verl.integration.plugin" in entry_points
    assert "maspo-compare = maspo_verl.sandbox.compare:main" in entry_points


@pytest.mark.training(minutes=3)
@pytest.mark.timeout(1800)
def test_wheel_outside_a_checkout_runs_config_dir_check_and_a_one_step_e2e(wheel_venv, tmp_path):
    python = str(wheel_venv / "bin" / "python")
    site = Path(
        _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=tmp_path).stdout.strip()
    )
    where = _run([python, "-c", "import maspo_verl; print(maspo_verl.__file__)"], cwd=tmp_path, env=_clean_env())
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout

    config_dir = Path(_run([python, "-m", "maspo_verl", "config-dir"], cwd=tmp_path, env=_clean_env()).stdout.strip())
    assert config_dir == site / "maspo_verl" / "configs"
    assert (config_dir / "maspo.yaml").is_file()

    compare_help = _run([str(wheel_venv / "bin" / "maspo-compare"), "--help"], cwd=tmp_path, env=_clean_env())
    assert "--preset" in compare_help.stdout

    check = _run(
        [python, "-m", "maspo_verl", "check", "--e2e", "--e2e-steps", "1"],
        cwd=tmp_path,
        timeout=1500,
        env=_clean_env(TMPDIR=str(tmp_path)),
    )
    assert "'maspo' is registered by `import verl` in a fresh process" in check.stdout
    assert f"config: {config_dir / 'maspo.yaml'}" in check.stdout
    assert f"stack: installed verl {version('verl')}, torch {version('torch')}" in check.stdout
    assert "e2e: PASS" in check.stdout, check.stdout[-4000:]
    assert check.stdout.strip().endswith("check: OK")
    assert not any(ROOT.as_posix() in line for line in check.stdout.splitlines() if line.startswith("config:"))


def test_the_wheel_smoke_script_is_shellcheck_clean_and_rejects_unknown_arguments(tmp_path):
    """scripts/wheel_smoke.sh (the wheel with its dependencies and the main job, run by hand) without installing."""
    script = ROOT / "scripts" / "wheel_smoke.sh"
    shellcheck = Path(sys.executable).with_name("shellcheck")
    result = subprocess.run([str(shellcheck), "-x", str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout
    result = subprocess.run(
        ["bash", str(script), "--stpes", "2"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 2 and "--stpes" in result.stderr

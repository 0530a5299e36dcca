"""The package's shape: the method at the root, one subpackage for the verl boundary, the baselines, the
paper's experiments and the CPU sandbox each in their own; imports that follow those parts; and no module
reaching into another's private names."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kind("unit")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "maspo_verl"
METHOD = ("config", "conventions", "gate", "loss")


def imported_modules(path: Path) -> set[str]:
    """Every module an `import` / `from ... import` anywhere in `path` names (function bodies too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def ours_imported_by(folder: Path, prefixes: tuple[str, ...]) -> list[str]:
    """`file: module` for every import under `folder` of a module starting with one of `prefixes`."""
    return sorted(
        f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {name}"
        for path in folder.rglob("*.py")
        for name in imported_modules(path)
        if name.startswith(prefixes)
    )


def test_the_package_root_holds_the_method_and_the_command_line_and_each_part_has_a_folder():
    subpackages = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").is_file()}
    assert subpackages == {"baselines", "experiments", "integration", "sandbox"}
    assert {path.stem for path in PACKAGE.glob("*.py")} == {"__init__", "__main__", "cli", *METHOD}
    assert {path.stem for path in (PACKAGE / "integration").glob("*.py")} == {
        "__init__",
        "contract",
        "hydra_config",
        "loss_guard",
        "plugin",
        "stack",
        "versions",
    }
    assert {"data.py", "reward.py", "dry_run.py"} <= {p.name for p in (PACKAGE / "experiments").glob("*.py")}
    assert (PACKAGE / "experiments" / "evaluation" / "pass_at_k.py").is_file()
    assert {"compare.py", "statistics.py", "runner.py", "rehearse.py"} <= {
        p.name for p in (PACKAGE / "sandbox").glob("*.py")
    }
    assert (PACKAGE / "sandbox" / "tiny" / "task.py").is_file()


def test_the_method_imports_only_verl_torch_and_itself():
    allowed = {f"maspo_verl.{module}" for module in METHOD} | {"maspo_verl.integration"}
    for module in METHOD:
        ours = {name for name in imported_modules(PACKAGE / f"{module}.py") if name.startswith("maspo_verl")}
        outside = {name for name in ours if not any(name == a or name.startswith(a + ".") for a in allowed)}
        assert outside == set(), f"maspo_verl/{module}.py imports {sorted(outside)}"


def test_experiments_need_neither_the_sandbox_nor_the_command_line():
    prefixes = ("maspo_verl.sandbox", "maspo_verl.cli", "maspo_verl.patches", "patches")
    assert ours_imported_by(PACKAGE / "experiments", prefixes) == []


def test_the_baselines_need_no_cpu_patch_sandbox_or_experiment():
    prefixes = ("maspo_verl.patches", "patches", "maspo_verl.sandbox", "maspo_verl.experiments", "maspo_verl.cli")
    assert ours_imported_by(PACKAGE / "baselines", prefixes) == []


def test_the_import_checks_see_a_forbidden_import(tmp_path):
    (tmp_path / "module.py").write_text("def f():\n    from maspo_verl.sandbox import runner\n")
    assert ours_imported_by(tmp_path, ("maspo_verl.sandbox",)) != []


FRESH_IMPORT = """
import json, sys
import maspo_verl.loss
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY
print(json.dumps({"modules": sorted(m for m in sys.modules if m.startswith("maspo_verl")),
                  "registered": sorted(m for m in ("maspo", "dac", "bapo") if m in POLICY_LOSS_REGISTRY)}))
"""


def fresh_import(plugins: str) -> dict:
    env = {"PATH": "/usr/bin:/bin", "VERL_USE_EXTERNAL_PLUGINS": plugins}
    result = subprocess.run(
        [sys.executable, "-c", FRESH_IMPORT], capture_output=True, text=True, timeout=240, cwd="/", env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.kind("verl")
def test_importing_the_loss_in_a_fresh_process_loads_the_method_and_registers_maspo_alone():
    """With verl's plugin loading off, what `import maspo_verl.loss` itself pulls in: the method and the
    version check, no baseline, patch, sandbox or experiment module."""
    loaded = fresh_import("none")
    assert loaded["registered"] == ["maspo"]
    assert set(loaded["modules"]) == {
        "maspo_verl",
        *(f"maspo_verl.{module}" for module in METHOD),
        "maspo_verl.integration",
        "maspo_verl.integration.versions",
    }


@pytest.mark.kind("verl")
def test_verls_plugin_loading_adds_the_baselines_through_our_entry_point_and_no_cpu_patch():
    """verl >= 0.9 imports our entry point in every process: it registers the baselines by its own call;
    the CPU patches stay out unless opted in through the environment."""
    loaded = fresh_import("auto")
    assert loaded["registered"] == ["bapo", "dac", "maspo"]
    assert "maspo_verl.integration.plugin" in loaded["modules"]
    assert not [m for m in loaded["modules"] if m.startswith(("maspo_verl.patches", "maspo_verl.sandbox"))]
    assert not [m for m in loaded["modules"] if m.startswith("maspo_verl.experiments")]


def private_imports(path: Path) -> list[str]:
    """`from maspo_verl.x import _name` and `module._name` on an imported maspo_verl / patches module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found, modules = [], set()
    label = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(("maspo_verl", "patches")):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{label}:{node.lineno}: {node.module}.{alias.name}")
                modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            modules.update(alias.asname or alias.name for alias in node.names if alias.name.startswith("maspo_verl"))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
        ):
            found.append(f"{label}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_imports_another_modules_private_name():
    sources = [*PACKAGE.rglob("*.py"), *(ROOT / "patches").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
    assert len(sources) > 30
    assert [line for path in sources for line in private_imports(path)] == []


def test_the_private_import_check_sees_both_forms(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from maspo_verl.sandbox.compare import _hidden\nfrom maspo_verl import cli\ncli._probe()\n")
    assert [line.split(": ", 1)[1] for line in private_imports(sample)] == [
        "maspo_verl.sandbox.compare._hidden",
        "cli._probe",
    ]

"""The package's shape: the method at the root, the paper's experiments and the CPU sandbox in their own
subpackages, and no module reaching into another's private names."""

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.kind("unit")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "maspo_verl"


def test_the_package_shows_the_method_the_experiments_and_the_sandbox():
    subpackages = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").is_file()}
    assert subpackages == {"baselines", "experiments", "sandbox"}
    assert {"loss.py", "gate.py", "config.py", "plugin.py"} <= {path.name for path in PACKAGE.glob("*.py")}
    assert {"data.py", "reward.py", "dry_run.py", "rehearse.py"} <= {
        p.name for p in (PACKAGE / "experiments").glob("*.py")
    }
    assert (PACKAGE / "experiments" / "evaluation" / "pass_at_k.py").is_file()
    assert {"compare.py", "statistics.py", "runner.py"} <= {p.name for p in (PACKAGE / "sandbox").glob("*.py")}
    assert (PACKAGE / "sandbox" / "tiny" / "task.py").is_file()


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

"""maspo_verl.integration.contract: the verl API the plugin uses holds in the installed verl, and a moved
symbol in a verl source tree is reported by name (scripts/check_verl_api.sh runs the same check)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from maspo_verl.integration import contract as verl_contract

pytestmark = pytest.mark.kind("verl")

ROOT = Path(__file__).resolve().parents[1]
# The files the contract reads, relative to the verl package folder.
CONTRACT_FILES = (
    "__init__.py",
    "version/version",
    "trainer/ppo/core_algos.py",
    "trainer/ppo/rollout_corr_helper.py",
    "workers/utils/losses.py",
    "workers/config/actor.py",
    "utils/config.py",
)


def installed_verl() -> Path:
    import verl

    return Path(verl.__file__).parent


@pytest.fixture
def verl_copy(tmp_path):
    """The contract's files of the installed verl, copied to a tree the test may break."""
    package = tmp_path / "verl"
    for relative in CONTRACT_FILES:
        source = installed_verl() / relative
        if source.is_file():
            (package / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, package / relative)
    return package


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}: the test's edit no longer applies to this verl"
    path.write_text(text.replace(old, new))


def test_the_installed_verl_keeps_the_contract():
    assert verl_contract.contract_violations(installed_verl()) == []


def test_the_loss_call_site_passes_exactly_what_our_loss_accepts():
    import inspect

    from maspo_verl.loss import compute_policy_loss_maspo

    assert set(inspect.signature(compute_policy_loss_maspo).parameters) == verl_contract.LOSS_CALL_KEYWORDS


@pytest.mark.parametrize(
    "relative, old, new, expected",
    [
        (
            "trainer/ppo/core_algos.py",
            "def register_policy_loss(",
            "def register_loss(",
            "verl/trainer/ppo/core_algos.py: function register_policy_loss is missing",
        ),
        (
            "trainer/ppo/core_algos.py",
            "def get_policy_loss_fn(",
            "def policy_loss_fn_for(",
            "function get_policy_loss_fn is missing",
        ),
        (
            "trainer/ppo/core_algos.py",
            "    loss_mask: torch.Tensor,\n    loss_agg_mode",
            "    mask: torch.Tensor,\n    loss_agg_mode",
            "agg_loss lost the parameter(s) ['loss_mask']",
        ),
        (
            "workers/utils/losses.py",
            "        rollout_is_weights=rollout_is_weights,\n    )",
            "        rollout_is_weights=rollout_is_weights,\n        entropy=entropy,\n    )",
            "ppo_loss passes keyword(s) ['entropy'] that compute_policy_loss_maspo does not accept",
        ),
        (
            "workers/utils/losses.py",
            "        rollout_is_weights=rollout_is_weights,\n    )",
            "    )",
            "ppo_loss no longer passes ['rollout_is_weights'] to the policy loss",
        ),
        (
            "workers/config/actor.py",
            "    clip_ratio_c: float",
            "    dual_clip_ratio: float",
            "verl/workers/config/actor.py: ActorConfig lost the field(s) ['clip_ratio_c']",
        ),
        (
            "workers/config/actor.py",
            '    loss_mode: str = "vanilla"',
            '    mode: str = "vanilla"',
            "PolicyLossConfig lost the field(s) ['loss_mode']",
        ),
        (
            "__init__.py",
            "VERL_USE_EXTERNAL_MODULES",
            "VERL_EXTERNAL_MODULES",
            "no longer reads VERL_USE_EXTERNAL_MODULES",
        ),
        ("utils/config.py", "def omega_conf_to_dataclass(", "def to_dataclass(", "omega_conf_to_dataclass is missing"),
    ],
)
def test_a_moved_symbol_is_named(verl_copy, relative, old, new, expected):
    _edit(verl_copy / relative, old, new)
    violations = verl_contract.contract_violations(verl_copy)
    assert any(expected in violation for violation in violations), violations


def test_plugin_entry_points_are_required_from_verl_0_9_only(verl_copy):
    init = verl_copy / "__init__.py"
    init.write_text(init.read_text().replace('"verl.plugins"', '"verl.extensions"'))
    (verl_copy / "version").mkdir(exist_ok=True)
    (verl_copy / "version" / "version").write_text("0.8.0\n")
    assert verl_contract.contract_violations(verl_copy) == []  # verl 0.8 loads plugins by VERL_USE_EXTERNAL_MODULES
    (verl_copy / "version" / "version").write_text("0.9.0\n")
    assert any('verl/__init__.py: "verl.plugins" is gone' in v for v in verl_contract.contract_violations(verl_copy))


def test_a_missing_call_site_file_is_named(verl_copy):
    (verl_copy / "workers/utils/losses.py").unlink()
    assert verl_contract.contract_violations(verl_copy) == [
        "verl/workers/utils/losses.py is missing: verl's loss call site (ppo_loss) moved"
    ]


@pytest.mark.timeout(120)
def test_the_script_checks_a_source_tree_and_fails_naming_the_symbol(verl_copy, tmp_path):
    script = ROOT / "scripts" / "check_verl_api.sh"
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable}
    ok = subprocess.run(
        ["bash", str(script), str(verl_copy.parent)], capture_output=True, text=True, env=env, timeout=100
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().endswith(": OK")
    _edit(verl_copy / "trainer/ppo/core_algos.py", "def agg_loss(", "def aggregate_loss(")
    archive = tmp_path / "verl-broken.tar.gz"
    subprocess.run(["tar", "czf", str(archive), "-C", str(verl_copy.parent), "verl"], check=True, timeout=60)
    broken = subprocess.run(["bash", str(script), str(archive)], capture_output=True, text=True, env=env, timeout=100)
    assert broken.returncode == 1
    assert "MOVED: verl/trainer/ppo/core_algos.py: function agg_loss is missing" in broken.stderr
    assert "1 broken" in broken.stdout

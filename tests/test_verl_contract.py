"""maspo_verl.integration.contract: the verl API the plugin uses holds in the installed verl; every entry,
removed from a copy of verl's source, is reported by name; a missing checked file fails; every verl name
the package imports is an entry (scripts/check_verl_api.sh runs the same check)."""

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from maspo_verl.integration import contract as verl_contract
from maspo_verl.integration.loss_guard import TRAINER_SETTING_KEYS

pytestmark = pytest.mark.kind("verl")

ROOT = Path(__file__).resolve().parents[1]


def installed_verl() -> Path:
    import verl

    return Path(verl.__file__).parent


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """The installed verl's source (.py, the trainer's yaml configs, the version file), copied once."""
    package = tmp_path_factory.mktemp("pristine") / "verl"
    shutil.copytree(installed_verl(), package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))
    return package


@pytest.fixture
def verl_copy(pristine):
    """The copied verl source; a test may break it, the files it touched are restored afterwards."""
    before = {path: path.read_bytes() for path in pristine.rglob("*") if path.is_file()}
    yield pristine
    for path in [p for p in pristine.rglob("*") if p.is_file() and p not in before]:
        path.unlink()
    for path, content in before.items():
        if not path.is_file() or path.read_bytes() != content:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)


def _tree(package: Path) -> "verl_contract._Tree":
    return verl_contract._Tree(package=package, version=verl_contract._tree_version(package))


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}: the test's edit no longer applies to this verl"
    path.write_text(text.replace(old, new))


def _rename_word(path: Path, word: str) -> None:
    text = path.read_text()
    assert re.search(rf"\b{re.escape(word)}\b", text), f"{word} not in {path}"
    path.write_text(re.sub(rf"\b{re.escape(word)}\b", f"{word}_gone", text))


def _remove_symbol(package: Path, symbol) -> None:
    """Take `symbol` out of the tree: a submodule's file is moved away; a name is renamed everywhere in
    the module the entry names when it appears there (an import binding), else in its defining file."""
    tree = _tree(package)
    path, binding = verl_contract._resolve(tree, symbol.module, symbol.name)
    if binding == "module":
        path.rename(path.with_name(path.stem + "_gone" + path.suffix))
        return
    own = tree.module_file(symbol.module)
    own_binds = re.search(rf"\b{re.escape(symbol.name)}\b", own.read_text())
    _rename_word(own if own_binds else path, symbol.name)


def _violations_naming(package: Path, text: str) -> list[str]:
    return [v for v in verl_contract.contract_violations(package) if text in v]


def test_the_installed_verl_keeps_the_contract():
    assert verl_contract.contract_violations(installed_verl()) == []


def test_the_loss_call_site_passes_exactly_what_our_loss_accepts():
    import inspect

    from maspo_verl.loss import compute_policy_loss_maspo

    assert set(inspect.signature(compute_policy_loss_maspo).parameters) == verl_contract.LOSS_CALL_KEYWORDS


def test_every_verl_name_the_package_uses_is_an_entry():
    """A new `from verl... import` (or `verl_module.attr`) in maspo_verl or the patches needs a SYMBOLS entry."""
    listed = {symbol.qualified for symbol in verl_contract.SYMBOLS}
    used = verl_contract.our_verl_references()
    assert "verl.workers.utils.padding.no_padding_2_padding" in used  # the scan sees the package
    assert "verl.utils.torch_functional.masked_mean" in used  # and names reached through a module alias
    unlisted = {name: sorted(files) for name, files in used.items() if name not in listed}
    assert not unlisted, f"verl names used but not in the contract's SYMBOLS: {unlisted}"


def test_the_loss_guard_keys_are_config_key_entries():
    listed = {entry.key for entry in verl_contract.CONFIG_KEYS}
    assert set(TRAINER_SETTING_KEYS.values()) <= listed


@pytest.mark.parametrize("symbol", verl_contract.SYMBOLS, ids=lambda s: s.qualified)
def test_a_removed_symbol_is_named(verl_copy, symbol):
    if not _tree(verl_copy).requires(symbol.since):  # e.g. the V1 trainer's names on verl 0.8
        assert not _violations_naming(verl_copy, symbol.qualified)
        return
    assert not _violations_naming(verl_copy, symbol.qualified)
    _remove_symbol(verl_copy, symbol)
    named = _violations_naming(verl_copy, symbol.qualified)
    assert named and all(("is missing" in v or " moved " in v) for v in named), named


@pytest.mark.parametrize(
    "symbol, parameter",
    [(s, p) for s in verl_contract.SYMBOLS for p in s.parameters],
    ids=lambda value: value if isinstance(value, str) else value.qualified,
)
def test_a_removed_parameter_is_named(verl_copy, symbol, parameter):
    path, function = verl_contract._resolve(_tree(verl_copy), symbol.module, symbol.name)
    lines = path.read_text().splitlines(keepends=True)
    for index in range(function.lineno - 1, function.body[0].lineno - 1):  # the signature's lines
        lines[index] = re.sub(rf"\b{parameter}\b", f"{parameter}_gone", lines[index])
    path.write_text("".join(lines))
    assert _violations_naming(verl_copy, f"{symbol.qualified} lost the parameter(s) ['{parameter}']")


@pytest.mark.parametrize(
    "symbol, member",
    [(s, m) for s in verl_contract.SYMBOLS for m in s.members],
    ids=lambda value: value if isinstance(value, str) else value.qualified,
)
def test_a_removed_class_member_is_named(verl_copy, symbol, member):
    path, cls = verl_contract._resolve(_tree(verl_copy), symbol.module, symbol.name)
    (definition,) = [node for node in cls.body if member in _names_defined(node)]
    lines = path.read_text().splitlines(keepends=True)
    lines[definition.lineno - 1] = re.sub(rf"\b{member}\b", f"{member}_gone", lines[definition.lineno - 1])
    path.write_text("".join(lines))
    assert _violations_naming(verl_copy, f"{symbol.qualified} lost the member(s) ['{member}']")


def _names_defined(statement: ast.stmt) -> set[str]:
    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {statement.name}
    if isinstance(statement, ast.Assign):
        return {t.id for t in statement.targets if isinstance(t, ast.Name)}
    if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
        return {statement.target.id}
    return set()


@pytest.mark.parametrize("entry", verl_contract.CONFIG_KEYS, ids=lambda e: e.key)
def test_a_removed_config_key_is_named(verl_copy, entry):
    path = verl_copy / verl_contract.GENERATED_TRAINER_CONFIG
    config = yaml.safe_load(path.read_text())
    *parents, leaf = entry.key.split(".")
    node = config
    for part in parents:
        node = node[part]
    if not _tree(verl_copy).requires(entry.since):
        assert not _violations_naming(verl_copy, entry.key)
        return
    del node[leaf]
    path.write_text(yaml.safe_dump(config))
    assert _violations_naming(verl_copy, f"config key {entry.key} is missing")


@pytest.mark.parametrize("entry", verl_contract.SOURCE_TEXTS, ids=lambda e: f"{e.path}:{e.what}")
def test_a_removed_statement_is_named(verl_copy, entry):
    path = verl_copy / entry.path
    if not _tree(verl_copy).requires(entry.since):
        assert not _violations_naming(verl_copy, entry.what)
        return
    text = path.read_text()
    assert re.search(entry.pattern, text)
    # The statement changed to another valid one (the file must still parse): another section name,
    # another metric name, the opposite comparison.
    changed = re.sub(entry.pattern, lambda m: _swapped(m.group(0)), text)
    assert changed != text
    path.write_text(changed)
    assert _violations_naming(verl_copy, f"verl/{entry.path}: {entry.what} is gone")


def _swapped(statement: str) -> str:
    return statement.replace("val-core", "val-main").replace("mean@", "avg@").replace("!=", "==")


def _checked_files() -> list[str]:
    """Every file of the installed verl the contract reads, relative to the package folder."""
    tree = _tree(installed_verl())
    files = {verl_contract.GENERATED_TRAINER_CONFIG, *verl_contract.REWARD_CALL_SITES}
    files |= {entry.path for entry in verl_contract.SOURCE_TEXTS if tree.requires(entry.since)}
    files |= {"workers/utils/losses.py", "workers/config/actor.py", "utils/config.py", "trainer/ppo/core_algos.py"}
    for symbol in verl_contract.SYMBOLS:
        if tree.requires(symbol.since):
            files.add(tree.module_file(symbol.module).relative_to(tree.package).as_posix())
    return sorted(files)


@pytest.mark.parametrize("relative", _checked_files())
def test_a_missing_checked_file_fails_naming_it(verl_copy, relative):
    (verl_copy / relative).unlink()
    named = [v for v in verl_contract.contract_violations(verl_copy) if f"verl/{relative}" in v]
    assert named and any("is missing" in v for v in named), named


def test_the_bypass_mode_rewrite_is_checked_inside_the_function(verl_copy):
    path = verl_copy / "trainer/ppo/rollout_corr_helper.py"
    function = verl_contract._top_level(ast.parse(path.read_text()), "apply_bypass_mode")
    lines = path.read_text().splitlines(keepends=True)
    for index in range(function.lineno, function.end_lineno):
        lines[index] = lines[index].replace("bypass_mode", "pass_through")
    path.write_text("".join(lines))
    assert _violations_naming(verl_copy, "apply_bypass_mode no longer sets loss_mode 'bypass_mode'")


@pytest.mark.parametrize(
    "relative, old, new, expected",
    [
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
    ],
)
def test_a_changed_call_site_or_field_is_named(verl_copy, relative, old, new, expected):
    _edit(verl_copy / relative, old, new)
    violations = verl_contract.contract_violations(verl_copy)
    assert any(expected in violation for violation in violations), violations


@pytest.mark.parametrize(
    "relative, keyword, ours",
    [
        ("experimental/reward_loop/reward_manager/naive.py", "ground_truth", "maspo_verl.experiments.reward"),
        ("workers/reward_manager/naive.py", "solution_str", "maspo_verl.sandbox.tiny.reward"),
    ],
)
def test_a_reward_call_without_a_keyword_our_compute_score_needs_is_named(verl_copy, relative, keyword, ours):
    path = verl_copy / relative
    text = path.read_text()
    changed = re.sub(rf"\n[ \t]*{keyword}=\w+,", "", text)
    assert changed != text, f"no {keyword}= keyword in {path}"
    path.write_text(changed)
    expected = f"compute_score is called without ['{keyword}'], which {ours}.compute_score requires"
    assert _violations_naming(verl_copy, expected)


def test_plugin_entry_points_are_required_from_verl_0_9_only(verl_copy):
    init = verl_copy / "__init__.py"
    init.write_text(init.read_text().replace('"verl.plugins"', '"verl.extensions"'))
    (verl_copy / "version" / "version").write_text("0.8.0\n")
    # verl 0.8 loads plugins by VERL_USE_EXTERNAL_MODULES; what 0.8 lacks (the V1 trainer) is not required
    assert not any("verl.plugins" in v for v in verl_contract.contract_violations(verl_copy))
    (verl_copy / "version" / "version").write_text("0.9.0\n")
    assert any('verl/__init__.py: "verl.plugins" is gone' in v for v in verl_contract.contract_violations(verl_copy))


@pytest.mark.timeout(300)
def test_the_script_checks_a_source_tree_and_fails_naming_the_symbol(verl_copy, tmp_path):
    script = ROOT / "scripts" / "check_verl_api.sh"
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable}
    ok = subprocess.run(
        ["bash", str(script), str(verl_copy.parent)], capture_output=True, text=True, env=env, timeout=280
    )
    assert ok.returncode == 0, ok.stderr
    assert ": OK (" in ok.stdout.strip().splitlines()[-1]
    _rename_word(verl_copy / "trainer/ppo/core_algos.py", "agg_loss")
    archive = tmp_path / "verl-broken.tar.gz"
    subprocess.run(["tar", "czf", str(archive), "-C", str(verl_copy.parent), "verl"], check=True, timeout=60)
    broken = subprocess.run(["bash", str(script), str(archive)], capture_output=True, text=True, env=env, timeout=280)
    assert broken.returncode == 1
    assert "MOVED: verl/trainer/ppo/core_algos.py: verl.trainer.ppo.core_algos.agg_loss is missing" in broken.stderr
    assert "1 broken" in broken.stdout

"""The verl API maspo-verl relies on, checked in a verl source tree without importing it.

    python -m maspo_verl.integration.contract [VERL_SOURCE]    # a checkout, an unpacked sdist or a .tar.gz;
                                                        # default: the installed verl
    bash scripts/check_verl_api.sh [VERL_SOURCE]        # the same

Each entry of the contract names the verl file and symbol, and what of it the plugin uses:
the policy-loss registry, the keywords verl's loss call site passes (which our losses must accept),
`agg_loss`'s parameters (the global batch info verl writes is splatted into it), the
`PolicyLossConfig` / `ActorConfig` fields read by our config and losses, verl's plugin loading
(`VERL_USE_EXTERNAL_MODULES`; the `verl.plugins` entry points from 0.9.0), and the verl code that
`maspo_verl.integration.loss_guard` refuses around (bypass mode's loss-mode rewrite, distillation's vanilla-only
check). Reading source, not importing, lets it run on a tree that is not installed or does not import
here; verl's API drift then shows as "symbol X moved", not as a TypeError minutes into a run.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from maspo_verl.integration.versions import PLUGIN_ENTRY_POINTS_SINCE

__all__ = ["LOSS_CALL_KEYWORDS", "contract_violations", "find_verl_package", "main"]

# The keywords verl's `ppo_loss` passes to a registered policy loss (verl 0.8 -> main).
LOSS_CALL_KEYWORDS = frozenset(
    {"old_log_prob", "log_prob", "advantages", "response_mask", "loss_agg_mode", "config", "rollout_is_weights"}
)
AGG_LOSS_PARAMETERS = ("loss_mat", "loss_mask", "loss_agg_mode")
POLICY_LOSS_CONFIG_FIELDS = ("loss_mode",)
# Read by maspo_verl.loss (clip bounds of gate=hard, dual clip, aggregation), the baselines and the
# SAPO scripts (tau_pos / tau_neg are ActorConfig fields, not policy_loss ones).
ACTOR_CONFIG_FIELDS = (
    "policy_loss",
    "clip_ratio",
    "clip_ratio_low",
    "clip_ratio_high",
    "clip_ratio_c",
    "loss_agg_mode",
    "global_batch_info",
    "tau_pos",
    "tau_neg",
)


@dataclass
class _Tree:
    package: Path  # the `verl` package folder
    version: Version | None

    def module(self, relative: str) -> ast.Module | None:
        path = self.package / relative
        if not path.is_file():
            return None
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def find_verl_package(source: Path) -> Path:
    """The `verl` package folder inside a checkout / sdist folder (or the package folder itself)."""
    for candidate in (source, source / "verl", *sorted(source.glob("*/verl"))):
        if (candidate / "__init__.py").is_file() and (candidate / "trainer").is_dir():
            return candidate
    raise FileNotFoundError(f"no verl package (verl/__init__.py with verl/trainer/) under {source}")


def _tree_version(package: Path) -> Version | None:
    version_file = package / "version" / "version"
    try:
        return Version(version_file.read_text().strip())
    except (OSError, InvalidVersion):
        return None


def _top_level(module: ast.Module, name: str):
    for node in module.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            return node
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return node
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            return node
    return None


def _parameters(function: ast.FunctionDef) -> tuple[set[str], bool]:
    """(named parameters, whether it takes **kwargs)."""
    arguments = function.args
    named = {a.arg for a in arguments.posonlyargs + arguments.args + arguments.kwonlyargs}
    return named, arguments.kwarg is not None


def _class_fields(module: ast.Module, class_name: str, seen: set[str] | None = None) -> set[str] | None:
    """Annotated fields of a dataclass, with those of base classes defined in the same module."""
    node = _top_level(module, class_name)
    if not isinstance(node, ast.ClassDef):
        return None
    fields = {s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
    seen = (seen or set()) | {class_name}
    for base in node.bases:
        if isinstance(base, ast.Name) and base.id not in seen:
            fields |= _class_fields(module, base.id, seen) or set()
    return fields


def _our_loss_parameters() -> set[str]:
    from maspo_verl.loss import compute_policy_loss_maspo

    return set(inspect.signature(compute_policy_loss_maspo).parameters)


def _check_core_algos(tree: _Tree) -> list[str]:
    where = "verl/trainer/ppo/core_algos.py"
    module = tree.module("trainer/ppo/core_algos.py")
    if module is None:
        return [f"{where} is missing: the policy-loss registry (register_policy_loss, get_policy_loss_fn) moved"]
    problems = []
    for name, parameter in (("register_policy_loss", "name"), ("get_policy_loss_fn", "name")):
        node = _top_level(module, name)
        if not isinstance(node, ast.FunctionDef):
            problems.append(f"{where}: function {name} is missing (maspo registers loss_mode='maspo' through it)")
        elif parameter not in _parameters(node)[0]:
            problems.append(f"{where}: {name} no longer takes `{parameter}`")
    if _top_level(module, "POLICY_LOSS_REGISTRY") is None:
        problems.append(f"{where}: POLICY_LOSS_REGISTRY is missing (`check` lists the registered loss modes from it)")
    agg_loss = _top_level(module, "agg_loss")
    if not isinstance(agg_loss, ast.FunctionDef):
        problems.append(f"{where}: function agg_loss is missing (every loss of ours reduces through it)")
    else:
        named, _ = _parameters(agg_loss)
        missing = [p for p in AGG_LOSS_PARAMETERS if p not in named]
        if missing:
            problems.append(
                f"{where}: agg_loss lost the parameter(s) {missing} (called as agg_loss(loss_mat=, "
                "loss_mask=, loss_agg_mode=, **config.global_batch_info))"
            )
    return problems


def _global_batch_keys(function: ast.FunctionDef) -> set[str]:
    """Keys `ppo_loss` writes as config.global_batch_info["key"] = ..."""
    keys = set()
    for node in ast.walk(function):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if (
                    isinstance(target, ast.Subscript)
                    and isinstance(target.value, ast.Attribute)
                    and target.value.attr == "global_batch_info"
                    and isinstance(target.slice, ast.Constant)
                ):
                    keys.add(target.slice.value)
    return keys


def _check_loss_call_site(tree: _Tree) -> list[str]:
    where = "verl/workers/utils/losses.py"
    module = tree.module("workers/utils/losses.py")
    if module is None:
        return [f"{where} is missing: verl's loss call site (ppo_loss) moved"]
    ppo_loss = _top_level(module, "ppo_loss")
    if not isinstance(ppo_loss, ast.FunctionDef):
        return [f"{where}: function ppo_loss is missing (the call site of registered policy losses)"]
    calls = [
        node
        for node in ast.walk(ppo_loss)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "policy_loss_fn"
    ]
    if not calls:
        return [f"{where}: ppo_loss no longer calls `policy_loss_fn(...)` (the registered loss)"]
    problems = []
    accepted = _our_loss_parameters()
    for call in calls:
        passed = {k.arg for k in call.keywords if k.arg is not None}
        if call.args:
            problems.append(
                f"{where}:{call.lineno}: ppo_loss passes {len(call.args)} positional argument(s) to "
                "the policy loss; the contract is keywords only"
            )
        unknown = sorted(passed - accepted)
        if unknown:
            problems.append(
                f"{where}:{call.lineno}: ppo_loss passes keyword(s) {unknown} that "
                "compute_policy_loss_maspo does not accept"
            )
        missing = sorted(LOSS_CALL_KEYWORDS - passed)
        if missing:
            problems.append(f"{where}:{call.lineno}: ppo_loss no longer passes {missing} to the policy loss")
    agg_loss = _top_level(tree.module("trainer/ppo/core_algos.py") or ast.Module(body=[], type_ignores=[]), "agg_loss")
    if isinstance(agg_loss, ast.FunctionDef):
        named, takes_kwargs = _parameters(agg_loss)
        unaccepted = sorted(_global_batch_keys(ppo_loss) - named)
        if unaccepted and not takes_kwargs:
            problems.append(
                f"{where}: ppo_loss writes config.global_batch_info keys {unaccepted} that "
                "verl/trainer/ppo/core_algos.py agg_loss does not accept"
            )
    return problems


def _check_configs(tree: _Tree) -> list[str]:
    where = "verl/workers/config/actor.py"
    module = tree.module("workers/config/actor.py")
    if module is None:
        return [f"{where} is missing: PolicyLossConfig / ActorConfig moved"]
    problems = []
    for class_name, required in (("PolicyLossConfig", POLICY_LOSS_CONFIG_FIELDS), ("ActorConfig", ACTOR_CONFIG_FIELDS)):
        fields = _class_fields(module, class_name)
        if fields is None:
            problems.append(f"{where}: class {class_name} is missing (MaspoPolicyLossConfig subclasses / reads it)")
            continue
        missing = [f for f in required if f not in fields]
        if missing:
            problems.append(f"{where}: {class_name} lost the field(s) {missing}")
    config_utils = tree.module("utils/config.py")
    if config_utils is None or not isinstance(_top_level(config_utils, "omega_conf_to_dataclass"), ast.FunctionDef):
        problems.append(
            "verl/utils/config.py: omega_conf_to_dataclass is missing (verl builds our "
            "MaspoPolicyLossConfig through it; `check` does too)"
        )
    return problems


def _check_plugin_loading(tree: _Tree) -> list[str]:
    where = "verl/__init__.py"
    text = (tree.package / "__init__.py").read_text(encoding="utf-8")
    problems = []
    if "VERL_USE_EXTERNAL_MODULES" not in text:
        problems.append(f"{where}: no longer reads VERL_USE_EXTERNAL_MODULES (how verl 0.8 loads the plugin)")
    if tree.version is None or tree.version.release >= PLUGIN_ENTRY_POINTS_SINCE.release:
        for needle, use in (
            ('"verl.plugins"', "the entry-point group of maspo_verl.integration.plugin"),
            ("VERL_USE_EXTERNAL_PLUGINS", "the switch `check` reports"),
        ):
            if needle not in text:
                problems.append(f"{where}: {needle} is gone ({use}; verl >= 0.9 loads plugins by it)")
    return problems


def _check_guarded_paths(tree: _Tree) -> list[str]:
    """The verl code maspo_verl.integration.loss_guard refuses around: if it moved, the guard may check the wrong thing."""
    problems = []
    helper = tree.module("trainer/ppo/rollout_corr_helper.py")
    if helper is not None:
        bypass = _top_level(helper, "apply_bypass_mode")
        if isinstance(bypass, ast.FunctionDef) and "bypass_mode" not in ast.unparse(bypass):
            problems.append(
                "verl/trainer/ppo/rollout_corr_helper.py: apply_bypass_mode no longer sets "
                "loss_mode 'bypass_mode' (maspo_verl.integration.loss_guard's premise)"
            )
        elif not isinstance(bypass, ast.FunctionDef):
            problems.append(
                "verl/trainer/ppo/rollout_corr_helper.py: apply_bypass_mode is missing "
                "(maspo_verl.integration.loss_guard refuses bypass mode on the legacy trainer because of it)"
            )
    return problems


def contract_violations(source: Path) -> list[str]:
    """Every broken entry of the contract in the verl source tree at `source`, each naming its symbol."""
    package = find_verl_package(Path(source))
    tree = _Tree(package=package, version=_tree_version(package))
    return (
        _check_core_algos(tree)
        + _check_loss_call_site(tree)
        + _check_configs(tree)
        + _check_plugin_loading(tree)
        + _check_guarded_paths(tree)
    )


def _installed_verl_source() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("verl")
    if spec is None or not spec.origin:
        raise FileNotFoundError("verl is not installed; pass a verl source tree")
    return Path(spec.origin).parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m maspo_verl.integration.contract",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "source",
        nargs="?",
        help="verl checkout, unpacked sdist, package folder or .tar.gz (default: the installed verl)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="maspo-verl-contract-") as scratch:
        try:
            source = Path(args.source).expanduser() if args.source else _installed_verl_source()
            if source.is_file() and tarfile.is_tarfile(source):
                with tarfile.open(source) as archive:
                    members = [
                        m
                        for m in archive.getmembers()
                        if "/verl/" in f"/{m.name}"
                        and m.name.endswith(".py")
                        or m.name.endswith("verl/version/version")
                    ]
                    archive.extractall(scratch, members=members, filter="data")
                source = Path(scratch)
            package = find_verl_package(source)
            violations = contract_violations(package)
            version = _tree_version(package)
        except (OSError, tarfile.TarError, SyntaxError) as error:
            print(f"verl API contract: cannot read {args.source or 'the installed verl'}: {error}", file=sys.stderr)
            return 2
    label = f"verl {version or '(unknown version)'} at {args.source or package}"
    for violation in violations:
        print(f"MOVED: {violation}", file=sys.stderr)
    print(f"verl API contract: {label}: " + (f"{len(violations)} broken" if violations else "OK"))
    return 1 if violations else 0


if __name__ == "__main__":
    raise SystemExit(main())

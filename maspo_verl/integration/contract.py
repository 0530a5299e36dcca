"""The verl API maspo-verl relies on, checked in a verl source tree without importing it.

    python -m maspo_verl.integration.contract [VERL_SOURCE]    # a checkout, an unpacked sdist or a .tar.gz;
                                                               # default: the installed verl
    bash scripts/check_verl_api.sh [VERL_SOURCE]               # the same

Each entry names the verl file and symbol (or config key), and what of it the plugin uses:

- SYMBOLS: every verl name this package and its opt-in patches import or rebind (the method's
  registry, `agg_loss`, `BaseConfig` and the `verl.workers.config` re-exports, `verl_F.masked_mean`;
  what Entropy Advantage wraps: `Metric`, `no_padding_2_padding`, `ppo_loss` and its bindings in
  `engine_workers` and `trainer.distillation.losses`; the dry run's and the CPU patches' imports),
  with the parameters we pass and the members we read. A name counts when the module defines it or
  binds it by an import that resolves inside the tree (`from .actor import *` honours `__all__`).
  tests/test_verl_contract.py asserts that every `from verl... import` of the package is listed.
- CONFIG_KEYS: the keys of verl's composed trainer config (verl/trainer/config/_generated_ppo_trainer.yaml)
  that we set or read: the loss guard's mirrored keys (TRAINER_SETTING_KEYS) and the settings our
  scripts and the sandbox rely on (rollout_is, use_kl_loss, entropy_coeff, adv_estimator, val_batch_size, ...).
- SOURCE_TEXTS: statements no symbol shows: the `val-core/<data_source>/acc/mean@N` metric names the
  sandbox reads, distillation's vanilla-only check the loss guard refuses around.
- call sites: the keywords verl's `ppo_loss` passes to a registered loss and verl's reward managers
  pass to `compute_score` (our reward functions must accept them), `agg_loss`'s parameters, the
  `PolicyLossConfig` / `ActorConfig` fields, plugin loading (`VERL_USE_EXTERNAL_MODULES`; the
  `verl.plugins` entry points from 0.9.0) and bypass mode's loss-mode rewrite.

An entry whose file is missing fails, naming the file. Entries carry the first verl version that has
them (`since`), so the same contract holds on 0.8.0, 0.9.x and verl's main. Reading source, not
importing, lets it run on a tree that is not installed or does not import here; verl's API drift then
shows as "symbol X moved", not as a TypeError minutes into a run.
"""

from __future__ import annotations

import argparse
import ast
import functools
import importlib.util
import inspect
import re
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from packaging.version import InvalidVersion, Version

from maspo_verl.integration.versions import PLUGIN_ENTRY_POINTS_SINCE

__all__ = [
    "CONFIG_KEYS",
    "GENERATED_TRAINER_CONFIG",
    "LOSS_CALL_KEYWORDS",
    "REWARD_CALL_SITES",
    "SOURCE_TEXTS",
    "SYMBOLS",
    "ConfigKey",
    "SourceText",
    "Symbol",
    "contract_violations",
    "defining_file",
    "find_verl_package",
    "main",
    "our_verl_references",
]

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
V1_TRAINER_SINCE = "0.9.0"  # verl's V1 trainer (trainer.use_v1), which the CPU patches are written for


@dataclass(frozen=True)
class Symbol:
    """A name in a verl module: defined there or bound by an import that resolves in the tree."""

    module: str  # dotted, e.g. "verl.workers.utils.losses"
    name: str
    use: str  # what we use it for, printed when it moved
    parameters: tuple[str, ...] = ()  # a function's parameters we pass by name or rely on
    members: tuple[str, ...] = ()  # a class's methods / attributes we read
    since: str = "0.8.0"

    @property
    def qualified(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(frozen=True)
class ConfigKey:
    """A key of verl's composed `ppo_trainer` config."""

    key: str
    use: str
    since: str = "0.8.0"


@dataclass(frozen=True)
class SourceText:
    """A statement in a verl file, matched by a regular expression on its text."""

    path: str  # relative to the verl package folder
    pattern: str
    what: str  # the statement, in words
    use: str
    since: str = "0.8.0"


_ENTROPY_ADVANTAGE = "maspo_verl.baselines.entropy_advantage"
_DRY_RUN = "maspo_verl.experiments.dry_run (DRY_RUN=1 of every script)"

SYMBOLS: tuple[Symbol, ...] = (
    # The method and its registration.
    Symbol(
        "verl.trainer.ppo.core_algos",
        "register_policy_loss",
        "registers loss_mode='maspo' and the baselines",
        ("name",),
    ),
    Symbol("verl.trainer.ppo.core_algos", "get_policy_loss_fn", "check / loss guard look loss modes up", ("name",)),
    Symbol("verl.trainer.ppo.core_algos", "POLICY_LOSS_REGISTRY", "check lists the registered loss modes"),
    Symbol("verl.trainer.ppo.core_algos", "agg_loss", "every loss of ours reduces through it", AGG_LOSS_PARAMETERS),
    Symbol("verl.base_config", "BaseConfig", "MaspoConfig and the baselines' config blocks subclass it"),
    Symbol("verl.workers.config", "PolicyLossConfig", "MaspoPolicyLossConfig subclasses this re-export"),
    Symbol("verl.workers.config", "ActorConfig", "the actor config our losses receive (re-export)"),
    Symbol("verl.utils.config", "omega_conf_to_dataclass", "verl and check build our policy-loss config by it"),
    Symbol("verl.utils.torch_functional", "masked_mean", "the baselines' clip metrics", ("values", "mask")),
    Symbol(
        "verl.workers.utils.losses",
        "ppo_loss",
        "Entropy Advantage wraps it",
        ("config", "model_output", "data", "dp_group"),
    ),
    # Entropy Advantage: the metrics it returns, the padding it undoes, the bindings it rebinds.
    Symbol(
        "verl.utils.metric", "Metric", f"{_ENTROPY_ADVANTAGE} returns its metrics as Metric", members=("from_dict",)
    ),
    Symbol("verl.utils.metric", "AggregationType", f"{_ENTROPY_ADVANTAGE}'s metric aggregation", members=("MEAN",)),
    Symbol(
        "verl.workers.utils.padding",
        "no_padding_2_padding",
        f"{_ENTROPY_ADVANTAGE} pads the entropy",
        ("tensor", "data"),
    ),
    Symbol("verl.workers.engine_workers", "ppo_loss", f"{_ENTROPY_ADVANTAGE} rebinds this import of ppo_loss"),
    Symbol("verl.trainer.distillation.losses", "ppo_loss", f"{_ENTROPY_ADVANTAGE} rebinds this import of ppo_loss"),
    # The verl code the loss guard's bypass-mode note describes (workers keep the configured loss).
    Symbol(
        "verl.trainer.ppo.rollout_corr_helper",
        "apply_bypass_mode",
        "the loss guard's note on bypass mode names it",
    ),
    # The experiments' dry run: validates a script's config as verl's trainer would.
    Symbol("verl.trainer.ppo.core_algos", "get_adv_estimator_fn", _DRY_RUN),
    Symbol("verl.trainer.ppo.reward", "get_custom_reward_fn", _DRY_RUN),
    Symbol("verl.trainer.ppo.reward", "resolve_reward_manager_cls", _DRY_RUN),
    Symbol("verl.trainer.ppo.utils", "need_critic", _DRY_RUN),
    Symbol("verl.trainer.ppo.utils", "need_reference_policy", _DRY_RUN),
    Symbol("verl.utils.config", "validate_config", _DRY_RUN),
    # The opt-in CPU patches (maspo_verl.patches), written for the V1 trainer (verl >= 0.9).
    *(
        Symbol(module, name, f"CPU patch {patch}", since=V1_TRAINER_SINCE)
        for module, name, patch in (
            ("verl.plugin.platform", "PlatformBase", "cpu_platform"),
            ("verl.plugin.platform", "PlatformRegistry", "cpu_platform"),
            ("verl.plugin.platform", "get_platform", "cpu_platform"),
            ("verl.plugin.platform", "set_platform", "cpu_platform"),
            ("verl.utils.distributed", "initialize_global_process_group_ray", "cpu_platform rebinds it"),
            ("verl.workers.engine_workers", "initialize_global_process_group_ray", "cpu_platform rebinds it"),
            ("verl.workers.engine.fsdp.transformer_impl", "CPUOffloadPolicy", "cpu_platform rebinds it"),
            ("verl.workers.engine.base", "EngineRegistry", "cpu_engines"),
            ("verl.workers.engine.fsdp.transformer_impl", "FSDPEngineWithLMHead", "cpu_engines"),
            ("verl.workers.engine.fsdp.transformer_impl", "FSDPEngineWithValueHead", "cpu_engines"),
            ("verl.workers.rollout", "base", "hf_rollout"),
            ("verl.workers.rollout.base", "BaseRollout", "hf_rollout"),
            ("verl.workers.rollout.base", "_ROLLOUT_REGISTRY", "hf_rollout registers its server adapter there"),
            ("verl.workers.rollout.replica", "RolloutReplica", "hf_rollout"),
            ("verl.workers.rollout.replica", "RolloutReplicaRegistry", "hf_rollout"),
            ("verl.workers.rollout.replica", "TokenOutput", "hf_rollout"),
            ("verl.experimental.agent_loop.agent_loop", "AgentLoopWorker", "hf_agent_loop"),
            ("verl.experimental.agent_loop.agent_loop", "register", "hf_agent_loop"),
            ("verl.experimental.agent_loop", "agent_loop", "hf_agent_loop"),
            ("verl.experimental.agent_loop.agent_loop", "_agent_loop_registry", "hf_agent_loop restores its entries"),
            ("verl.plugin.platform.platform_manager", "_current_platform", "cpu_platform sets and restores it"),
            ("verl.experimental.agent_loop.single_turn_agent_loop", "SingleTurnAgentLoop", "hf_agent_loop"),
            ("verl.experimental.reward_loop", "RewardLoopWorker", "hf_agent_loop"),
            ("verl.trainer.ppo.v1.agent_loop_tq", "AgentLoopManagerTQ", "batched_agent_loop"),
            ("verl.trainer.ppo.v1.agent_loop_tq", "AgentLoopWorkerTQ", "batched_agent_loop"),
            ("verl.utils.tensordict_utils", "list_of_dict_to_tensordict", "batched_agent_loop"),
            ("verl.workers.rollout.llm_server", "LLMServerClient", "batched_agent_loop"),
            ("verl.trainer.ppo.v1.replay_buffer", "ReplayBuffer", "fast_replay_buffer"),
            ("verl.trainer.ppo.metric_utils", "bootstrap_metric", "fast_validation_metrics rebinds it"),
        )
    ),
)

GENERATED_TRAINER_CONFIG = "trainer/config/_generated_ppo_trainer.yaml"
_GUARD = "mirrored by policy_loss.trainer_settings; the loss guard reads it"
CONFIG_KEYS: tuple[ConfigKey, ...] = (
    # maspo_verl.integration.loss_guard.TRAINER_SETTING_KEYS (tests/test_verl_contract.py keeps them listed)
    ConfigKey("trainer.use_v1", _GUARD, since=V1_TRAINER_SINCE),
    ConfigKey("algorithm.adv_estimator", _GUARD + "; GRPO advantages (adv_estimator=grpo)"),
    ConfigKey("algorithm.norm_adv_by_std_in_grpo", _GUARD + "; GRPO's advantage normalisation"),
    ConfigKey("algorithm.rollout_correction.bypass_mode", _GUARD),
    ConfigKey("algorithm.rollout_correction.rollout_is", _GUARD + "; the IS weights our losses multiply in"),
    ConfigKey("algorithm.rollout_correction.rollout_rs", _GUARD),
    ConfigKey("actor_rollout_ref.actor.use_kl_loss", _GUARD + "; the paper's setting: no KL loss"),
    ConfigKey("actor_rollout_ref.actor.entropy_coeff", _GUARD + "; the paper's setting: entropy coefficient 0"),
    ConfigKey("distillation.enabled", _GUARD),
    ConfigKey("distillation.distillation_loss.use_task_rewards", _GUARD),
    ConfigKey("distillation.distillation_loss.use_policy_gradient", _GUARD),
    ConfigKey("distillation.distillation_loss.policy_loss_mode", _GUARD),
    # Set by our configs and scripts, read by the dry run and the sandbox.
    ConfigKey("actor_rollout_ref.actor.policy_loss.loss_mode", "selects maspo and the baselines"),
    ConfigKey("actor_rollout_ref.actor.calculate_entropy", "Entropy Advantage needs the per-token entropy"),
    ConfigKey("data.val_batch_size", "the dry run and the CPU rehearsal size validation batches by it"),
    ConfigKey("actor_rollout_ref.rollout.val_kwargs.n", "N of val-core/<data_source>/acc/mean@N"),
    ConfigKey("reward.custom_reward_function.path", "our compute_score files"),
    ConfigKey("reward.custom_reward_function.name", "our compute_score files"),
)

SOURCE_TEXTS: tuple[SourceText, ...] = (
    SourceText(
        "trainer/ppo/ray_trainer.py",
        r"""metric_sec\s*=\s*["']val-core["']""",
        'metric_sec = "val-core"',
        "the sandbox and the evaluation read val-core/<data_source>/acc/mean@N",
    ),
    SourceText(
        "trainer/ppo/v1/trainer_base.py",
        r"""metric_sec\s*=\s*["']val-core["']""",
        'metric_sec = "val-core"',
        "the sandbox reads val-core/<data_source>/acc/mean@N from the V1 trainer",
        since=V1_TRAINER_SINCE,
    ),
    SourceText(
        "trainer/ppo/metric_utils.py",
        r"""f["']mean@\{""",
        'f"mean@{n}"',
        "the validation metric name mean@N the sandbox reads",
    ),
    SourceText(
        "workers/config/distillation.py",
        r"""policy_loss_mode\s*!=\s*["']vanilla["']""",
        'policy_loss_mode != "vanilla" (distillation accepts only vanilla)',
        "the loss guard refuses distillation with another policy_loss_mode because of it",
    ),
)

# verl's reward managers that call a custom compute_score, and our compute_score functions they call.
REWARD_CALL_SITES = ("experimental/reward_loop/reward_manager/naive.py", "workers/reward_manager/naive.py")
OUR_REWARD_FUNCTIONS = ("maspo_verl.experiments.reward", "maspo_verl.sandbox.tiny.reward")


@functools.lru_cache(maxsize=512)
def _parse_source(filename: str, text: str) -> ast.Module:
    """A verl file's AST, parsed once per text (the contract is checked on many trees in one test run)."""
    return ast.parse(text, filename=filename)


@dataclass
class _Tree:
    package: Path  # the `verl` package folder
    version: Version | None

    parsed: dict[Path, ast.Module] = field(default_factory=dict)

    def parse(self, path: Path) -> ast.Module:
        if path not in self.parsed:
            self.parsed[path] = _parse_source(str(path), path.read_text(encoding="utf-8"))
        return self.parsed[path]

    def module(self, relative: str) -> ast.Module | None:
        path = self.package / relative
        return self.parse(path) if path.is_file() else None

    def requires(self, since: str) -> bool:
        """Whether an entry that exists from verl `since` applies to this tree (unknown version: yes)."""
        return self.version is None or self.version.release >= Version(since).release

    def module_file(self, dotted: str) -> Path | None:
        base = self.package.joinpath(*dotted.split(".")[1:])
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None

    def relative(self, path: Path) -> str:
        return "verl/" + path.relative_to(self.package).as_posix()


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


def _required_parameters(function: ast.FunctionDef) -> set[str]:
    """Parameters without a default value (what every caller must pass)."""
    arguments = function.args
    positional = arguments.posonlyargs + arguments.args
    required = {a.arg for a in positional[: len(positional) - len(arguments.defaults)]}
    required |= {a.arg for a, d in zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True) if d is None}
    return required


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


def _class_members(node: ast.ClassDef) -> set[str]:
    members = set()
    for statement in node.body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            members.add(statement.name)
        elif isinstance(statement, ast.Assign):
            members |= {t.id for t in statement.targets if isinstance(t, ast.Name)}
        elif isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            members.add(statement.target.id)
    return members


def _module_statements(body: list[ast.stmt]):
    """A module's top-level statements, including those inside top-level if/try blocks."""
    for node in body:
        yield node
        if isinstance(node, ast.If):
            yield from _module_statements(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            yield from _module_statements(
                node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]
            )


def _literal_all(module: ast.Module) -> set[str] | None:
    node = _top_level(module, "__all__")
    if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, (ast.List, ast.Tuple)):
        return {e.value for e in node.value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return None


def _absolute(module_name: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    parts = module_name.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _resolve(tree: _Tree, module_name: str, name: str, seen: frozenset = frozenset()):
    """Where `name` of verl module `module_name` is bound, as (file, binding): binding is the defining
    AST node (a def, class or assignment in the tree), "external" (imported from outside verl) or
    "module" (a submodule); None when unbound. Imports are followed inside the tree; a star import
    counts only for names in the source module's literal `__all__`, as Python's does."""
    if (module_name, name) in seen:
        return None
    seen = seen | {(module_name, name)}
    path = tree.module_file(module_name)
    if path is None:
        return None
    is_package = path.name == "__init__.py"
    submodule = tree.module_file(f"{module_name}.{name}") if is_package else None
    if submodule is not None:
        return submodule, "module"
    for node in _module_statements(tree.parse(path).body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return path, node
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return path, node
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            return path, node
        if isinstance(node, ast.Import) and any((a.asname or a.name.split(".")[0]) == name for a in node.names):
            return path, "external"
        if isinstance(node, ast.ImportFrom):
            source = _absolute(module_name, is_package, node)
            in_verl = source.split(".")[0] == "verl"
            for alias in node.names:
                if alias.name == "*":
                    source_file = tree.module_file(source) if in_verl else None
                    exported = _literal_all(tree.parse(source_file)) if source_file is not None else None
                    if source_file is None or (exported is not None and name not in exported):
                        continue
                    found = _resolve(tree, source, name, seen)
                    if found is not None:
                        return found
                elif (alias.asname or alias.name) == name:
                    return _resolve(tree, source, alias.name, seen) if in_verl else (path, "external")
    return None


def defining_file(source: Path, symbol: Symbol) -> Path | None:
    """The file of the verl tree at `source` that defines `symbol` (its def, class, assignment or, for a
    submodule, the module file), following imports inside the tree; None when unbound."""
    package = find_verl_package(Path(source))
    found = _resolve(_Tree(package=package, version=_tree_version(package)), symbol.module, symbol.name)
    return None if found is None or found[1] == "external" else found[0]


def _check_symbols(tree: _Tree) -> list[str]:
    problems = []
    for symbol in SYMBOLS:
        if not tree.requires(symbol.since):
            continue
        path = tree.module_file(symbol.module)
        if path is None:
            where = "verl/" + "/".join(symbol.module.split(".")[1:])
            problems.append(f"{where}.py (or {where}/__init__.py) is missing: {symbol.qualified} moved ({symbol.use})")
            continue
        where = tree.relative(path)
        resolved = _resolve(tree, symbol.module, symbol.name)
        if resolved is None:
            problems.append(f"{where}: {symbol.qualified} is missing ({symbol.use})")
            continue
        found = resolved[1]
        if symbol.parameters and isinstance(found, (ast.FunctionDef, ast.AsyncFunctionDef)):
            named, _ = _parameters(found)
            missing = [p for p in symbol.parameters if p not in named]
            if missing:
                problems.append(f"{where}: {symbol.qualified} lost the parameter(s) {missing} ({symbol.use})")
        elif symbol.parameters and not isinstance(found, str):
            problems.append(f"{where}: {symbol.qualified} is no longer a function ({symbol.use})")
        if symbol.members and isinstance(found, ast.ClassDef):
            missing = [m for m in symbol.members if m not in _class_members(found)]
            if missing:
                problems.append(f"{where}: {symbol.qualified} lost the member(s) {missing} ({symbol.use})")
        elif symbol.members and not isinstance(found, str):
            problems.append(f"{where}: {symbol.qualified} is no longer a class ({symbol.use})")
    return problems


def _check_config_keys(tree: _Tree) -> list[str]:
    import yaml

    where = f"verl/{GENERATED_TRAINER_CONFIG}"
    keys = [k for k in CONFIG_KEYS if tree.requires(k.since)]
    path = tree.package / GENERATED_TRAINER_CONFIG
    if not path.is_file():
        return [f"{where} is missing: cannot check the config keys {[k.key for k in keys]}"]
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    problems = []
    for entry in keys:
        node = config
        for part in entry.key.split("."):
            if not isinstance(node, dict) or part not in node:
                problems.append(f"{where}: config key {entry.key} is missing ({entry.use})")
                break
            node = node[part]
    return problems


def _check_source_texts(tree: _Tree) -> list[str]:
    problems = []
    for entry in SOURCE_TEXTS:
        if not tree.requires(entry.since):
            continue
        path = tree.package / entry.path
        if not path.is_file():
            problems.append(f"verl/{entry.path} is missing: {entry.what} moved ({entry.use})")
        elif not re.search(entry.pattern, path.read_text(encoding="utf-8")):
            problems.append(f"verl/{entry.path}: {entry.what} is gone ({entry.use})")
    return problems


def _our_function(module_name: str, function: str) -> ast.FunctionDef:
    """`function` of one of our modules, parsed from its source (not imported: no optional dependency needed)."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or not spec.origin:
        raise FileNotFoundError(f"{module_name} is not importable here")
    node = _top_level(ast.parse(Path(spec.origin).read_text(encoding="utf-8")), function)
    if not isinstance(node, ast.FunctionDef):
        raise LookupError(f"{module_name}.{function} is missing")
    return node


def _check_reward_call_sites(tree: _Tree) -> list[str]:
    """The keywords verl's reward managers pass to `compute_score` against our reward functions."""
    ours = {name: _our_function(name, "compute_score") for name in OUR_REWARD_FUNCTIONS}
    problems = []
    for relative in REWARD_CALL_SITES:
        where = f"verl/{relative}"
        module = tree.module(relative)
        if module is None:
            problems.append(f"{where} is missing: verl's call of the custom reward function compute_score moved")
            continue
        calls = [
            node
            for node in ast.walk(module)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "compute_score"
            and any(k.arg for k in node.keywords)
        ]
        if not calls:
            problems.append(f"{where}: no call self.compute_score(data_source=..., ...) any more")
        for call in calls:
            passed = {k.arg for k in call.keywords if k.arg is not None}
            for name, function in ours.items():
                named, takes_kwargs = _parameters(function)
                missing = sorted(_required_parameters(function) - passed)
                if missing:
                    problems.append(
                        f"{where}:{call.lineno}: compute_score is called without {missing}, which "
                        f"{name}.compute_score requires"
                    )
                unknown = sorted(passed - named)
                if unknown and not takes_kwargs:
                    problems.append(
                        f"{where}:{call.lineno}: compute_score is called with {unknown}, which "
                        f"{name}.compute_score does not accept"
                    )
    return problems


def _our_loss_parameters() -> set[str]:
    from maspo_verl.loss import compute_policy_loss_maspo

    return set(inspect.signature(compute_policy_loss_maspo).parameters)


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
    """Bypass mode's loss-mode rewrite in the driver's config, which the loss guard's note describes (the
    function itself is a SYMBOLS entry; a missing file fails there)."""
    helper = tree.module("trainer/ppo/rollout_corr_helper.py")
    bypass = _top_level(helper, "apply_bypass_mode") if helper is not None else None
    if isinstance(bypass, ast.FunctionDef) and "bypass_mode" not in ast.unparse(bypass.body):
        return [
            "verl/trainer/ppo/rollout_corr_helper.py: apply_bypass_mode no longer sets "
            "loss_mode 'bypass_mode' (maspo_verl.integration.loss_guard's premise)"
        ]
    return []


def contract_violations(source: Path) -> list[str]:
    """Every broken entry of the contract in the verl source tree at `source`, each naming its symbol."""
    package = find_verl_package(Path(source))
    tree = _Tree(package=package, version=_tree_version(package))
    return (
        _check_symbols(tree)
        + _check_loss_call_site(tree)
        + _check_configs(tree)
        + _check_config_keys(tree)
        + _check_source_texts(tree)
        + _check_reward_call_sites(tree)
        + _check_plugin_loading(tree)
        + _check_guarded_paths(tree)
    )


def our_verl_references(roots: list[Path] | None = None) -> dict[str, set[str]]:
    """Every verl name our code imports (`from verl.x import y`) or reaches through a module alias
    (`import verl.x as m` ... `m.y`), as "verl.x.y" -> the files using it. Default roots: the
    maspo_verl package (with its installed patches)."""
    if roots is None:
        spec = importlib.util.find_spec("maspo_verl")
        roots = [Path(spec.origin).parent]
        patches = importlib.util.find_spec("maspo_verl.patches")
        if patches is not None and patches.origin and not Path(patches.origin).parent.is_relative_to(roots[0]):
            roots.append(Path(patches.origin).parent)
    verl_tree = _Tree(package=_installed_verl_source(), version=None)
    found: dict[str, set[str]] = {}
    for root in roots:
        for path in sorted(Path(root).rglob("*.py")):
            module = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            aliases = {}
            for node in ast.walk(module):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("verl."):
                    for alias in node.names:
                        found.setdefault(f"{node.module}.{alias.name}", set()).add(str(path))
                        aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                elif isinstance(node, ast.Import):
                    aliases.update({a.asname: a.name for a in node.names if a.name.startswith("verl.") and a.asname})
            for node in ast.walk(module):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                    target = aliases[node.value.id]
                    if verl_tree.module_file(target) is not None:  # a module alias, not a function's
                        found.setdefault(f"{target}.{node.attr}", set()).add(str(path))
    return found


def _installed_verl_source() -> Path:
    spec = importlib.util.find_spec("verl")
    if spec is None or not spec.origin:
        raise FileNotFoundError("verl is not installed; pass a verl source tree")
    return Path(spec.origin).parent


def _contract_member(name: str) -> bool:
    """Whether a tar member is one of the files the contract reads (verl's .py files, its trainer
    yaml configs, its version file)."""
    if "/verl/" not in f"/{name}":
        return False
    return name.endswith((".py", "verl/version/version")) or (
        "/trainer/config/" in f"/{name}" and name.endswith(".yaml")
    )


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
                    members = [m for m in archive.getmembers() if _contract_member(m.name)]
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
    entries = len(SYMBOLS) + len(CONFIG_KEYS) + len(SOURCE_TEXTS)
    print(
        f"verl API contract: {label}: "
        + (f"{len(violations)} broken" if violations else f"OK ({entries} entries and the call sites)")
    )
    return 1 if violations else 0


if __name__ == "__main__":
    raise SystemExit(main())

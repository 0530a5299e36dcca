"""`python -m maspo_verl ...` (also the `maspo-verl` console script).

check [--e2e [--e2e-steps N]] [--config-name NAME] [HYDRA_OVERRIDE ...]
    Prove the plugin to the user: verl's version (a WARNING when it is not one of the tested
    versions, a failure outside the supported range), whether `maspo` is in verl's policy-loss
    registry in a fresh process (through the entry point, as verl's Ray workers load it; on verl
    0.8 through VERL_USE_EXTERNAL_MODULES), and the MASPO config resolved from configs/<NAME>.yaml
    with the overrides, its loss_mode looked up in verl's registry as verl's trainer does. Fails
    on verl settings under which a loss of ours would not train (distillation without task rewards
    or with policy_loss_mode other than vanilla) and on a verl key the loss guard reads that this
    verl lacks, naming the key; prints one NOTE line per verl setting that changes what the loss
    computes (rollout-correction bypass mode: the rollout engine's log-probs become MASPO's p_old;
    rollout IS weights, KL and entropy terms, the advantage's scale, distillation's added loss).
    `--e2e` then trains MASPO with verl's own trainer on CPU (slow: minutes).
config-dir
    Print the folder of our Hydra configs, for `main_ppo --config-path`.
"""

from __future__ import annotations

import argparse
import difflib
import os
import subprocess
import sys

from maspo_verl.integration.hydra_config import compose, config_dir
from maspo_verl.integration.loss_guard import MissingVerlKeyError, loss_replacing_settings

# What VERL_USE_EXTERNAL_MODULES must name on verl 0.8 (no entry points): our plugin, which registers MASPO
# and the baselines (`maspo_verl` alone registers MASPO only).
PLUGIN_MODULE = "maspo_verl.integration.plugin"

_REGISTRY_PROBE = (
    "import verl\n"
    "from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY\n"
    "import sys\n"
    "sys.exit(0 if 'maspo' in POLICY_LOSS_REGISTRY else 3)\n"
)


def registered_in_fresh_process(env_overrides: dict[str, str] | None = None, timeout: float = 120) -> bool:
    """Whether `import verl` alone registers loss_mode=maspo in a new Python process."""
    env = {k: v for k, v in os.environ.items() if k != "VERL_USE_EXTERNAL_MODULES"}
    env.update(env_overrides or {})
    result = subprocess.run(
        [sys.executable, "-c", _REGISTRY_PROBE], env=env, capture_output=True, text=True, timeout=timeout
    )
    return result.returncode == 0


def unregistered_loss_mode(loss_mode: str) -> str | None:
    """verl's own error for a loss mode its policy-loss registry lacks ("Unsupported loss mode: ...
    Supported modes are: [...]", as verl's trainer and DRY_RUN raise it), or None when registered."""
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    import maspo_verl  # noqa: F401  (our modes are in the registry of every process verl starts)
    from maspo_verl.baselines import register_baselines

    register_baselines()

    try:
        get_policy_loss_fn(loss_mode)
    except ValueError as error:
        return str(error)
    return None


def did_you_mean(word: str, choices) -> str:
    """ " (did you mean 'x'?)" for the closest of `choices` to a mistyped `word`, or ""."""
    close = difflib.get_close_matches(word, [str(choice) for choice in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def loss_mode_problem(loss_mode: str) -> str | None:
    """One line naming the key when `loss_mode` is not in verl's registry (verl's message, plus the closest
    registered mode), or None when it is."""
    problem = unregistered_loss_mode(loss_mode)
    if problem is None:
        return None
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

    suggestion = did_you_mean(loss_mode, POLICY_LOSS_REGISTRY)
    return f"actor_rollout_ref.actor.policy_loss.loss_mode={loss_mode!r}{suggestion}: {problem}"


def innermost_error(error: BaseException) -> BaseException:
    """The error at the bottom of a chain (Hydra wraps our ValueError in InstantiationException)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def config_error_line(error: BaseException, config_name: str, overrides: list[str]) -> str:
    """One line for a config that does not compose or build: the key and what is wrong with it, with a
    suggestion for a mistyped key, instead of Hydra's wrapped multi-line messages."""
    import re

    cause = innermost_error(error)
    message = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    unknown = re.match(r"Could not override '([^']+)'", str(error))
    if unknown:
        key = unknown.group(1)
        suggestion = ""
        try:
            from omegaconf import OmegaConf

            others = [o for o in overrides if not o.lstrip("+~").startswith(key + "=")]
            node, parts = compose_trainer_config(config_name, others), key.split(".")
            for depth, part in enumerate(parts):  # down to the first segment that does not exist
                children = node.keys() if OmegaConf.is_dict(node) else []
                if part not in children:
                    close = difflib.get_close_matches(part, [str(c) for c in children], n=1, cutoff=0.6)
                    if close:
                        suggestion = ".".join([*parts[:depth], close[0], *parts[depth + 1 :]])
                    break
                node = node[part]
        except Exception:  # the suggestion is a courtesy; the failure line stands without it
            pass
        if suggestion:
            return f"{key}: no such key in {config_name}.yaml (did you mean {suggestion!r}?)"
        return f"{key}: no such key in {config_name}.yaml; a new key needs a leading + (+{key}=...)"
    if isinstance(cause, ValueError):
        return f"invalid value: {message}"
    return f"config {config_name}.yaml with {overrides}: {type(cause).__name__}: {message}"


def compose_trainer_config(config_name: str = "maspo", overrides: list[str] | None = None):
    """Compose configs/<config_name>.yaml over verl's ppo_trainer with Hydra overrides."""
    return compose(config_name, overrides)


def _check(args: argparse.Namespace) -> int:
    from importlib.metadata import version

    import maspo_verl
    from maspo_verl.integration.versions import has_plugin_entry_points, verl_support

    verl_version = version("verl")
    print(
        f"maspo-verl {maspo_verl.__version__} (supports verl{maspo_verl.SUPPORTED_VERL}; tested with "
        f"{', '.join(maspo_verl.TESTED_VERL_VERSIONS)})"
    )
    from maspo_verl.integration.stack import stack_report_lines

    for line in stack_report_lines():  # the installed GPU stack against verl 0.9.1's pins; notes only
        print(line)
    failures = []

    support, support_message = verl_support(verl_version)
    if support == "unsupported":
        failures.append(support_message)
    elif support == "untested":
        print(f"WARNING: {support_message}", file=sys.stderr)

    plugins_policy = os.environ.get("VERL_USE_EXTERNAL_PLUGINS", "auto")
    entry_points = has_plugin_entry_points(verl_version)
    if entry_points and registered_in_fresh_process():
        print(
            f"registry: 'maspo' is registered by `import verl` in a fresh process "
            f"(verl.plugins entry point, VERL_USE_EXTERNAL_PLUGINS={plugins_policy})"
        )
    elif os.environ.get("VERL_USE_EXTERNAL_MODULES", "") and registered_in_fresh_process(
        {"VERL_USE_EXTERNAL_MODULES": os.environ["VERL_USE_EXTERNAL_MODULES"]}
    ):
        reason = (
            f"the verl.plugins entry point is off: VERL_USE_EXTERNAL_PLUGINS={plugins_policy}"
            if entry_points
            else f"verl {verl_version} has no verl.plugins entry points"
        )
        print(
            f"registry: 'maspo' is registered by VERL_USE_EXTERNAL_MODULES="
            f"{os.environ['VERL_USE_EXTERNAL_MODULES']} ({reason})"
        )
    elif registered_in_fresh_process({"VERL_USE_EXTERNAL_MODULES": PLUGIN_MODULE}):
        if entry_points:
            failures.append(
                f"'maspo' is not registered by `import verl` in this environment (VERL_USE_EXTERNAL_PLUGINS="
                f"{plugins_policy} skips our entry point): export VERL_USE_EXTERNAL_MODULES={PLUGIN_MODULE} (before "
                "`ray start` on clusters) or allow the entry point with VERL_USE_EXTERNAL_PLUGINS=auto or a list "
                "including 'maspo'"
            )
        else:
            failures.append(
                f"verl {verl_version} loads no verl.plugins entry points (they exist from verl 0.9.0), so `import "
                f"verl` alone does not register 'maspo': export VERL_USE_EXTERNAL_MODULES={PLUGIN_MODULE} in every "
                "process that imports verl (before `ray start` on clusters, or in the job's runtime_env)"
            )
    else:
        failures.append(
            "'maspo' is not in verl's policy-loss registry in a fresh process, neither through the "
            f"verl.plugins entry point nor VERL_USE_EXTERNAL_MODULES={PLUGIN_MODULE}; reinstall with "
            f"`pip install -e .` and run `python -c 'import {PLUGIN_MODULE}'` to see the import error"
        )

    policy_loss = None
    try:
        cfg = compose_trainer_config(args.config_name, args.overrides)
        try:
            refusals, notes = loss_replacing_settings(cfg)
        except MissingVerlKeyError as error:  # a verl key the guard reads was renamed: that is the failure
            refusals, notes = [str(error)], []
        failures.extend(refusals)
        for note in notes:
            print(f"NOTE: {note}")
        if not refusals:
            from verl.utils.config import omega_conf_to_dataclass

            policy_loss = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor.policy_loss)
    except Exception as error:  # show Hydra's/our ValueError as one clear line
        failures.append(config_error_line(error, args.config_name, args.overrides))
    mode_problem = loss_mode_problem(policy_loss.loss_mode) if policy_loss is not None else None
    if mode_problem:
        failures.append(mode_problem)
    elif policy_loss is not None:
        print(f"config: {config_dir() / (args.config_name + '.yaml')} {' '.join(args.overrides)}")
        print(
            f"  policy_loss: {type(policy_loss).__module__}.{type(policy_loss).__qualname__}, "
            f"loss_mode={policy_loss.loss_mode}"
        )
        maspo = getattr(policy_loss, "maspo", None)
        if maspo is not None:
            for key in (
                "sigma_base",
                "alpha",
                "beta_pos",
                "beta_neg",
                "sigma_high",
                "adv_low",
                "adv_high",
                "gate",
                "mass_adaptive",
                "risk_control",
            ):
                print(f"  policy_loss.maspo.{key} = {getattr(maspo, key)}")

    if not failures and args.e2e:
        from maspo_verl.sandbox import runner

        if runner.main(["--steps", str(args.e2e_steps)]) != 0:
            failures.append("end-to-end CPU training run failed (see the log above)")

    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    print("check: " + ("FAILED" if failures else "OK"))
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m maspo_verl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="prove maspo is registered in verl and its config resolves")
    check.add_argument("--e2e", action="store_true", help="also train MASPO with verl's trainer on CPU")
    check.add_argument("--e2e-steps", type=int, default=3, help="GRPO steps of the --e2e run (default 3)")
    check.add_argument("--config-name", default="maspo", help="config in our configs folder (default: maspo)")
    check.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. actor_rollout_ref.actor.policy_loss.maspo.alpha=0.5"
    )
    commands.add_parser("config-dir", help="print the folder of our Hydra configs")
    args = parser.parse_args(argv)
    if args.command == "config-dir":
        print(config_dir())
        return 0
    return _check(args)


if __name__ == "__main__":
    raise SystemExit(main())

"""Compose and validate a verl PPO config the way `verl.trainer.main_ppo` would, without Ray or a model.

    python -m maspo_verl.experiments.dry_run --config-path=configs --config-name=maspo \
        +experiment=r1_distill_1p5b actor_rollout_ref.actor.policy_loss.loss_mode=vanilla [--n-gpus 8]

Runs, in order, what a real launch hits in its first minutes on a GPU cluster:
  1. Hydra composition (unknown or misspelled keys fail here, as in main_ppo);
  2. interpolation of every value;
  3. verl's own `validate_config` (which builds the actor config, hence `MaspoPolicyLossConfig`,
     with `omega_conf_to_dataclass`) for the run's GPU count;
  4. the rollout and algorithm dataclasses the workers build;
  5. the registries: policy-loss mode, advantage estimator, custom reward function, reward manager;
     and the verl settings that would stop a loss of ours from training (refused) or change what it computes
     (one warning line each; maspo_verl.integration.loss_guard);
  6. the batch-size and parallelism constraints verl only asserts inside its workers;
  7. what a long cluster run hits that no verl check shows (`cluster_run_findings`): TransferQueue
     storage vs. validation/training batch x n, checkpoint retention, the metrics path on several
     nodes, flash-attn, val_only without a checkpoint.
Missing local data/model paths are reported as warnings (a dry run may happen before the data exists).
The examples/run_scripts/*.sh call this module when DRY_RUN=1.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import re
import sys
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

__all__ = [
    "DryRunError",
    "DryRunReport",
    "cluster_run_findings",
    "compose_config",
    "dry_run",
    "main",
    "split_main_ppo_args",
    "worker_constraint_errors",
]

_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class DryRunError(ValueError):
    """A config that verl would reject; the message names the offending key."""


@dataclass
class DryRunReport:
    """Outcome of a successful dry run."""

    config: DictConfig
    n_gpus: int
    warnings: list[str] = field(default_factory=list)


def split_main_ppo_args(argv: list[str]) -> tuple[str | None, str | None, list[str]]:
    """Split `main_ppo`-style arguments into (config_path, config_name, Hydra overrides).

    Accepts `--config-path=X`, `--config-path X`, `-cp X` and the same for `--config-name`/`-cn`.
    """
    config_path = config_name = None
    overrides: list[str] = []
    names = {"--config-path": "path", "-cp": "path", "--config-name": "name", "-cn": "name"}
    index = 0
    while index < len(argv):
        argument = argv[index]
        flag, has_value, value = argument.partition("=")
        if flag in names:
            if not has_value:
                if index + 1 >= len(argv):
                    raise DryRunError(f"{flag} needs a value")
                index += 1
                value = argv[index]
            if names[flag] == "path":
                config_path = value
            else:
                config_name = value
        elif argument.startswith("-") and not argument.startswith("--config"):
            raise DryRunError(f"unsupported option {argument!r}: only --config-path/--config-name and overrides")
        else:
            overrides.append(argument)
        index += 1
    return config_path, config_name, overrides


def compose_config(config_path: str, config_name: str, overrides: list[str]) -> DictConfig:
    """Compose the config as `python -m verl.trainer.main_ppo --config-path --config-name overrides` does."""
    from maspo_verl.integration.hydra_config import compose

    try:
        return compose(config_name, overrides, config_path=config_path)
    except NotADirectoryError as error:
        raise DryRunError(str(error)) from error
    except Exception as error:  # Hydra's messages name the key; keep them, drop the traceback noise
        raise DryRunError(f"Hydra could not compose {config_name!r} from {config_path}: {error}") from error


def _select(config: DictConfig, key: str):
    return OmegaConf.select(config, key, throw_on_missing=False)


def worker_constraint_errors(config: DictConfig, n_gpus: int) -> list[str]:
    """Constraints verl asserts only inside its workers, minutes into a run. Each names its key."""
    actor = config.actor_rollout_ref.actor
    rollout = config.actor_rollout_ref.rollout
    errors = []

    rollout_world = (
        rollout.tensor_model_parallel_size * rollout.data_parallel_size * rollout.pipeline_model_parallel_size
    )
    if n_gpus % rollout_world:
        errors.append(
            f"actor_rollout_ref.rollout.tensor_model_parallel_size ({rollout.tensor_model_parallel_size}) x "
            f"data_parallel_size ({rollout.data_parallel_size}) x pipeline_model_parallel_size "
            f"({rollout.pipeline_model_parallel_size}) must divide the GPU count ({n_gpus})"
        )

    sequence_parallel = actor.get("ulysses_sequence_parallel_size", 1) or 1
    data_parallel = max(n_gpus // sequence_parallel, 1)
    responses_per_mini_batch = actor.ppo_mini_batch_size * rollout.n
    if responses_per_mini_batch % data_parallel:
        errors.append(
            f"actor_rollout_ref.actor.ppo_mini_batch_size ({actor.ppo_mini_batch_size}) x "
            f"actor_rollout_ref.rollout.n ({rollout.n}) = {responses_per_mini_batch} responses must be divisible "
            f"by the actor's data-parallel size ({data_parallel})"
        )
    if config.data.train_batch_size % actor.ppo_mini_batch_size:
        errors.append(
            f"data.train_batch_size ({config.data.train_batch_size}) must be a multiple of "
            f"actor_rollout_ref.actor.ppo_mini_batch_size ({actor.ppo_mini_batch_size})"
        )

    if actor.use_dynamic_bsz != rollout.log_prob_use_dynamic_bsz:
        errors.append(
            "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz must equal actor_rollout_ref.actor.use_dynamic_bsz"
        )
    if actor.use_dynamic_bsz:
        sequence_length = config.data.max_prompt_length + config.data.max_response_length
        for key in (
            "actor_rollout_ref.actor.ppo_max_token_len_per_gpu",
            "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu",
        ):
            budget = _select(config, key)
            if budget is None or budget * sequence_parallel < sequence_length:
                errors.append(
                    f"{key} ({budget}) x ulysses_sequence_parallel_size ({sequence_parallel}) must hold one "
                    f"full sequence: data.max_prompt_length + data.max_response_length = {sequence_length}"
                )
    elif actor.ppo_micro_batch_size_per_gpu is None:
        errors.append("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu must be set when use_dynamic_bsz=false")
    elif (responses_per_mini_batch // data_parallel) % actor.ppo_micro_batch_size_per_gpu:
        # verl's engine asserts this in prepare_micro_batches, at the first actor update
        errors.append(
            f"each rank's share of a mini-batch ({responses_per_mini_batch // data_parallel} responses = "
            f"ppo_mini_batch_size x rollout.n / data-parallel size) must split into whole micro-batches of "
            f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu ({actor.ppo_micro_batch_size_per_gpu})"
        )
    return errors


def _parquet_rows(files) -> int | None:
    """Total rows of local parquet files (from their footers), or None when one cannot be read."""
    import pyarrow.parquet as pq

    total = 0
    for path in [files] if isinstance(files, str) else list(files or []):
        try:
            total += pq.ParquetFile(os.path.expanduser(path)).metadata.num_rows
        except Exception:  # missing or remote file: the size is unknown here
            return None
    return total


def cluster_run_findings(config: DictConfig) -> tuple[list[str], list[str]]:
    """(errors, warnings) about what a long cluster run hits and verl's config checks do not show.

    - TransferQueue: verl's V1 trainer (trainer.use_v1) puts one validation batch x val n samples
      (trainer/ppo/v1/trainer_base.py, _validate) or one training batch x n into a SimpleStorage of
      transfer_queue.backend.SimpleStorage.total_storage_size samples; more fails mid-run;
    - checkpoints: with trainer.max_actor_ckpt_to_keep unset verl keeps every checkpoint;
    - metrics: verl's file logger runs in the TaskRunner actor, which takes its environment from
      Ray, not from the launching shell: on several nodes VERL_FILE_LOGGER_PATH must be in
      ray_kwargs.ray_init.runtime_env.env_vars (the run scripts put it there);
    - flash-attn: verl's default attention (workers/config/model.py) is flash_attention_2;
    - val_only with resume_mode=disable evaluates the base model, not a checkpoint.
    """
    errors: list[str] = []
    warnings: list[str] = []
    trainer = config.trainer
    rollout = config.actor_rollout_ref.rollout
    if _select(config, "trainer.use_v1") in (True, None):
        storage = _select(config, "transfer_queue.backend.SimpleStorage.total_storage_size")
        val_n = rollout.val_kwargs.n
        val_batch = _select(config, "data.val_batch_size")
        if val_batch is None:
            val_batch = _parquet_rows(_select(config, "data.val_files"))
            source = "the whole validation set (data.val_batch_size unset)"
        else:
            source = "data.val_batch_size"
        if storage is not None and val_batch is not None and val_batch * val_n > storage:
            errors.append(
                f"{source} ({val_batch}) x actor_rollout_ref.rollout.val_kwargs.n ({val_n}) = {val_batch * val_n} "
                f"validation samples exceed transfer_queue.backend.SimpleStorage.total_storage_size ({storage}): "
                "lower data.val_batch_size or raise the storage size"
            )
        elif storage is not None and val_batch is None:
            warnings.append(
                "data.val_batch_size is unset and the validation files are not readable here: verl sends the whole "
                f"validation set x val n ({val_n}) at once into a TransferQueue of {storage} samples"
            )
        train_samples = config.data.train_batch_size * rollout.n
        if storage is not None and train_samples > storage:
            errors.append(
                f"data.train_batch_size ({config.data.train_batch_size}) x actor_rollout_ref.rollout.n ({rollout.n}) = "
                f"{train_samples} exceed transfer_queue.backend.SimpleStorage.total_storage_size ({storage})"
            )
    if (trainer.get("save_freq") or 0) > 0 and _select(config, "trainer.max_actor_ckpt_to_keep") is None:
        warnings.append(
            "trainer.max_actor_ckpt_to_keep is unset: verl keeps every checkpoint (a 14B actor with optimizer "
            "state is ~177 GB each)"
        )
    loggers = trainer.get("logger") or []
    loggers = [loggers] if isinstance(loggers, str) else list(loggers)
    runtime_vars = _select(config, "ray_kwargs.ray_init.runtime_env.env_vars") or {}
    if "file" in loggers and trainer.nnodes > 1 and "VERL_FILE_LOGGER_PATH" not in runtime_vars:
        warnings.append(
            "trainer.logger has 'file' on several nodes but ray_kwargs.ray_init.runtime_env.env_vars has no "
            "VERL_FILE_LOGGER_PATH: the TaskRunner actor writes metrics wherever its node's environment says"
        )
    attention = _select(config, "actor_rollout_ref.model.override_config.attn_implementation") or "flash_attention_2"
    if attention == "flash_attention_2" and trainer.get("device", "cuda") == "cuda":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is None:
            warnings.append(
                "verl loads the model with attn_implementation=flash_attention_2 (its default) and flash_attn is "
                "not importable here: install it on the training nodes (docs/experiments.md, section "
                '"Installing on a GPU cluster") or set '
                "++actor_rollout_ref.model.override_config.attn_implementation=sdpa"
            )
    if trainer.get("val_only") and trainer.get("resume_mode") == "disable":
        warnings.append(
            "trainer.val_only=true with trainer.resume_mode=disable evaluates actor_rollout_ref.model.path, "
            "not a checkpoint"
        )
    return errors, warnings


def _path_warnings(config: DictConfig) -> list[str]:
    warnings = []
    for key in ("data.train_files", "data.val_files"):
        value = _select(config, key)
        files = [value] if isinstance(value, str) else list(value or [])
        missing = [path for path in files if "://" not in path and not os.path.exists(os.path.expanduser(path))]
        if missing:
            warnings.append(f"{key}: not found yet (see `python -m maspo_verl.experiments.data`): {', '.join(missing)}")
    model_path = _select(config, "actor_rollout_ref.model.path")
    if model_path and not os.path.exists(os.path.expanduser(model_path)) and not _HUB_NAME.match(model_path):
        warnings.append(f"actor_rollout_ref.model.path: {model_path} is neither a local directory nor a hub name")
    return warnings


def _quietly(function, *args, **kwargs):
    """Run one of verl's checks without its progress prints (the dry run prints its own summary)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return function(*args, **kwargs)


def dry_run(config: DictConfig, n_gpus: int | None = None) -> DryRunReport:
    """Validate a composed config as verl's driver and workers would; raise DryRunError on the first failure.

    `n_gpus` replaces trainer.nnodes x trainer.n_gpus_per_node (validating as one node of n_gpus).
    """
    import warnings as python_warnings

    config = copy.deepcopy(config)  # the caller's config keeps its GPU count
    if n_gpus is not None:
        if n_gpus < 1:
            raise DryRunError(f"--n-gpus must be >= 1, got {n_gpus}")
        config.trainer.nnodes = 1
        config.trainer.n_gpus_per_node = n_gpus
    total_gpus = config.trainer.nnodes * config.trainer.n_gpus_per_node

    try:
        OmegaConf.to_container(config, resolve=True)
    except Exception as error:
        raise DryRunError(f"a config value does not resolve: {error}") from error

    from verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn
    from verl.trainer.ppo.reward import get_custom_reward_fn, resolve_reward_manager_cls
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    from maspo_verl.integration.loss_guard import MissingVerlKeyError, loss_replacing_settings

    try:
        loss_refusals, loss_notes = loss_replacing_settings(config)
    except MissingVerlKeyError as error:
        raise DryRunError(str(error)) from error
    if loss_refusals:
        raise DryRunError("; ".join(loss_refusals))

    with python_warnings.catch_warnings():
        python_warnings.simplefilter("ignore", UserWarning)  # "Disabled critic ..." for GRPO is expected
        try:
            _quietly(
                validate_config,
                config=config,
                use_reference_policy=need_reference_policy(config),
                use_critic=need_critic(config),
            )
        except Exception as error:
            raise DryRunError(f"verl's validate_config rejected the config for {total_gpus} GPU(s): {error}") from error

    for key in ("actor_rollout_ref.rollout", "algorithm"):
        try:
            omega_conf_to_dataclass(_select(config, key))
        except Exception as error:
            raise DryRunError(f"{key} does not build its verl dataclass: {error}") from error

    loss_mode = config.actor_rollout_ref.actor.policy_loss.loss_mode
    try:
        get_policy_loss_fn(loss_mode)
    except Exception as error:
        raise DryRunError(f"actor_rollout_ref.actor.policy_loss.loss_mode={loss_mode!r}: {error}") from error
    try:
        get_adv_estimator_fn(config.algorithm.adv_estimator)
    except Exception as error:
        raise DryRunError(f"algorithm.adv_estimator={config.algorithm.adv_estimator!r}: {error}") from error
    try:
        get_custom_reward_fn(config)
    except Exception as error:
        raise DryRunError(f"reward.custom_reward_function does not load: {error}") from error
    try:
        resolve_reward_manager_cls(config)
    except Exception as error:
        raise DryRunError(f"reward.reward_manager does not resolve: {error}") from error

    errors = worker_constraint_errors(config, total_gpus)
    cluster_errors, cluster_warnings = cluster_run_findings(config)
    errors += cluster_errors
    if errors:
        raise DryRunError("; ".join(errors))
    return DryRunReport(
        config=config, n_gpus=total_gpus, warnings=loss_notes + _path_warnings(config) + cluster_warnings
    )


def _summary(report: DryRunReport) -> str:
    config = report.config
    actor = config.actor_rollout_ref.actor
    loss = actor.policy_loss
    lines = [
        f"  loss_mode            {loss.loss_mode}",
        f"  model                {config.actor_rollout_ref.model.path}",
        f"  GPUs                 {config.trainer.nnodes} node(s) x {config.trainer.n_gpus_per_node} = {report.n_gpus}",
        f"  batch                {config.data.train_batch_size} prompts x n={config.actor_rollout_ref.rollout.n}, "
        f"mini-batch {actor.ppo_mini_batch_size}, lr {actor.optim.lr}",
        f"  lengths              prompt {config.data.max_prompt_length}, response {config.data.max_response_length}",
        f"  clip ratio           low {actor.clip_ratio_low}, high {actor.clip_ratio_high}",
        f"  validation           n={config.actor_rollout_ref.rollout.val_kwargs.n}, "
        f"every {config.trainer.test_freq} steps -> {config.trainer.validation_data_dir}",
        f"  train files          {config.data.train_files}",
        f"  val files            {OmegaConf.to_container(config.data, resolve=True)['val_files']}",
    ]
    if loss.loss_mode == "maspo" and "maspo" in loss:
        lines.insert(1, f"  maspo                {OmegaConf.to_container(loss.maspo, resolve=True)}")
    if loss.loss_mode == "sapo":
        lines.insert(1, f"  sapo                 tau_pos {actor.tau_pos}, tau_neg {actor.tau_neg}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m maspo_verl.experiments.dry_run",
        description="Compose and validate a verl PPO config (as main_ppo would) without starting Ray or a model.",
    )
    parser.add_argument(
        "--n-gpus",
        type=int,
        default=None,
        help="validate for N GPUs on one node instead of trainer.nnodes x trainer.n_gpus_per_node",
    )
    parser.add_argument("--quiet", action="store_true", help="print only the verdict")
    args, rest = parser.parse_known_args(argv)
    try:
        config_path, config_name, overrides = split_main_ppo_args(rest)
        if not config_path or not config_name:
            raise DryRunError("--config-path and --config-name are required")
        report = dry_run(compose_config(config_path, config_name, overrides), n_gpus=args.n_gpus)
    except DryRunError as error:
        print(f"DRY RUN FAILED: {error}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(_summary(report))
        for warning in report.warnings:
            print(f"  warning: {warning}")
    print(
        f"DRY RUN OK: {config_name} composes and passes verl's validation for {report.n_gpus} GPU(s); "
        "nothing was started."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

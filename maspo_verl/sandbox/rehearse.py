"""Rehearse a GPU experiment script on CPU: the script's own config, a small explicit substitution.

    REHEARSE=cpu bash examples/run_scripts/1.5b/maspo.sh      # calls `preflight`, then main_ppo, then `report`
    python -m maspo_verl.sandbox.rehearse all [--output-dir DIR]      # every experiment script: PASS/FAIL lines
    python -m maspo_verl.sandbox.rehearse report --run-dir D --metrics M --label L   # Pass@k table + plot of a run

`REHEARSE=cpu` (examples/run_scripts/common.sh) builds the script's real main_ppo command, then the
same command with the substitution layer (maspo_verl/sandbox/tiny/cpu_backend.sh plus the rehearsal sizes
in common.sh) inserted before the user's overrides. `preflight` then

  1. writes the rehearsal inputs once: the tiny Qwen2 (maspo_verl.sandbox.tiny, longer position table) and
     the experiment's data, made by `python -m maspo_verl.experiments.data` from the fixture files in
     tests/fixtures/datasets/ (laid out like DAPO-Math-17k and the six evaluation sets);
  2. composes both commands with Hydra, prints every key whose value differs, and fails if one is
     not on `ALLOWED_SUBSTITUTIONS` (the model, the rollout backend, devices, sizes and token
     budgets, lengths, steps, validation n and frequency, CUDA/flash-attn-only options).
Everything else (loss mode and its block, advantage estimator, reward function, data keys,
validation protocol, logger, checkpointing, resume mode) reaches verl's trainer as the script set it.
REHEARSE=gpu (scripts/gpu_smoke.sh) is the same on GPUS_PER_NODE [1] CUDA GPUs on the production path: verl's
vLLM rollout as the script sets it, flash-attn with remove-padding; only the model, sizes and process counts change.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "ALLOWED_SUBSTITUTIONS",
    "experiment_scripts",
    "rehearse_all",
    "FIXTURES_DIR",
    "disallowed_keys",
    "flat_config",
    "main",
    "prepare_inputs",
    "substitution_diff",
    "substitution_kind",
]

# (kind, key patterns). A rehearsal may change only keys matching one of these (fnmatch on the
# dotted key of the composed config).
ALLOWED_SUBSTITUTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("model path", ("actor_rollout_ref.model.path",)),
    (
        "rollout backend",
        (
            "actor_rollout_ref.rollout.name",
            "actor_rollout_ref.rollout.agent.num_workers",
            # the hf_cpu backend's agent loop (sends verl's session id as the sample index)
            "actor_rollout_ref.rollout.agent.default_agent_loop",
            # the hf_cpu backend's agent-loop manager (a batch's rollouts in one server call and one put)
            "actor_rollout_ref.rollout.agent.agent_loop_manager_class",
        ),
    ),
    (
        "devices and GPU counts",
        (
            "trainer.device",
            "trainer.nnodes",
            "trainer.n_gpus_per_node",
            "actor_rollout_ref.rollout.tensor_model_parallel_size",
            "actor_rollout_ref.rollout.data_parallel_size",
            "actor_rollout_ref.rollout.pipeline_model_parallel_size",
            "actor_rollout_ref.rollout.gpu_memory_utilization",
            "ray_kwargs.ray_init.*",
            "transfer_queue.backend.SimpleStorage.num_data_storage_units",
            "data.dataloader_num_workers",
            "reward.num_workers",
        ),
    ),
    (
        "batch sizes and token budgets",
        (
            "data.train_batch_size",
            "data.val_batch_size",
            "actor_rollout_ref.actor.ppo_mini_batch_size",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu",
            "actor_rollout_ref.actor.ppo_max_token_len_per_gpu",
            "actor_rollout_ref.rollout.n",
            "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu",
            "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu",
            "actor_rollout_ref.rollout.max_num_batched_tokens",
            "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu",
            "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu",
        ),
    ),
    (
        "prompt and response lengths",
        ("data.max_prompt_length", "data.max_response_length", "actor_rollout_ref.rollout.max_model_len"),
    ),
    ("number of steps", ("trainer.total_training_steps",)),
    ("validation samples and frequency", ("actor_rollout_ref.rollout.val_kwargs.n", "trainer.test_freq")),
    (
        "CUDA / flash-attn only options",
        (
            "actor_rollout_ref.actor.strategy",
            "actor_rollout_ref.ref.strategy",
            "actor_rollout_ref.actor.fsdp_config.mixed_precision.*",
            "actor_rollout_ref.ref.fsdp_config.mixed_precision.*",
            "actor_rollout_ref.actor.fsdp_config.param_offload",
            "actor_rollout_ref.actor.fsdp_config.optimizer_offload",
            "actor_rollout_ref.model.use_remove_padding",
            "actor_rollout_ref.model.override_config.attn_implementation",
            "actor_rollout_ref.model.enable_gradient_checkpointing",
            "actor_rollout_ref.actor.use_torch_compile",
            "actor_rollout_ref.actor.fsdp_config.use_torch_compile",
            # verl's V1 trainer waits 2 s per poll of its replay buffer; the CPU backend's polls
            # every 10 ms (patches/fast_replay_buffer.py): a speed-only replacement.
            "trainer.v1.sampler.custom_sampler.path",
            "trainer.v1.sampler.custom_sampler.name",
        ),
    ),
)

REPO_DIR = Path(__file__).resolve().parents[2]
FIXTURES_DIR = REPO_DIR / "tests" / "fixtures" / "datasets"
# The fixture file each dataset is prepared from (maspo_verl.experiments.data --input).
FIXTURE_FILES = {
    "dapo_math": "dapo_math/dapo-math-17k.parquet",
    "aime24": "aime24/train.parquet",
    "aime25": "aime25/test.jsonl",
    "amc23": "amc23/test.jsonl",
    "math500": "math500/test.jsonl",
    "minerva": "minerva/test.jsonl",
    "olympiadbench": "olympiadbench/test.jsonl",
}
# Prompt (<= 256 tokens of the tiny tokenizer) + response must fit the tiny model's position table.
TINY_MAX_POSITIONS = 512
# REHEARSE=gpu: vLLM's attention kernels need a head size of 32 or more (the CPU model's is 16).
GPU_TINY_SIZE = {"hidden_size": 128, "intermediate_size": 384, "num_attention_heads": 2, "num_key_value_heads": 1}


def substitution_kind(key: str) -> str | None:
    """The allow-listed kind a dotted config key belongs to, or None."""
    for kind, patterns in ALLOWED_SUBSTITUTIONS:
        if any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns):
            return kind
    return None


def flat_config(config, resolve: bool = True) -> dict[str, Any]:
    """{dotted key: leaf value} of a composed config (empty mappings are not leaves)."""
    from omegaconf import OmegaConf

    flat: dict[str, Any] = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            flat[prefix] = node

    walk(OmegaConf.to_container(config, resolve=resolve), "")
    return flat


_MISSING = "<absent>"


def _is_interpolation(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("${") and value.endswith("}")


def substitution_diff(real_config, rehearsal_config) -> list[tuple[str, Any, Any]]:
    """(key, real value, rehearsal value) for every leaf set to another value, sorted by key.

    A leaf that is the same interpolation in both configs (e.g. rollout.prompt_length:
    ${data.max_prompt_length}) only follows the key it names, which is itself in the diff: left out.
    """
    real, rehearsal = flat_config(real_config), flat_config(rehearsal_config)
    real_raw, rehearsal_raw = flat_config(real_config, resolve=False), flat_config(rehearsal_config, resolve=False)
    diff = []
    for key in sorted(set(real) | set(rehearsal)):
        before, after = real.get(key, _MISSING), rehearsal.get(key, _MISSING)
        if before == after:
            continue
        raw = real_raw.get(key)
        if _is_interpolation(raw) and raw == rehearsal_raw.get(key):
            continue
        diff.append((key, before, after))
    return diff


def disallowed_keys(diff: list[tuple[str, Any, Any]]) -> list[str]:
    return [key for key, _, _ in diff if substitution_kind(key) is None]


def prepare_inputs(
    directory: str | Path, fixtures_dir: str | Path = FIXTURES_DIR, backend: str = "cpu"
) -> dict[str, Path]:
    """Write `<directory>/model` (tiny Qwen2) and `<directory>/data/<dataset>.parquet` once; return their paths.

    The data go through the real pipeline, `maspo_verl.experiments.data.prepare`, on the fixture files.
    `backend="gpu"` writes a tiny model vLLM can serve (head size 64).
    """
    from maspo_verl.experiments.data import prepare
    from maspo_verl.sandbox.tiny import TinyModelSize, write_tiny_model

    directory, fixtures_dir = Path(directory), Path(fixtures_dir)
    missing = [name for name, relative in FIXTURE_FILES.items() if not (fixtures_dir / relative).is_file()]
    if missing:
        raise FileNotFoundError(
            f"rehearsal fixtures missing in {fixtures_dir} for {missing} (a checkout's tests/fixtures/datasets)"
        )
    data_dir = directory / "data"
    paths = {"model": directory / "model", "data": data_dir}
    for name, relative in FIXTURE_FILES.items():
        if not (data_dir / f"{name}.parquet").is_file():
            prepare(name, str(fixtures_dir / relative), str(data_dir))
    if not (paths["model"] / "config.json").is_file():
        size = TinyModelSize(max_position_embeddings=TINY_MAX_POSITIONS, **(GPU_TINY_SIZE if backend == "gpu" else {}))
        write_tiny_model(paths["model"], size, seed=0)
    return paths


def _compose(arguments: list[str]):
    from maspo_verl.experiments.dry_run import compose_config, split_main_ppo_args

    config_path, config_name, overrides = split_main_ppo_args(arguments)
    if not config_path or not config_name:
        raise ValueError("--config-path and --config-name are required in each command")
    return compose_config(config_path, config_name, overrides)


def _format(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def format_diff(diff: list[tuple[str, Any, Any]]) -> str:
    lines = []
    for key, real, rehearsal in diff:
        kind = substitution_kind(key) or "NOT ALLOWED"
        lines.append(f"  {key}: {_format(real)} -> {_format(rehearsal)}   [{kind}]")
    return "\n".join(lines)


def _split_commands(words: list[str]) -> tuple[list[str], list[str]]:
    """`--real A... --rehearsal B...` -> (A, B): the main_ppo arguments of both commands."""
    if not words or words[0] != "--real" or "--rehearsal" not in words:
        raise ValueError("expected: --real <main_ppo args...> --rehearsal <main_ppo args...>")
    split = words.index("--rehearsal")
    return words[1:split], words[split + 1 :]


def experiment_scripts(run_scripts_dir: Path = REPO_DIR / "examples" / "run_scripts") -> list[Path]:
    """Every single-node experiment script: 1.5b/, 7b/, 14b/, ablations/."""
    return sorted(p for folder in ("1.5b", "7b", "14b", "ablations") for p in (run_scripts_dir / folder).glob("*.sh"))


def rehearse_all(output_dir: str | Path, scripts: list[Path], python: str = sys.executable) -> int:
    """`REHEARSE=cpu bash <script>` for each script, one after the other; one PASS/FAIL line each.

    The tiny model and data are written once, to <output_dir>/rehearsal_inputs; each script's log is
    <output_dir>/logs/<scale>_<method>.log. Returns the number of failures.
    """
    import subprocess
    import time

    output_dir = Path(output_dir).resolve()
    (output_dir / "logs").mkdir(parents=True, exist_ok=True)
    environment = {
        **os.environ,
        "REHEARSE": "cpu",
        "PYTHON": python,
        "OUTPUT_DIR": str(output_dir / "runs"),
        "REHEARSAL_DIR": str(output_dir / "rehearsal_inputs"),
    }
    failures, started_all = 0, time.monotonic()
    for script in scripts:
        name = f"{script.parent.name}_{script.stem}"
        log = output_dir / "logs" / f"{name}.log"
        started = time.monotonic()
        with open(log, "w") as handle:
            status = subprocess.run(
                ["bash", str(script)], env=environment, stdout=handle, stderr=subprocess.STDOUT, check=False
            ).returncode
        failures += status != 0
        print(
            f"{'PASS' if status == 0 else 'FAIL'} {script.parent.name}/{script.name} "
            f"{time.monotonic() - started:.0f}s (log: {log})",
            flush=True,
        )
    print(
        f"{len(scripts) - failures}/{len(scripts)} scripts rehearsed in {(time.monotonic() - started_all) / 60:.1f} min"
    )
    return failures


def report(run_dir: str, metrics: str, label: str, k: str) -> int:
    """`python -m maspo_verl.experiments.evaluation.pass_at_k` (into <run_dir>/pass_at_k.md) and `... .plot`
    (into <run_dir>/training_dynamics.png) on a run's outputs, as a user would run them."""
    import contextlib
    import io

    from maspo_verl.experiments.evaluation import pass_at_k, plot

    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        status = pass_at_k.main([os.path.join(run_dir, "val_generations"), "--k", k, "--label", label])
    print(table.getvalue(), end="")
    if status:
        return status
    Path(run_dir, "pass_at_k.md").write_text(table.getvalue())
    return plot.main([metrics, "--label", label, "-o", os.path.join(run_dir, "training_dynamics.png")])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["report"]:
        parser = argparse.ArgumentParser(
            prog="python -m maspo_verl.sandbox.rehearse report",
            description="the Pass@k table and the plot of one run (one interpreter for both)",
        )
        parser.add_argument("--run-dir", required=True)
        parser.add_argument("--metrics", required=True, help="the run's VERL_FILE_LOGGER_PATH")
        parser.add_argument("--label", required=True)
        parser.add_argument("--k", default="2")
        args = parser.parse_args(argv[1:])
        return report(args.run_dir, args.metrics, args.label, args.k)
    if argv[:1] == ["all"]:
        parser = argparse.ArgumentParser(
            prog="python -m maspo_verl.sandbox.rehearse all",
            description="REHEARSE=cpu every experiment script (slow: minutes per script)",
        )
        parser.add_argument("--output-dir", default="rehearsal_all", help="runs/, logs/ and rehearsal_inputs/ go here")
        parser.add_argument(
            "--only", action="append", default=[], help="a script as <folder>/<name>.sh (repeatable; default: all)"
        )
        args = parser.parse_args(argv[1:])
        scripts = experiment_scripts()
        if args.only:
            scripts = [p for p in scripts if f"{p.parent.name}/{p.name}" in args.only]
            if len(scripts) != len(args.only):
                parser.error(f"unknown script in --only {args.only}")
        return 1 if rehearse_all(args.output_dir, scripts) else 0
    # The two commands come last and are not parsed by argparse (they hold --config-path etc.).
    commands = argv[argv.index("--real") :] if "--real" in argv else []
    argv = argv[: len(argv) - len(commands)]
    parser = argparse.ArgumentParser(prog="python -m maspo_verl.sandbox.rehearse", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "command",
        choices=["prepare", "preflight"],
        help="prepare: write the inputs; preflight: prepare, then check the substitution",
    )
    parser.add_argument("--inputs", required=True, help="folder for the tiny model and the prepared data")
    parser.add_argument(
        "--fixtures",
        default=str(FIXTURES_DIR),
        help="fixture datasets (default: the checkout's tests/fixtures/datasets)",
    )
    parser.add_argument("--no-prepare", action="store_true", help="preflight only checks the substitution (DRY_RUN)")
    parser.add_argument(
        "--backend",
        choices=["cpu", "gpu"],
        default="cpu",
        help="REHEARSE=cpu (hf_cpu) or gpu (vLLM: a tiny model with head size 64)",
    )
    parser.epilog = "preflight takes: --real <main_ppo args...> --rehearsal <main_ppo args...>"
    args = parser.parse_args(argv)
    try:
        if args.command == "preflight":
            real_args, rehearsal_args = _split_commands(commands)
        elif commands:
            parser.error("prepare takes no commands")
        if not args.no_prepare:
            paths = prepare_inputs(args.inputs, args.fixtures, args.backend)
            print(f"[rehearse] inputs: model {paths['model']}, data {paths['data']} (from {args.fixtures})")
        if args.command == "preflight":
            diff = substitution_diff(_compose(real_args), _compose(rehearsal_args))
            print(f"[rehearse] substitution ({len(diff)} keys differ from the script's own config):")
            print(format_diff(diff))
            outside = disallowed_keys(diff)
            if outside:
                print(
                    f"[rehearse] refused: keys outside the allow-list would change: {', '.join(outside)}",
                    file=sys.stderr,
                )
                return 1
    except (ValueError, FileNotFoundError) as error:
        print(f"[rehearse] error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())

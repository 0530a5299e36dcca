"""MASPO loss forward+backward against verl's `vanilla` and `sapo` losses on identical tensors, and the
cost of `vanilla_with_ratio_stats` (verl's vanilla plus the ratio statistics) over verl's vanilla.

    python benchmarks/bench_loss.py                      # 0.25M, 1M, 4M tokens; float32, bf16; CPU (+CUDA)
    python benchmarks/bench_loss.py --sizes 0.01M --repeats 3

Repeats are interleaved (maspo, vanilla, sapo, ..., maspo, ...) so drift on a shared machine hits all
losses alike; medians are printed with the ratio to vanilla, and the bytes autograd saves for
backward per token, counted with torch.autograd.graph.saved_tensors_hooks. Every loss returns its
metrics (MASPO: every key of METRIC_KEYS). Before the last line a check on the same tensors: MASPO with
gate=hard and the limiter and risk controller off must equal verl's vanilla, in value and gradient. The
last line, for 1M tokens float32 on CPU (or the largest size measured when 1M is not among --sizes), reads:
    bench: maspo/vanilla time <ratio>x, saved bytes/token maspo <a> vanilla <b>
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.workers.config import ActorConfig

import maspo_verl  # noqa: F401  (registers loss_mode="maspo")
from maspo_verl import MaspoConfig, MaspoPolicyLossConfig
from maspo_verl.baselines import register_baselines
from maspo_verl.loss import METRIC_KEYS

LOSSES = ("maspo", "vanilla", "sapo", "vanilla_with_ratio_stats")
RESPONSE_LENGTH = 1024


def parse_size(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 1_000, "M": 1_000_000}.get(text[-1], 1)
    number = float(text[:-1]) if text[-1] in "KM" else float(text)
    tokens = int(number * scale)
    if tokens < RESPONSE_LENGTH:
        raise argparse.ArgumentTypeError(f"size {text!r} is below one response of {RESPONSE_LENGTH} tokens")
    return tokens


def make_inputs(tokens: int, dtype: torch.dtype, device: str, seed: int = 0):
    batch_size = tokens // RESPONSE_LENGTH
    generator = torch.Generator().manual_seed(seed)
    old_log_prob = -torch.rand(batch_size, RESPONSE_LENGTH, generator=generator) * 5
    log_prob = old_log_prob + 0.3 * torch.randn(batch_size, RESPONSE_LENGTH, generator=generator)
    advantages = torch.randn(batch_size, 1, generator=generator).expand(batch_size, RESPONSE_LENGTH).contiguous()
    lengths = torch.randint(RESPONSE_LENGTH // 4, RESPONSE_LENGTH + 1, (batch_size,), generator=generator)
    response_mask = torch.arange(RESPONSE_LENGTH)[None, :] < lengths[:, None]
    return {
        "old_log_prob": old_log_prob.to(device, dtype),
        "log_prob": log_prob.to(device, dtype),
        "advantages": advantages.to(device, dtype),
        "response_mask": response_mask.to(device),
    }


def run_once(loss_mode: str, inputs: dict, config: ActorConfig, with_loss: bool = False):
    log_prob = inputs["log_prob"].detach().requires_grad_(True)
    loss, metrics = get_policy_loss_fn(loss_mode)(
        old_log_prob=inputs["old_log_prob"],
        log_prob=log_prob,
        advantages=inputs["advantages"],
        response_mask=inputs["response_mask"],
        loss_agg_mode="token-mean",
        config=config,
        rollout_is_weights=None,
    )
    loss.backward()
    if loss_mode == "maspo" and tuple(metrics) != METRIC_KEYS:
        raise AssertionError(f"maspo returned the metric keys {tuple(metrics)}, not METRIC_KEYS")
    return (loss.detach(), log_prob.grad) if with_loss else log_prob.grad


def actor_config(**maspo_keys) -> ActorConfig:
    return ActorConfig(
        strategy="fsdp",
        ppo_mini_batch_size=1,
        ppo_micro_batch_size_per_gpu=1,
        rollout_n=1,
        policy_loss=MaspoPolicyLossConfig(maspo=MaspoConfig(**maspo_keys)),
    )


def vanilla_identity(inputs: dict) -> tuple[float, float]:
    """(relative loss difference, largest gradient difference) between MASPO with gate=hard, the limiter and
    the risk controller off and verl's vanilla on `inputs`: both 0 up to float rounding."""
    ablation = actor_config(gate="hard", mass_adaptive=False, risk_control=False)
    maspo_loss, maspo_grad = run_once("maspo", inputs, ablation, with_loss=True)
    vanilla_loss, vanilla_grad = run_once("vanilla", inputs, ablation, with_loss=True)
    relative = abs(maspo_loss.double().item() - vanilla_loss.double().item()) / abs(vanilla_loss.double().item())
    return relative, (maspo_grad.double() - vanilla_grad.double()).abs().max().item()


def saved_bytes_per_token(loss_mode: str, inputs: dict, config: ActorConfig) -> float:
    saved = 0

    def pack(tensor):
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run_once(loss_mode, inputs, config)
    return saved / inputs["log_prob"].numel()


def synchronize(device: str):
    if device == "cuda":
        torch.cuda.synchronize()


def bench(tokens: int, dtype: torch.dtype, device: str, repeats: int, config: ActorConfig) -> dict:
    inputs = make_inputs(tokens, dtype, device)
    for loss_mode in LOSSES:  # warm-up (allocator, first-call overheads)
        run_once(loss_mode, inputs, config)
    times = {loss_mode: [] for loss_mode in LOSSES}
    for _ in range(repeats):
        for loss_mode in LOSSES:
            synchronize(device)
            start = time.perf_counter()
            run_once(loss_mode, inputs, config)
            synchronize(device)
            times[loss_mode].append(time.perf_counter() - start)
    return {
        loss_mode: {
            "median_s": statistics.median(times[loss_mode]),
            "saved_bytes_per_token": saved_bytes_per_token(loss_mode, inputs, config),
        }
        for loss_mode in LOSSES
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="0.25M,1M,4M", help="comma-separated token counts (K/M suffixes)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    sizes = [parse_size(size) for size in args.sizes.split(",")]
    dtypes = [getattr(torch, name.strip()) for name in args.dtypes.split(",")]
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    register_baselines()  # vanilla_with_ratio_stats
    config = actor_config()

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, devices {devices}, "
        f"{args.repeats} interleaved repeats, response length {RESPONSE_LENGTH}"
    )
    names = {"vanilla_with_ratio_stats": "stats"}  # column label of vanilla_with_ratio_stats
    header = f"{'device':6} {'dtype':9} {'tokens':>9} " + " ".join(f"{names.get(m, m) + ' ms':>11}" for m in LOSSES)
    header += f" {'maspo/vanilla':>13} {'maspo/sapo':>10} {'stats/vanilla':>13} "
    header += " ".join(f"{names.get(m, m) + ' B/tok':>13}" for m in LOSSES)
    print(header)
    results = {}
    for device in devices:
        for dtype in dtypes:
            for tokens in sizes:
                row = bench(tokens, dtype, device, args.repeats, config)
                results[(device, dtype, tokens)] = row
                times = " ".join(f"{row[m]['median_s'] * 1e3:11.2f}" for m in LOSSES)
                saved = " ".join(f"{row[m]['saved_bytes_per_token']:13.1f}" for m in LOSSES)
                print(
                    f"{device:6} {str(dtype).replace('torch.', ''):9} {tokens:9d} {times} "
                    f"{row['maspo']['median_s'] / row['vanilla']['median_s']:12.3f}x "
                    f"{row['maspo']['median_s'] / row['sapo']['median_s']:9.3f}x "
                    f"{row['vanilla_with_ratio_stats']['median_s'] / row['vanilla']['median_s']:12.3f}x {saved}"
                )

    reference_tokens = 1_000_000 if 1_000_000 in sizes else max(sizes)
    reference_dtype = torch.float32 if torch.float32 in dtypes else dtypes[0]
    row = results[("cpu", reference_dtype, reference_tokens)]
    relative, gradient = vanilla_identity(make_inputs(reference_tokens, reference_dtype, "cpu"))
    print(
        f"bench: gate=hard without limiter and risk control vs vanilla: loss relative difference {relative:.2e}, "
        f"largest gradient difference {gradient:.2e}"
    )
    print(
        f"bench: maspo/vanilla time {row['maspo']['median_s'] / row['vanilla']['median_s']:.3f}x, "
        f"saved bytes/token maspo {row['maspo']['saved_bytes_per_token']:.1f} "
        f"vanilla {row['vanilla']['saved_bytes_per_token']:.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

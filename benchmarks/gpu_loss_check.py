"""MASPO's gate math and custom autograd on one device against an independent torch reference, and its speed.

    python benchmarks/gpu_loss_check.py                      # CUDA when torch sees it, else CPU
    python benchmarks/gpu_loss_check.py --device cpu --tokens 65536 --repeats 2 --output check.json

Needs torch only. maspo_verl/gate.py (the widths, the outward regions, the Gaussian gate weight) is
loaded from its file, without importing the maspo_verl package (whose __init__ imports verl). The
custom autograd of the soft-gate loss, `maspo_verl.loss.soft_gate_token_losses`, lives in a module that
registers the loss in verl: it is checked when verl imports (no Ray, vLLM or GPU runtime is started),
and reported as not checked otherwise.

The reference below restates the paper's formulas (arXiv 2602.17550, with the authors' clamps) from
scratch, in float64, without in-place operations:

    m       = clamp(sigma_base * p_old^-alpha, sigma_base, sigma_high)           (mass-adaptive limiter)
    k_pos   = clamp(1 + beta_pos A, adv_low, adv_high)                           (risk controller, A > 0 side)
    k_neg   = clamp(1 / (1 - beta_neg A), adv_low, adv_high)                     (A < 0 side)
    w       = exp(-(r - 1)^2 / (2 sigma^2)), sigma = m k_pos on (A > 0, r > 1), m k_neg on (A < 0, r < 1),
              w = 1 elsewhere                                                     (soft Gaussian gate)
    loss    = -A * w * r with w constant, r = exp(clamp(log_prob - old_log_prob, -20, 20))
    d loss / d log_prob = -A * w * r where |log r| <= 20, else 0

Each check compares on a draw of 'tokens' values (log-probabilities of a 152k-entry vocabulary,
log-ratios of a few off-policy updates, GRPO-scale advantages, 10% padding) and reports the largest
error; timings are the median of 'repeats' runs, per million tokens, with the inputs in bf16 and in
fp32 (the loss computes in fp32 either way, as maspo_verl.loss does).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
GATE_FILE = REPO / "maspo_verl" / "gate.py"
# The paper's defaults (README, "The method"), alpha at 1.5B.
HYPER = {
    "sigma_base": 1.0,
    "alpha": 0.5,
    "beta_pos": 0.03,
    "beta_neg": 0.03,
    "sigma_high": 10.0,
    "adv_low": 0.1,
    "adv_high": 10.0,
}
LOG_RATIO_LIMIT = 20.0


def load_gate(path: Path = GATE_FILE):
    """maspo_verl/gate.py as a standalone module (it imports torch only), bypassing maspo_verl/__init__."""
    spec = importlib.util.spec_from_file_location("maspo_gate_standalone", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_soft_gate_loss():
    """(soft_gate_token_losses, prepare_policy_loss_inputs, outward_regions) from maspo_verl, or the import error."""
    try:
        from maspo_verl.conventions import prepare_policy_loss_inputs
        from maspo_verl.gate import outward_regions
        from maspo_verl.loss import soft_gate_token_losses
    except ImportError as error:
        return None, f"{type(error).__name__}: {error}"
    return (soft_gate_token_losses, prepare_policy_loss_inputs, outward_regions), None


def make_inputs(tokens: int, device: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """float32 (rows, 1024) inputs: old log-probs, log-probs a few updates away, advantages, a mask."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    columns = 1024
    rows = max(tokens // columns, 1)
    shape = (rows, columns)
    # log p_old: most tokens near-certain, a tail down to ~log(1/152k)
    old = (torch.rand(shape, generator=generator).clamp(min=1e-12).log() / 1.5).clamp(min=-12.0)
    log_ratio = 0.15 * torch.randn(shape, generator=generator)
    log_ratio[torch.rand(shape, generator=generator) < 1e-4] = 25.0  # beyond verl's clamp: no gradient there
    advantages = torch.randn(rows, 1, generator=generator).expand(shape).clone()  # one A per response
    lengths = torch.randint(int(0.8 * columns), columns + 1, (rows, 1), generator=generator)
    mask = torch.arange(columns).unsqueeze(0) < lengths
    return {
        "old_log_prob": old.to(device),
        "log_prob": (old + log_ratio).to(device),
        "advantages": advantages.to(device),
        "response_mask": mask.to(device),
    }


def reference(inputs: dict[str, torch.Tensor], hyper: dict[str, float]) -> dict[str, torch.Tensor]:
    """The formulas of the module docstring in float64: widths, gate weight, per-token loss and its gradient."""
    mask = inputs["response_mask"]
    old = torch.where(mask, inputs["old_log_prob"].double(), torch.zeros((), dtype=torch.float64, device=mask.device))
    advantages = torch.where(
        mask, inputs["advantages"].double(), torch.zeros((), dtype=torch.float64, device=mask.device)
    )
    log_prob = inputs["log_prob"].double().detach().requires_grad_(True)
    log_ratio = torch.where(mask, log_prob - old, torch.zeros((), dtype=torch.float64, device=mask.device))
    ratio = torch.exp(torch.clamp(log_ratio, -LOG_RATIO_LIMIT, LOG_RATIO_LIMIT))
    # Which side of 1 a ratio lies is decided on the float32 ratio the loss computes: within float32
    # rounding of 1 the float64 ratio could fall on the other side.
    ratio32 = torch.exp(
        torch.where(mask, inputs["log_prob"].float() - inputs["old_log_prob"].float(), 0.0).clamp(
            -LOG_RATIO_LIMIT, LOG_RATIO_LIMIT
        )
    )
    p_old = torch.exp(old)
    m = torch.clamp(hyper["sigma_base"] * p_old ** (-hyper["alpha"]), hyper["sigma_base"], hyper["sigma_high"])
    k_pos = torch.clamp(1 + hyper["beta_pos"] * advantages, hyper["adv_low"], hyper["adv_high"])
    # only used where A < 0, where 1 - beta A >= 1
    k_neg = torch.clamp(
        1 / torch.clamp(1 - hyper["beta_neg"] * advantages, min=1e-12), hyper["adv_low"], hyper["adv_high"]
    )
    r = ratio.detach()
    pos = (advantages > 0) & (ratio32 > 1)
    neg = (advantages < 0) & (ratio32 < 1)
    sigma = torch.where(pos, m * k_pos, m * k_neg)
    w = torch.where(pos | neg, torch.exp(-((r - 1) ** 2) / (2 * sigma**2)), torch.ones_like(r))
    loss = -advantages * w * ratio
    (gradient,) = torch.autograd.grad(loss.sum(), log_prob)
    return {
        "sigma_pos": m * k_pos,
        "sigma_neg": m * k_neg,
        "weight": w,
        "pos": pos,
        "neg": neg,
        "loss": loss.detach(),
        "gradient": gradient,
        "mask": mask,
    }


def _max_error(actual: torch.Tensor, expected: torch.Tensor, where: torch.Tensor) -> float:
    """Largest |actual - expected| / max(1, |expected|) over `where`."""
    difference = (actual.detach().double() - expected).abs() / expected.abs().clamp(min=1.0)
    return float(torch.where(where, difference, torch.zeros_like(difference)).max())


def check_against_reference(gate, soft_gate, inputs, hyper, tolerance: float) -> list[dict]:
    """Each maspo_verl function against the reference; one {name, max_error, passed} per check."""
    expected = reference(inputs, hyper)
    mask = expected["mask"]
    old = torch.where(mask, inputs["old_log_prob"].float(), 0.0)
    advantages = torch.where(mask, inputs["advantages"].float(), 0.0)
    ratio = torch.exp(torch.where(mask, inputs["log_prob"].float() - old, 0.0).clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT))
    sigma_pos, sigma_neg = gate.trust_region_widths(old, advantages, **hyper)
    pos, neg = gate.outward_regions(ratio, advantages)
    weight = gate.gaussian_gate_weight(ratio, advantages, sigma_pos, sigma_neg, (pos, neg))
    results = [
        ("gate.trust_region_widths sigma_pos", _max_error(sigma_pos, expected["sigma_pos"], mask)),
        # sigma_neg matters only where A < 0 (gate.risk_factors floors the denominator elsewhere)
        (
            "gate.trust_region_widths sigma_neg (A < 0)",
            _max_error(sigma_neg, expected["sigma_neg"], mask & (advantages < 0)),
        ),
        ("gate.outward_regions", float(((pos != expected["pos"]) | (neg != expected["neg"]))[mask].float().sum())),
        ("gate.gaussian_gate_weight", _max_error(weight, expected["weight"], mask)),
    ]
    if soft_gate is not None:
        soft_gate_token_losses, prepare_policy_loss_inputs, outward_regions = soft_gate
        log_prob = inputs["log_prob"].detach().clone().requires_grad_(True)
        prepared = prepare_policy_loss_inputs(
            inputs["old_log_prob"], log_prob, inputs["advantages"], inputs["response_mask"], ratio_requires_grad=False
        )
        regions = outward_regions(prepared.ratio, prepared.advantages)
        widths = gate.trust_region_widths(prepared.old_log_prob, prepared.advantages, **hyper)
        losses, _ = soft_gate_token_losses(log_prob, prepared, regions, regions[0] | regions[1], *widths)
        (gradient,) = torch.autograd.grad(torch.where(mask, losses, 0.0).sum(), log_prob)
        results += [
            ("loss.soft_gate_token_losses value", _max_error(losses, expected["loss"], mask)),
            (
                "loss.soft_gate_token_losses gradient (custom autograd)",
                _max_error(gradient, expected["gradient"], mask),
            ),
        ]
    return [{"name": name, "max_error": error, "passed": error <= tolerance} for name, error in results]


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_per_million_tokens(function, tokens: int, device: str, repeats: int) -> float:
    """Median seconds of `function()` over `repeats` runs (after one warm-up), per million tokens."""
    function()
    _synchronize(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        _synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6 / tokens


def _gate_math(gate, old, log_prob, advantages, hyper):
    """The gate's forward as the loss runs it: fp32 inputs, ratio, widths, regions, weight."""
    old, advantages = old.float(), advantages.float()
    ratio = torch.exp((log_prob.float() - old).clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT))
    sigma_pos, sigma_neg = gate.trust_region_widths(old, advantages, **hyper)
    regions = gate.outward_regions(ratio, advantages)
    return gate.gaussian_gate_weight(ratio, advantages, sigma_pos, sigma_neg, regions)


def _loss_forward_backward(gate, soft_gate, old, leaf, advantages, mask, hyper):
    """maspo_verl's soft-gate per-token loss and its backward through the custom autograd."""
    soft_gate_token_losses, prepare_policy_loss_inputs, outward_regions = soft_gate
    prepared = prepare_policy_loss_inputs(old, leaf, advantages, mask, ratio_requires_grad=False)
    regions = outward_regions(prepared.ratio, prepared.advantages)
    widths = gate.trust_region_widths(prepared.old_log_prob, prepared.advantages, **hyper)
    losses, _ = soft_gate_token_losses(leaf, prepared, regions, regions[0] | regions[1], *widths)
    losses.sum().backward()
    leaf.grad = None


def timings(gate, soft_gate, inputs, hyper, device: str, repeats: int) -> dict[str, float]:
    """Milliseconds per million tokens of the gate math (forward) and of the soft-gate loss (forward +
    backward), with the log-prob inputs in bf16 and in fp32."""
    tokens = inputs["response_mask"].numel()
    table = {}
    for dtype in (torch.bfloat16, torch.float32):
        name = str(dtype).removeprefix("torch.")
        old = inputs["old_log_prob"].to(dtype)
        log_prob = inputs["log_prob"].to(dtype)
        advantages = inputs["advantages"].to(dtype)
        gate_math = functools.partial(_gate_math, gate, old, log_prob, advantages, hyper)
        table[f"gate math forward, {name} inputs (ms per 1M tokens)"] = 1e3 * time_per_million_tokens(
            gate_math, tokens, device, repeats
        )
        if soft_gate is not None:
            leaf = log_prob.detach().clone().requires_grad_(True)
            loss = functools.partial(
                _loss_forward_backward, gate, soft_gate, old, leaf, advantages, inputs["response_mask"], hyper
            )
            table[f"soft-gate loss forward + backward, {name} inputs (ms per 1M tokens)"] = (
                1e3 * time_per_million_tokens(loss, tokens, device, repeats)
            )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="cuda, cuda:N or cpu [cuda when available, else cpu]")
    parser.add_argument("--tokens", type=int, default=1 << 22, help="tokens per draw [4M]")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per measurement (median)")
    parser.add_argument(
        "--tolerance", type=float, default=1e-5, help="largest relative error allowed (fp32 vs float64)"
    )
    parser.add_argument("--output", default=None, help="write the checks and timings here as JSON")
    args = parser.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("FAIL torch sees no CUDA device (use --device cpu to run the check on CPU)", file=sys.stderr)
        return 1
    if args.tokens < 1024 or args.repeats < 1:
        parser.error("--tokens must be >= 1024 and --repeats >= 1")
    gate = load_gate()
    soft_gate, why_not = load_soft_gate_loss()
    inputs = make_inputs(args.tokens, device)
    checks = check_against_reference(gate, soft_gate, inputs, HYPER, args.tolerance)
    for check in checks:
        print(f"{'PASS' if check['passed'] else 'FAIL'} {check['name']}: max relative error {check['max_error']:.3g}")
    if soft_gate is None:
        print(f"NOT CHECKED the custom autograd (maspo_verl.loss needs verl importable): {why_not}")
    table = timings(gate, soft_gate, inputs, HYPER, device, args.repeats)
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    print(f"device {device} ({name}), torch {torch.__version__}, {inputs['response_mask'].numel():,} tokens a draw")
    for key, value in table.items():
        print(f"  {key}: {value:.2f}")
    failed = sum(not c["passed"] for c in checks)
    if args.output:
        report = {
            "device": device,
            "device_name": name,
            "torch": torch.__version__,
            "tokens": inputs["response_mask"].numel(),
            "checks": checks,
            "custom_autograd_checked": soft_gate is not None,
            "custom_autograd_not_checked_because": why_not,
            "timings_ms_per_million_tokens": table,
        }
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(f"gpu_loss_check: {len(checks) - failed}/{len(checks)} checks pass")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

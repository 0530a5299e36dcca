"""benchmarks/bench_loss.py at a tiny size: the rows it claims, its vanilla-identity check on its own
tensors, its machine-readable ratio line (times are printed, never asserted)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kind("verl")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_loss.py"


@pytest.mark.timeout(300)
def test_benchmark_prints_ratio_line_last():
    result = subprocess.run(
        [sys.executable, str(BENCH), "--sizes", "16K,32K", "--dtypes", "float32,bfloat16", "--repeats", "2"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    match = re.fullmatch(
        r"bench: maspo/vanilla time (\d+\.\d+)x, saved bytes/token maspo (\d+\.\d) vanilla (\d+\.\d)", lines[-1]
    )
    assert match, lines[-1]
    _, maspo_bytes, vanilla_bytes = map(float, match.groups())
    # the custom autograd function keeps one float32 per token (+ the bool mask): fewer than vanilla
    assert 0 < maspo_bytes < vanilla_bytes
    # exactly the configurations asked for, each with every loss's time and the three ratios
    rows = [line.split() for line in lines if line.startswith("cpu ")]
    assert [(row[1], int(row[2])) for row in rows] == [
        ("float32", 16000),
        ("float32", 32000),
        ("bfloat16", 16000),
        ("bfloat16", 32000),
    ]
    header = next(line for line in lines if line.startswith("device"))
    assert all(name in header for name in ("maspo ms", "vanilla ms", "sapo ms", "stats ms", "maspo/vanilla"))
    ratios = [[float(value.rstrip("x")) for value in row[7:10]] for row in rows]
    assert all(len(values) == 3 and all(value > 0 for value in values) for values in ratios), rows
    # on the benchmark's own tensors, MASPO's vanilla identity holds (values, not times)
    identity = re.fullmatch(
        r"bench: gate=hard without limiter and risk control vs vanilla: loss relative difference (\S+), "
        r"largest gradient difference (\S+)",
        lines[-2],
    )
    assert identity, lines[-2]
    relative, gradient = map(float, identity.groups())
    assert relative <= 1e-6 and gradient <= 1e-9


def test_benchmark_rejects_a_size_below_one_response():
    result = subprocess.run([sys.executable, str(BENCH), "--sizes", "10"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "below one response" in result.stderr

"""benchmarks/bench_loss.py at a tiny size prints its machine-readable ratio line."""

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
    ratio, maspo_bytes, vanilla_bytes = map(float, match.groups())
    assert ratio > 0
    # the custom autograd function keeps one float32 per token (+ the bool mask): fewer than vanilla
    assert 0 < maspo_bytes < vanilla_bytes
    assert sum(line.startswith("cpu ") for line in lines) == 4  # 2 sizes x 2 dtypes


def test_benchmark_rejects_a_size_below_one_response():
    result = subprocess.run([sys.executable, str(BENCH), "--sizes", "10"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "below one response" in result.stderr

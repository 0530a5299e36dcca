"""benchmarks/gpu_loss_check.py on CPU: its checks pass on maspo_verl's gate, fail on a wrong one, and it
runs with torch alone (verl blocked), saying what it could not check."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

pytestmark = pytest.mark.kind("unit")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_loss_check.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_loss_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = _load_script()
# maspo_verl.loss imports verl (and Ray): at collection, before the unit fixture refuses subprocesses.
SOFT_GATE, WHY_NOT = check.load_soft_gate_loss()


def test_the_standalone_gate_is_the_package_file_and_matches_the_reference():
    gate = check.load_gate()
    assert Path(gate.__file__).resolve() == check.GATE_FILE.resolve()
    assert WHY_NOT is None  # verl is installed here: the custom autograd is checked too
    results = check.check_against_reference(gate, SOFT_GATE, check.make_inputs(32768, "cpu"), check.HYPER, 1e-5)
    assert [r["name"] for r in results if not r["passed"]] == []
    assert "loss.soft_gate_token_losses gradient (custom autograd)" in [r["name"] for r in results]


def test_a_wrong_width_or_weight_fails_its_check():
    gate = check.load_gate()
    inputs = check.make_inputs(32768, "cpu")

    def wide(old, advantages, **hyper):  # beta_pos doubled: the risk controller's A > 0 side is wrong
        return gate.trust_region_widths(old, advantages, **{**hyper, "beta_pos": 2 * hyper["beta_pos"]})

    def squared(*args, **kwargs):  # w^2 instead of w
        return gate.gaussian_gate_weight(*args, **kwargs) ** 2

    wrong = types.SimpleNamespace(**{**vars(gate), "trust_region_widths": wide, "gaussian_gate_weight": squared})
    failed = {
        r["name"] for r in check.check_against_reference(wrong, None, inputs, check.HYPER, 1e-5) if not r["passed"]
    }
    assert {"gate.trust_region_widths sigma_pos", "gate.gaussian_gate_weight"} <= failed


def test_timings_cover_bf16_and_fp32_per_million_tokens():
    gate = check.load_gate()
    table = check.timings(gate, SOFT_GATE, check.make_inputs(16384, "cpu"), check.HYPER, "cpu", repeats=1)
    assert len(table) == 4 and all(value > 0 for value in table.values())
    assert {key.split(", ")[1].split(" ")[0] for key in table} == {"bfloat16", "float32"}


BLOCK_VERL = """
import runpy, sys
sys.modules["verl"] = None  # `import verl` raises ImportError: a machine with torch only
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.verl
@pytest.mark.timeout(600)
def test_it_runs_with_torch_alone_and_says_what_it_did_not_check(tmp_path):
    output = tmp_path / "check.json"
    arguments = ["--device", "cpu", "--tokens", "65536", "--repeats", "1", "--output", str(output)]
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_VERL, str(SCRIPT), *arguments],
        capture_output=True,
        text=True,
        timeout=580,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "NOT CHECKED the custom autograd" in result.stdout
    report = json.loads(output.read_text())
    assert not report["custom_autograd_checked"] and "verl" in report["custom_autograd_not_checked_because"]
    assert [c["passed"] for c in report["checks"]] == [True] * 4
    assert len(report["timings_ms_per_million_tokens"]) == 2  # gate math, bf16 and fp32

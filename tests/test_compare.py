"""The main job, `python -m maspo_verl.sandbox.compare`: bad input fails fast; presets are well formed; the
report's statistics and pairing check on synthetic runs; a minimal comparison runs verl's real
trainer for two methods side by side (--jobs 2), pairs them at step 0 (the same validation
responses and step-1 rollouts in both runs of the seed), and a rerun reuses them."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest
from helpers import validation_records
from omegaconf import OmegaConf

import maspo_verl.sandbox.compare as compare
import maspo_verl.sandbox.runs as runs
from maspo_verl.sandbox.analysis import analyse, environment_check, step0_check
from maspo_verl.sandbox.compare import _parse_methods, _parse_seeds, _select_arms, main
from maspo_verl.sandbox.presets import MASPO_KEY, METHODS, PRESETS, REGIME, Arm, RunSettings
from maspo_verl.sandbox.report import format_table, format_terminal_table
from maspo_verl.sandbox.runner import CPU_SCRIPT
from maspo_verl.sandbox.runner import read_run as summarize_training
from maspo_verl.sandbox.runs import ENVIRONMENT_PACKAGES, RunResult, machine_and_packages
from maspo_verl.sandbox.statistics import planned_minimum_detectable_difference
from maspo_verl.sandbox.tiny.warmup import WarmupSettings, cached_warmup

pytestmark = pytest.mark.kind("unit")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--methods", "maspo,ppo2"], "unknown method(s) ['ppo2']"),
        (["--methods", "maspo,maspo"], "lists a method twice"),
        (["--seeds", "0,x"], "--seeds must be comma-separated integers"),
        (["--steps", "0"], "--steps must be >= 1"),
        (["--ppo-mini-batch-size", "3"], "must divide --train-batch-size"),
        (["--rollout-n", "1"], "--rollout-n must be >= 2"),
        (["--learning-rate", "-1"], "--learning-rate must be a number >= 0"),
        (["--val-n", "2", "--pass-k", "4"], "--pass-k (4) must be <= --val-n (2)"),
        (["--jobs", "0"], "--jobs must be >= 1"),
        (["--preset", "off_policy", "--train-batch-size", "6"], "must divide --train-batch-size"),
        (["--output-dir", "/proc/maspo-compare"], "is not writable"),
        (["--preset", "off_policy", "--arms", "maspo@16,maspo@64"], "unknown arm(s) ['maspo@64']"),
        (["--preset", "off_policy", "--arms", "maspo@16"], "leaves out the baseline(s) ['grpo@16']"),
    ],
)
def test_bad_input_is_one_line_and_nonzero_before_any_run(argv, message, capsys, tmp_path):
    if "--output-dir" not in argv:
        argv = [*argv, "--output-dir", str(tmp_path)]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and error.count("\n") == 0
    assert not (tmp_path / "runs").exists()


def test_a_verl_the_cpu_backend_does_not_support_is_one_line_and_nonzero_before_any_run(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("maspo_verl.integration.versions.installed_verl_version", lambda: "0.8.0")
    assert main(["--output-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert "the CPU backend (maspo_verl.patches) was written and tested for verl 0.9.0" in error
    assert "the installed verl is 0.8.0" in error and error.count("\n") == 0
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_parsers_accept_good_values():
    arms = _parse_methods("maspo, grpo,sapo")
    assert [arm.method for arm in arms] == ["maspo", "grpo", "sapo"]
    assert [arm.baseline for arm in arms] == ["grpo", None, "grpo"], "GRPO is every method's baseline when listed"
    assert [arm.method for arm in _parse_methods("maspo,vanilla")] == ["maspo", "grpo"], "verl's name for GRPO's loss"
    with pytest.raises(ValueError, match="lists a method twice"):
        _parse_methods("grpo,vanilla")
    assert [arm.baseline for arm in _parse_methods("maspo,sapo")] == [None, None]
    assert _parse_seeds("0,2") == [0, 2]
    RunSettings().validate()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_well_formed(name):
    preset = PRESETS[name]
    names = [arm.name for arm in preset.arms]
    assert len(set(names)) == len(names) and len(set(preset.seeds)) == len(preset.seeds)
    assert preset.reason
    for arm in preset.arms:
        assert arm.method in METHODS
        assert arm.baseline is None or arm.baseline in names, f"{arm.name}'s baseline {arm.baseline} is not an arm"
        arm.run_settings(preset.settings).validate()
    assert any(arm.baseline for arm in preset.arms), "a preset compares something against a baseline"


def test_presets_hold_what_the_issue_asks_for():
    assert {a.method for a in PRESETS["quick"].arms} == {"maspo", "grpo"}
    assert {a.method for a in PRESETS["full"].arms} == {"maspo", "grpo", "grpo_no_trust_region"}

    assert {a.method for a in PRESETS["paper"].arms} == {
        "grpo",
        "clip_higher",
        "dac",
        "dac_c3",
        "entropy_advantage",
        "sapo",
        "maspo",
        "grpo_no_trust_region",
    }, "the paper's main-result rows each against GRPO, DAC at GRPO's c and its authors', BAPO out of the screen"
    assert "BAPO (recipe) is left out" in PRESETS["paper"].reason
    ablations = PRESETS["ablations"].arms
    assert {a.method for a in ablations if a.method.startswith("maspo")} == {
        "maspo",
        "maspo_hard_gate",
        "maspo_no_mass_adaptive",
        "maspo_no_risk_control",
    }
    assert all(a.baseline == "maspo" for a in ablations if a.method.startswith("maspo_")), (
        "an ablation is judged against MASPO"
    )
    updates = {a.run_settings(PRESETS["off_policy"].settings).updates_per_batch for a in PRESETS["off_policy"].arms}
    assert updates == {4, 16}
    for arm in PRESETS["off_policy"].arms:  # paired with GRPO at the same number of updates
        if arm.baseline:
            assert arm.baseline == f"grpo@{arm.name.split('@')[1]}"
    sixteen = [
        a.run_settings(PRESETS["off_policy"].settings) for a in PRESETS["off_policy"].arms if a.name.endswith("@16")
    ]
    assert all(s.ppo_epochs == 1 and s.train_batch_size // s.ppo_mini_batch_size == 16 for s in sixteen), (
        "the paper's reported regime: 16 mini-batches of one epoch (batch 512 / mini-batch 32)"
    )
    rates = {a.name: a.run_settings(PRESETS["off_policy"].settings).learning_rate for a in PRESETS["off_policy"].arms}
    assert rates.pop("grpo_frozen@4") == 0 and set(rates.values()) == {REGIME.learning_rate}, (
        "one lr, the regime's, for every learning arm of off_policy"
    )
    grid = {o for a in PRESETS["sensitivity"].arms for o in a.overrides if ".alpha=" in o}
    assert len(grid) == 3 and len([a for a in PRESETS["sensitivity"].arms if a.method == "maspo"]) == 9


def test_full_has_the_seeds_its_interval_needs_at_the_planned_sd():
    from maspo_verl.sandbox.presets import FULL_MAX_SEEDS, _full_seed_count

    assert PRESETS["full"].seeds == tuple(range(_full_seed_count(REGIME.seed_sd)))
    assert f"{len(PRESETS['full'].seeds)} paired seeds" in PRESETS["full"].reason
    assert [_full_seed_count(sd) for sd in (0.01, 0.02, 0.03, 0.04)] == [5, 5, 7, 10]
    assert _full_seed_count(0.2) == FULL_MAX_SEEDS, "beyond what the budget holds: the most it holds, no error"


def test_sensitivity_grid_runs_in_the_regime_with_grpo_at_the_same_settings():
    preset = PRESETS["sensitivity"]
    settings = {a.name: a.run_settings(preset.settings) for a in preset.arms}
    assert set(settings.values()) == {REGIME.run_settings()}, "every cell and its GRPO baseline share the regime"
    baselines = {a.baseline for a in preset.arms if a.baseline}
    assert baselines == {"grpo"} and next(a for a in preset.arms if a.name == "grpo").method == "grpo"
    cells = {(a.overrides[1], a.overrides[2]) for a in preset.arms if a.method == "maspo"}
    assert all(pos.split("=")[1] == neg.split("=")[1] for pos, neg in cells), "beta_pos = beta_neg in every cell"


TRUST_REGION_PRESETS = [
    "full",
    "paper",
    "ablations",
    "ablations_matched",
    "width_sweep",
    "off_policy",
    "sensitivity",
    "decomposition",
]


@pytest.mark.parametrize("name", TRUST_REGION_PRESETS)
def test_every_trust_region_preset_counts_the_no_trust_region_control_and_plans_its_power(name):
    preset = PRESETS[name]
    controls = [arm for arm in preset.arms if arm.expected and not arm.sanity]
    assert controls and all(arm.method == "grpo_no_trust_region" for arm in controls)
    for control in controls:
        baseline = next(arm for arm in preset.arms if arm.name == control.baseline)
        assert baseline.method == "grpo" and control.expected == "different"
        assert control.run_settings(preset.settings) == baseline.run_settings(preset.settings)
    for sanity in (arm for arm in preset.arms if arm.sanity):  # GRPO (or MASPO) at lr 0: a sanity line only
        baseline = next(arm for arm in preset.arms if arm.name == sanity.baseline)
        frozen, learning = sanity.run_settings(preset.settings), baseline.run_settings(preset.settings)
        assert sanity.method == baseline.method and sanity.expected == "worse"
        assert frozen.learning_rate == 0.0 < learning.learning_rate
        assert replace(frozen, learning_rate=learning.learning_rate) == learning, "it differs in lr only"
    assert preset.pilot_seed_sd == REGIME.seed_sd and preset.primary == "val_acc_last_k"
    assert preset.in_regime and not PRESETS["quick"].in_regime and not PRESETS["pilot"].in_regime


def _synthetic_run(arm, seed, final_accuracy, digest="same", start=0.2, reward=0.3):
    """A finished run whose summary holds the given final accuracy (the analysis reads one number per run)."""
    summary = {
        "val_acc_start": start,
        "val_acc_final": final_accuracy,
        "val_acc_rise": final_accuracy - start,
        "val_pass@4_final": min(1.0, final_accuracy + 0.2),
        "val_start_digest": digest,
        "train_reward_mean": reward,
        "train_reward_first_quarter": reward - 0.1,
        "train_reward_last_quarter": reward + 0.1,
        "train_reward_quarter_rise": 0.2,
        "pg_clipfrac_mean": 0.03,
        "ratio/p99_pos_mean": 1.25,
        "ratio/p99_neg_mean": 0.85,
        "ratio/max_pos_mean": 1.75,
        "ratio/max_neg_mean": 2.5,
    }
    if arm.startswith("maspo"):
        summary.update({"maspo/gated_frac_mean": 0.25, "maspo/gate_weight_mean_mean": 0.98})
    return RunResult(arm, seed, True, 1.0, f"/runs/{arm}-seed{seed}", summary=summary)


GRPO_FINAL = [0.40, 0.45, 0.38, 0.50, 0.42]


def test_analysis_is_the_paired_t_over_seeds_with_holm_verdicts_and_the_control_apart():
    from scipy import stats

    arms = [
        Arm("grpo", "grpo", "GRPO"),
        Arm("maspo", "maspo", "MASPO", "grpo"),
        Arm("sapo", "sapo", "SAPO", "grpo"),
        Arm("half", "grpo", "GRPO, half lr (control)", "grpo", expected="worse"),
    ]
    maspo_final = [a + d for a, d in zip(GRPO_FINAL, [0.02, 0.05, 0.01, 0.04, 0.03], strict=True)]  # raw p ~0.013
    sapo_final = [a + d for a, d in zip(GRPO_FINAL, [0.01, -0.02, 0.02, 0.0, -0.01], strict=True)]
    half_final = [a - d for a, d in zip(GRPO_FINAL, [0.10, 0.12, 0.09, 0.11, 0.13], strict=True)]
    results = [
        _synthetic_run(arm, seed, values[seed])
        for arm, values in (("grpo", GRPO_FINAL), ("maspo", maspo_final), ("sapo", sapo_final), ("half", half_final))
        for seed in range(5)
    ]
    analysis = analyse(arms, results, RunSettings(val_n=8, pass_k=4), pilot_seed_sd=0.03)
    maspo = analysis["paired"]["maspo"]["val_acc_final"]
    expected = stats.ttest_rel(maspo_final, GRPO_FINAL)
    assert maspo["p_value"] == pytest.approx(expected.pvalue)
    assert (maspo["low"], maspo["high"]) == pytest.approx(tuple(expected.confidence_interval(0.95)))
    assert maspo["degrees_of_freedom"] == 4 and maspo["holm_family_size"] == 2, "the control is not in the family"
    raw = {name: analysis["paired"][name]["val_acc_final"]["p_value"] for name in ("maspo", "sapo", "half")}
    assert raw["maspo"] < raw["sapo"] and maspo["p_holm"] == pytest.approx(2 * raw["maspo"])
    assert maspo["verdict"] == "better" and maspo["p_holm"] < 0.05
    half = analysis["paired"]["half"]["val_acc_final"]
    assert half["holm_family_size"] == 1 and half["p_holm"] == pytest.approx(raw["half"]), "judged apart"
    assert analysis["paired"]["half"]["control_detected"] is True
    assert analysis["design"]["kind"] == "test" and analysis["planned"]["minimum_detectable_difference"] <= 0.10
    assert analysis["paired"]["sapo"]["val_acc_final"]["verdict"] == "no detectable difference"
    assert "grpo" not in analysis["paired"], "a baseline is not compared with itself"
    assert analysis["planned"]["comparisons"] == 2 and analysis["planned"]["seeds"] == 5
    assert analysis["realised"]["drawn_seed_sd"] > 0, "the realised MDE comes from the drawn differences"
    for secondary in ("train_reward_mean", "val_pass@4_final"):  # descriptive: an interval, no verdict
        comparison = analysis["paired"]["maspo"][secondary]
        assert comparison["descriptive"] and "verdict" not in comparison and "p_holm" not in comparison
    assert analysis["instrument"]["baselines_learn"]["grpo"]["rise_interval_excludes_0"] is True
    table = format_table(arms, analysis, RunSettings(val_n=8, pass_k=4))
    assert "| MASPO (vs grpo) | 5 |" in table and "(control: detected)" in table
    assert "| 0.030 | 1.250 / 0.850 | 1.750 / 2.500 | 0.250 | 0.980 |" in table, "every arm's ratio extremes"
    assert "| 0.030 | 1.250 / 0.850 | 1.750 / 2.500 | - | - |" in table, "GRPO has no gate"
    assert "planned 0.06" in table and "realised" in table
    terminal = format_terminal_table(arms, analysis)
    assert max(map(len, terminal.splitlines())) <= 100 and "half " in terminal and "worse (control ok)" in terminal
    assert "p (Holm)" in table and table.count("| p (Holm) |") == 1, "one Holm column: the primary outcome's"


def test_a_missed_positive_control_says_the_testbed_cannot_judge():
    arms = [Arm("grpo", "grpo", "GRPO"), Arm("half", "grpo", "GRPO, half lr (control)", "grpo", expected="worse")]
    results = [
        _synthetic_run(arm, seed, GRPO_FINAL[seed] + (0.01 * (-1) ** seed if arm == "half" else 0.0))
        for arm in ("grpo", "half")
        for seed in range(4)
    ]
    analysis = analyse(arms, results, RunSettings(val_n=8, pass_k=4))
    assert analysis["paired"]["half"]["control_detected"] is False and analysis["planned"] is None
    table = format_table(arms, analysis, RunSettings(val_n=8, pass_k=4))
    assert "control NOT detected: this testbed cannot judge the methods" in table
    assert "was NOT detected" in table
    assert analysis["design"]["kind"] == "screen", "no planned power: a screen"


def test_one_seed_gives_no_interval_and_the_table_says_why():
    arms = [Arm("maspo", "maspo", "MASPO", "grpo"), Arm("grpo", "grpo", "GRPO")]
    results = [_synthetic_run("grpo", 0, 0.2), _synthetic_run("maspo", 0, 0.9)]
    analysis = analyse(arms, results, RunSettings(val_n=8, pass_k=4), pilot_seed_sd=0.03)
    pair = analysis["paired"]["maspo"]["val_acc_final"]
    assert pair["difference"] == pytest.approx(0.7) and pair["low"] is None and pair["p_value"] is None
    assert pair["verdict"] == "no interval (1 seed)" and analysis["planned"] is None
    table = format_table(arms, analysis, RunSettings(val_n=8, pass_k=4))
    assert "| +0.700 |" in table and "One seed: a difference but no interval" in table
    assert "One seed" in format_terminal_table(arms, analysis)


def test_step0_check_flags_a_seed_whose_arms_sampled_differently():
    results = [
        _synthetic_run("maspo", 0, 0.5),
        _synthetic_run("grpo", 0, 0.5),
        _synthetic_run("maspo", 1, 0.5, digest="a"),
        _synthetic_run("grpo", 1, 0.5, digest="b"),
    ]
    check = step0_check(results)
    assert check[0]["identical"] is True and check[1]["identical"] is False


def test_environment_check_flags_a_seed_whose_arms_ran_on_different_machines():
    amd = {"cpu": "AMD EPYC", "python": "3.11.7", "packages": {"torch": "2.13.0"}}
    intel = {**amd, "cpu": "Intel(R) Xeon(R) Processor"}
    newer_torch = {**amd, "packages": {"torch": "2.14.1"}}
    results = [
        _synthetic_run("maspo", 0, 0.5),
        _synthetic_run("grpo", 0, 0.5),
        _synthetic_run("maspo", 1, 0.5),
        _synthetic_run("grpo", 1, 0.5),
        _synthetic_run("maspo", 2, 0.5),
        _synthetic_run("grpo", 2, 0.5),
    ]
    for result, environment in zip(results, [amd, amd, amd, intel, newer_torch, {}], strict=True):
        result.environment = environment
    check = environment_check(results)
    assert check[0] == {"identical": True, "environments": [amd], "unrecorded": []}
    assert check[1]["identical"] is False and {env["cpu"] for env in check[1]["environments"]} == {
        "AMD EPYC",
        intel["cpu"],
    }
    assert check[2] == {"identical": None, "environments": [newer_torch], "unrecorded": ["grpo"]}, (
        "a run recorded before environments were: unknown, neither the same nor different"
    )
    results[1].environment = newer_torch
    assert environment_check(results)[0]["identical"] is False, "a package version alone makes another environment"


def test_every_run_records_its_cpu_and_package_versions():
    from importlib.metadata import version

    environment = machine_and_packages()
    assert environment["cpu"] and environment["python"].count(".") == 2
    assert isinstance(environment["cpu_capability"], str) and environment["cpu_capability"]  # e.g. "AVX512"
    assert set(environment["packages"]) == set(ENVIRONMENT_PACKAGES)
    assert environment["packages"]["torch"] == version("torch") and environment["packages"]["verl"] == version("verl")


def test_warmup_is_cached_by_its_inputs(tmp_path):
    settings = WarmupSettings(steps=2, num_train=8, num_val=4)
    first, metadata, reused = cached_warmup(settings, tmp_path)
    again, _, reused_again = cached_warmup(settings, tmp_path)
    assert (reused, reused_again, first) == (False, True, again)
    assert (first / "config.json").is_file() and 0.0 <= metadata["val_greedy_accuracy"] <= 1.0
    other, _, reused_other = cached_warmup(WarmupSettings(steps=3, num_train=8, num_val=4), tmp_path)
    assert other != first and not reused_other


def _assert_paired_before_the_first_update(maspo_dir, vanilla_dir, val_n):
    """Validation happens before any update and the step-1 rollout uses the same initial weights, so
    every response there must be the same in both runs of a seed: same (prompt, session, response,
    score) in the step-0 validation dumps, same validation accuracy, same step-1 reward and length."""
    maspo, vanilla = (
        summarize_training(run_dir, 0, 0.0, 2, log_name="verl.log") for run_dir in (maspo_dir, vanilla_dir)
    )
    maspo_val = validation_records(maspo_dir / "val_generations" / "0.jsonl")
    vanilla_val = validation_records(vanilla_dir / "val_generations" / "0.jsonl")
    assert len(maspo_val) == len(vanilla_val) > 0 and len({record[1] for record in maspo_val}) == val_n
    assert maspo_val == vanilla_val, "step-0 validation responses differ between loss modes"
    responses_per_prompt: dict[str, set] = {}
    for prompt, _, response, _ in maspo_val:
        responses_per_prompt.setdefault(prompt, set()).add(response)
    assert any(len(responses) > 1 for responses in responses_per_prompt.values()), "validation did not sample"

    assert maspo.validation[0] and maspo.validation[0] == vanilla.validation[0]
    for key in ("critic/score/mean", "response_length/mean"):
        assert maspo.metrics_by_step[1][key] == vanilla.metrics_by_step[1][key], f"step-1 rollouts differ in {key}"
    for summary in (maspo, vanilla):  # the server's one-time warning when a request brings no sample index
        assert "without sample_index" not in summary.log_path.read_text(errors="replace")
    # the loss modes did differ: the update is not the same
    assert maspo.maspo_metric_keys() and not vanilla.maspo_metric_keys()


@pytest.mark.training(minutes=2)
@pytest.mark.timeout(900)
def test_minimal_comparison_side_by_side_is_paired_and_a_rerun_reuses_it(tmp_path):
    cache = tmp_path / "cache"
    cached_warmup(WarmupSettings(), cache)  # the comparison must reuse it, not train again
    output = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "maspo_verl.sandbox.compare",
        "--methods",
        "maspo,grpo",
        "--seeds",
        "0",
        "--steps",
        "2",
        "--test-freq",
        "2",
        "--val-n",
        "2",
        "--pass-k",
        "2",
        "--jobs",
        "2",
        # the testbed's batch and validation, smaller: what is checked is the wiring, not the learning
        "--train-batch-size",
        "8",
        "--ppo-mini-batch-size",
        "4",
        "--val-problems",
        "16",
        "--output-dir",
        str(output),
        "--cache-dir",
        str(cache),
    ]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=840, env=environment)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "warm-up model reused from" in result.stdout and "2 at a time" in result.stdout
    report = json.loads((output / "comparison.json").read_text())
    per_arm = report["analysis"]["per_arm"]
    assert set(per_arm) == {"maspo", "grpo"}
    for arm in ("maspo", "grpo"):
        for key in ("val_acc_start", "val_acc_final", "val_pass@2_final", "train_reward_mean", "entropy_last"):
            assert 0.0 <= per_arm[arm][key]["mean"] <= (1.0 if key != "entropy_last" else 50.0), (arm, key)
    assert "maspo/gate_weight_mean_mean" in per_arm["maspo"]  # MASPO's metrics came back from verl
    assert "maspo/gate_weight_mean_mean" not in per_arm["grpo"]
    assert report["analysis"]["paired"]["maspo"]["baseline"] == "grpo"
    for key in ("maspo/gated_frac_pos_mean", "ratio/max_neg_mean", "maspo/sigma_neg_mean_mean"):
        assert key in report["runs"][0]["summary"], key  # the gate metrics reach the run's summary
    assert "ratio/p99_neg_mean" in report["runs"][1]["summary"], "GRPO's arm logs its ratio statistics too"
    # Paired: both methods' step-0 validations are the same samples (deterministic hf_cpu sampling).
    assert report["step0_identical_within_seed"]["0"]["identical"], report["step0_identical_within_seed"]
    assert all(run["summary"]["steps_logged"] == 2 for run in report["runs"])
    assert (output / "learning_curves.png").stat().st_size > 10_000
    assert "no interval (1 seed)" in result.stdout and "(baseline)" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines() if not line.startswith("[compare]")) <= 100
    assert "| MASPO (vs grpo) | 1 |" in (output / "comparison.md").read_text()
    progress = result.stdout + result.stderr  # the bar on stderr, its lines (tqdm.write) on stdout
    assert "maspo-seed0 step 2: val acc" in progress, "progress shows validations while runs are under way"
    assert "steps: 100%" in result.stderr and "4/4" in result.stderr, "the bar counts training steps"
    for arm in ("maspo", "grpo"):
        assert (output / "runs" / f"{arm}-seed0" / "verl.log").stat().st_size > 0
    _assert_paired_before_the_first_update(output / "runs" / "maspo-seed0", output / "runs" / "grpo-seed0", val_n=2)

    again = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "(2 reused)" in again.stdout
    rerun = json.loads((output / "comparison.json").read_text())
    assert rerun["analysis"]["per_arm"] == report["analysis"]["per_arm"]


@pytest.fixture(scope="module")
def cpu_script_arguments():
    """The main_ppo arguments our CPU script builds, as its DRY_RUN=1 prints them (one bash run)."""
    import shlex

    result = subprocess.run(
        ["bash", str(CPU_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    words = shlex.split(result.stdout.splitlines()[0])
    return words[words.index("verl.trainer.main_ppo") + 1 :]


@pytest.fixture
def verl_ppo_loss_restored():
    """Building a config with entropy_advantage.enable=true applies that patch in this process
    (its documented switch); undo it so later tests see verl's own ppo_loss."""
    yield
    from maspo_verl.baselines.entropy_advantage import remove_entropy_advantage

    remove_entropy_advantage()


ALL_ARMS = sorted(
    {(arm.method, arm.overrides) for preset in PRESETS.values() for arm in preset.arms}
    | {(method, ()) for method in METHODS}
)


@pytest.mark.verl
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "method, arm_overrides", ALL_ARMS, ids=[f"{m}{'-' + '-'.join(o) if o else ''}" for m, o in ALL_ARMS]
)
def test_every_method_and_arm_composes_and_passes_verl_validation(
    method, arm_overrides, cpu_script_arguments, verl_ppo_loss_restored
):
    """Each selectable method's and each preset arm's overrides exist in the config and pass verl's own checks."""
    from maspo_verl.experiments.dry_run import compose_config, dry_run, split_main_ppo_args

    config_path, config_name, overrides = split_main_ppo_args(cpu_script_arguments)
    spec = METHODS[method]
    config = compose_config(
        config_path,
        config_name,
        [
            *overrides,
            f"actor_rollout_ref.actor.policy_loss.loss_mode={spec.loss_mode}",
            *spec.overrides,
            *arm_overrides,
        ],
    )
    report = dry_run(config)
    assert report.config.actor_rollout_ref.actor.policy_loss.loss_mode == spec.loss_mode
    for override in (*spec.overrides, *arm_overrides):
        key, value = override.split("=", 1)
        actual = str(OmegaConf.select(report.config, key)).lower()
        if value.replace(".", "", 1).replace("e", "", 1).isdigit():  # 1e6 reads back as 1000000.0
            assert float(actual) == float(value), override
        else:
            assert actual == value.lower(), override


def _fake_finished_training(calls):
    """A stand-in for run_cpu_training that records its call and leaves what a finished run leaves."""
    from maspo_verl.sandbox.runner import RunSummary

    def fake(run_dir, steps, overrides, timeout, env, script, log_name, on_line):
        calls.append(run_dir.name)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / log_name).write_text("step:1 - \n")
        return RunSummary(0, 0.1, run_dir / log_name)

    return fake


def _fake_runs_and_data(tmp_path, monkeypatch):
    """The training and run summary replaced by stand-ins; the runs they were asked for, and data files."""
    calls = []
    monkeypatch.setattr(runs, "run_cpu_training", _fake_finished_training(calls))
    monkeypatch.setattr(runs, "summarize_run", lambda run_dir, settings: {"val_acc_start": 0.1, "val_acc_final": 0.2})
    (tmp_path / "train.parquet").write_bytes(b"train")
    (tmp_path / "val.parquet").write_bytes(b"val")
    return calls, {"train": tmp_path / "train.parquet", "val": tmp_path / "val.parquet"}


def test_a_finished_run_is_reused_only_with_the_same_fingerprint(tmp_path, monkeypatch):
    calls, data = _fake_runs_and_data(tmp_path, monkeypatch)
    arm, settings, progress = Arm("maspo", "maspo", "MASPO"), RunSettings(steps=2), runs.Progress(2, enabled=False)
    run_dir = tmp_path / "runs" / "maspo-seed0"

    def run(settings=settings, resume=True):
        return runs.run_one(arm, 0, settings, data, tmp_path / "model", run_dir, CPU_SCRIPT, progress, resume)

    first = run()
    assert first.ok and not first.reused and calls == ["maspo-seed0"]
    assert run().reused and calls == ["maspo-seed0"], "same settings: reused, not run again"
    moved = tmp_path / "elsewhere" / "maspo-seed0"
    shutil.copytree(run_dir, moved)
    reused = runs.run_one(arm, 0, settings, data, tmp_path / "model", moved, CPU_SCRIPT, progress, True)
    assert reused.reused and reused.run_dir == str(moved), "a moved output folder is read where it is now"
    paired_elsewhere = runs.run_one(
        replace(arm, baseline="grpo"), 0, settings, data, tmp_path / "model", run_dir, CPU_SCRIPT, progress, True
    )
    assert paired_elsewhere.reused and calls == ["maspo-seed0"], "the arm it is paired with changes no run"
    other_loss = replace(arm, overrides=("actor_rollout_ref.actor.policy_loss.maspo.gate=hard",), baseline="grpo")
    redone = runs.run_one(other_loss, 0, settings, data, tmp_path / "model", run_dir, CPU_SCRIPT, progress, True)
    assert not redone.reused
    assert calls == ["maspo-seed0", "maspo-seed0"], "another override: redone, whatever it is paired with"
    assert not run(resume=False).reused and len(calls) == 3, "--fresh redoes it"
    assert not run(settings=RunSettings(steps=3)).reused and len(calls) == 4, "other settings: redone"
    assert not run(settings=RunSettings(steps=3, cpu_threads=2)).reused and len(calls) == 5, "other threads: redone"
    (tmp_path / "val.parquet").write_bytes(b"other validation set")
    assert not run(settings=RunSettings(steps=3)).reused and len(calls) == 6, "other threads and data: redone"
    (run_dir / "run.json").unlink()  # an unfinished run has no record
    (run_dir / "leftover").write_text("half a run")
    assert not run(settings=RunSettings(steps=3)).reused and not (run_dir / "leftover").exists()


def test_a_finished_run_from_other_warm_up_weights_is_redone(tmp_path, monkeypatch, capsys):
    """The warm-up model's cache name hashes its inputs; its bits follow the CPU that trained it."""

    calls, data = _fake_runs_and_data(tmp_path, monkeypatch)
    model = tmp_path / "tiny-warmup-0123"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights built on one machine")
    (model / "warmup.json").write_text('{"final_loss": 0.38039273}')
    arm, settings, progress = Arm("maspo", "maspo", "MASPO"), RunSettings(steps=2), compare.Progress(2, enabled=False)
    run_dir = tmp_path / "runs" / "maspo-seed0"

    def run():
        return runs.run_one(arm, 0, settings, data, model, run_dir, CPU_SCRIPT, progress, True)

    assert not run().reused and run().reused and len(calls) == 1
    (model / "warmup.json").write_text('{"final_loss": 0.38039407}')
    assert run().reused and len(calls) == 1, "the warm-up's own record is not the weights"
    (model / "model.safetensors").write_bytes(b"weights built on another machine")
    assert not run().reused and len(calls) == 2
    assert "started from other warm-up weights" in capsys.readouterr().out
    assert run().reused and len(calls) == 2, "the redone run is kept with the new weights"
    record = json.loads((run_dir / "run.json").read_text())
    del record["weights"]  # a record written before weights were kept (docs/results/*_runs.tar.xz)
    (run_dir / "run.json").write_text(json.dumps(record))
    assert run().reused and len(calls) == 2
    assert runs.weights_digest(tmp_path / "no-such-model") is None


def test_environment_check_is_none_when_an_arm_has_no_record():
    results = [_synthetic_run("maspo", 0, 0.5), _synthetic_run("grpo", 0, 0.5)]
    assert environment_check(results)[0] == {"identical": None, "environments": [], "unrecorded": ["grpo", "maspo"]}


def test_ctrl_c_kills_the_runs_under_way_and_keeps_the_finished_ones(tmp_path, monkeypatch, capsys):
    import maspo_verl.sandbox.tiny.warmup as warmup

    monkeypatch.setattr(compare, "require_loss_modes", lambda arms: None)
    monkeypatch.setattr(
        warmup, "cached_warmup", lambda settings, cache_dir: (tmp_path / "model", {"val_greedy_accuracy": 0.1}, True)
    )
    killed = []
    monkeypatch.setattr(compare, "kill_live_runs", lambda: killed.append(True) or 1)
    finished = []

    def run_one(arm, seed, settings, data, model_dir, run_dir, script, progress, resume):
        if finished:
            raise KeyboardInterrupt
        run_dir.mkdir(parents=True)
        (run_dir / "run.json").write_text("{}")
        finished.append(run_dir)
        return RunResult(arm.name, seed, True, 1.0, str(run_dir))

    monkeypatch.setattr(compare, "run_one", run_one)
    code = main(["--methods", "maspo,grpo", "--jobs", "1", "--output-dir", str(tmp_path / "out"), "--no-progress"])
    assert code == 130 and killed == [True]
    assert (finished[0] / "run.json").is_file(), "a finished run survives the interrupt"
    assert "interrupted" in capsys.readouterr().err
    assert not (tmp_path / "out" / "comparison.json").exists(), "no report from a partial comparison"


def test_problems_line_up_across_runs_by_prompt_not_by_verls_per_run_uid(tmp_path):
    """verl's validation uids are fresh in every run: two runs' dumps pair only by prompt text."""
    from maspo_verl.sandbox.runs import _validation_outcomes

    def dump(name, uid_prefix, rows):
        path = tmp_path / f"{name}.jsonl"
        path.write_text(
            "\n".join(
                json.dumps(
                    {
                        "uid": f"{uid_prefix}{i}_{session}_0",
                        "input": prompt,
                        "output": "x",
                        "score": score,
                        "data_source": "tiny_arithmetic",
                    }
                )
                for i, (prompt, session, score) in enumerate(rows)
            )
        )
        return str(path)

    first = _validation_outcomes(dump("a", "u", [("1+1=", 0, 1.0), ("2+2=", 0, 0.0), ("1+1=", 1, 0.0)]))
    second = _validation_outcomes(dump("b", "other", [("2+2=", 0, 1.0), ("1+1=", 0, 1.0), ("1+1=", 1, 1.0)]))
    assert list(first) == list(second) == ["tiny_arithmetic/1+1=", "tiny_arithmetic/2+2="]
    assert first["tiny_arithmetic/2+2="] == [False] and second["tiny_arithmetic/2+2="] == [True]


def test_a_runs_torch_threads_come_from_its_settings_not_from_jobs_or_the_callers_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MASPO_CPU_THREADS", "7")
    data = {"train": tmp_path / "train.parquet", "val": tmp_path / "val.parquet"}
    arm = Arm("maspo", "maspo", "MASPO")
    assert runs.run_environment(arm, RunSettings(), data, tmp_path)["MASPO_CPU_THREADS"] == "1"
    assert runs.run_environment(arm, RunSettings(cpu_threads=2), data, tmp_path)["MASPO_CPU_THREADS"] == "2"
    with pytest.raises(ValueError, match="--cpu-threads"):
        RunSettings(cpu_threads=0).validate()


def test_without_matplotlib_the_report_is_written_and_only_the_plot_is_left_out(tmp_path, monkeypatch, capsys):
    """A wheel installed without the `plot` extra: the comparison still ends with its table, exit 0."""
    import importlib.util

    import maspo_verl.sandbox.tiny.warmup as warmup

    monkeypatch.setattr(compare, "require_loss_modes", lambda arms: None)
    monkeypatch.setattr(
        warmup, "cached_warmup", lambda settings, cache_dir: (tmp_path / "model", {"val_greedy_accuracy": 0.1}, True)
    )
    monkeypatch.setattr(
        compare, "run_one", lambda arm, seed, *rest: RunResult(arm.name, seed, True, 1.0, str(tmp_path))
    )
    monkeypatch.setattr(
        compare, "analyse", lambda arms, results, settings, pilot_sd, primary, contrasts=(): {"per_arm": {"maspo": {}}}
    )
    monkeypatch.setattr(compare, "step0_check", lambda results: {})
    monkeypatch.setattr(compare, "format_table", lambda arms, analysis, settings: "| the table |")
    monkeypatch.setattr(compare, "format_terminal_table", lambda arms, analysis: "the terminal table")
    monkeypatch.setattr(compare, "plot", lambda *args: pytest.fail("plot called without matplotlib"))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real_find_spec(name, *a)
    )
    code = main(["--methods", "maspo,grpo", "--jobs", "1", "--output-dir", str(tmp_path / "out"), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0
    assert "the terminal table" in captured.out and (tmp_path / "out" / "comparison.md").read_text().startswith(
        "| the table |"
    )
    assert "maspo-verl[plot]" in captured.err and not (tmp_path / "out" / "learning_curves.png").exists()


def _draw_full_without_training(monkeypatch, tmp_path, picked: bool, extra=()) -> list:
    """`main(--preset full ...)` with the runs, the warm-up and the analysis faked: the pilot sd (or None) the
    analysis was given, one per call."""
    import maspo_verl.sandbox.tiny.warmup as warmup

    planned = []
    monkeypatch.setattr(compare, "REGIME_PICKED_BY_PILOT", picked)
    monkeypatch.setattr(compare, "require_loss_modes", lambda arms: None)
    monkeypatch.setattr(
        warmup, "cached_warmup", lambda settings, cache_dir: (tmp_path / "model", {"val_greedy_accuracy": 0.1}, True)
    )
    monkeypatch.setattr(
        compare, "run_one", lambda arm, seed, *rest: RunResult(arm.name, seed, True, 1.0, str(tmp_path))
    )

    def analyse(arms, results, settings, pilot_sd, primary, contrasts=()):
        planned.append(pilot_sd)
        return {"per_arm": {}}

    monkeypatch.setattr(compare, "analyse", analyse)
    monkeypatch.setattr(compare, "step0_check", lambda results: {})
    arguments = ["--preset", "full", "--seeds", "0,1", "--jobs", "1", "--output-dir", str(tmp_path / "o")]
    assert main([*arguments, "--no-progress", *extra]) == 0
    return planned


@pytest.mark.parametrize("picked", [False, True])
def test_a_trust_region_preset_is_a_screen_until_the_pilot_has_picked_its_regime(picked, tmp_path, monkeypatch, capsys):
    planned = _draw_full_without_training(monkeypatch, tmp_path, picked)
    warned = f"the regime ({REGIME.name}) is provisional" in capsys.readouterr().err
    assert (planned, warned) == (([REGIME.seed_sd], False) if picked else ([None], True)), (
        "no planned power, no verdicts"
    )


@pytest.mark.parametrize(
    ("extra", "designed", "message"),
    [
        (["--run-timeout-s", "7200"], True, None),  # a time limit changes no outcome
        (["--steps", "10"], False, "steps chosen on the command line"),
        (["--arms", "grpo,maspo"], False, "leaves out grpo_no_trust_region"),
    ],
)
def test_a_picked_regimes_preset_keeps_its_planned_power_unless_an_outcome_setting_or_its_control_changes(
    extra, designed, message, tmp_path, monkeypatch, capsys
):
    planned = _draw_full_without_training(monkeypatch, tmp_path, True, extra)
    assert planned == ([REGIME.seed_sd] if designed else [None])
    err = capsys.readouterr().err
    assert (message in err) if message else "screen" not in err


def test_fulls_reason_states_the_half_width_it_reaches_when_the_seed_cap_binds():
    import maspo_verl.sandbox.presets as presets
    from maspo_verl.sandbox.statistics import interval_half_width

    assert presets.FULL_SEEDS_REASON in PRESETS["full"].reason
    narrow = len(presets.FULL_SEEDS) < presets.FULL_MAX_SEEDS
    if narrow:
        assert interval_half_width(REGIME.seed_sd, len(presets.FULL_SEEDS)) <= presets.FULL_HALF_WIDTH
    assert presets._full_seed_count(0.045) == presets.FULL_MAX_SEEDS
    assert interval_half_width(0.045, presets.FULL_MAX_SEEDS) > presets.FULL_HALF_WIDTH, "the cap binds at 0.045"


def test_arms_selects_part_of_a_preset_in_its_order_with_its_settings():
    arms = list(PRESETS["off_policy"].arms)
    chosen = _select_arms(arms, "maspo@16, grpo@4,grpo@16")
    assert [arm.name for arm in chosen] == ["grpo@16", "maspo@16", "grpo@4"]
    assert chosen[1] is next(arm for arm in arms if arm.name == "maspo@16"), "the preset's own arm, settings and all"


# ---------------------------------------------------------------------------------------------------------------
# The trust-region experiment: arms, overrides, the regime, the pilot


def test_no_arm_of_a_method_is_tuned_differently_from_its_baseline():
    """Within a pairing only the method differs: same settings as the baseline, except an lr-0 sanity line's lr."""
    for name, preset in PRESETS.items():
        by_name = {arm.name: arm for arm in preset.arms}
        for arm in preset.arms:
            if arm.baseline is None:
                continue
            mine, theirs = arm.run_settings(preset.settings), by_name[arm.baseline].run_settings(preset.settings)
            if arm.sanity:
                mine = replace(mine, learning_rate=theirs.learning_rate)
            assert mine == theirs, f"{name}: {arm.name} runs other settings than its baseline {arm.baseline}"
            assert not arm.overrides or arm.method == "maspo", f"{name}: {arm.name} adds overrides of its own"


def test_the_regime_is_the_one_constant_of_every_trust_region_preset():
    from maspo_verl.sandbox.presets import REGIME_SETTINGS

    assert REGIME.run_settings() == REGIME_SETTINGS
    for name in TRUST_REGION_PRESETS:
        preset = PRESETS[name]
        assert preset.settings == REGIME_SETTINGS, name
        for arm in preset.arms:  # an arm changes the updates per batch (off_policy's axis) or lr 0, nothing else
            assert set(dict(arm.settings)) <= {"ppo_mini_batch_size", "ppo_epochs", "learning_rate"}, arm.name
            assert dict(arm.settings).get("learning_rate", 0.0) == 0.0, f"{arm.name} sets its own learning rate"
    updates = {a.run_settings(PRESETS["off_policy"].settings).updates_per_batch for a in PRESETS["off_policy"].arms}
    assert updates == {REGIME.updates_per_batch, 4}
    assert PRESETS["quick"].settings == replace(RunSettings(), steps=10), "the README's main job keeps its testbed"
    assert PRESETS["quick"].settings.validation_steps == [0, 10]


def test_pilot_seeds_are_disjoint_from_every_presets_seeds():
    from maspo_verl.sandbox.presets import PILOT_SEEDS, SECOND_PILOT_SEEDS

    assert set(PRESETS["pilot"].seeds) == set(PILOT_SEEDS) and len(PILOT_SEEDS) >= 5
    assert set(PRESETS["second_pilot"].seeds) == set(SECOND_PILOT_SEEDS) and len(SECOND_PILOT_SEEDS) == 10
    for pilot, seeds in (("pilot", PILOT_SEEDS), ("second_pilot", SECOND_PILOT_SEEDS)):
        for name, preset in PRESETS.items():
            if name != pilot:
                assert not set(preset.seeds) & set(seeds), f"{name} uses a seed of {pilot}"


def test_the_second_pilot_draws_e_alone_on_fresh_seeds_at_the_first_pilots_threshold():
    from maspo_verl.sandbox.pilot import CONTROL_ALPHA, PILOT_GRIDS
    from maspo_verl.sandbox.presets import PILOT_CANDIDATES, SECOND_PILOT_SEEDS

    second = PRESETS["second_pilot"]
    e = {c.name: c for c in PILOT_CANDIDATES}["E"]
    assert [arm.name for arm in second.arms] == ["grpo@E", "grpo_no_trust_region@E"]
    assert all(arm.run_settings(second.settings) == e.run_settings() for arm in second.arms)
    grid = PILOT_GRIDS["second_pilot"]
    assert grid.candidates == (e,) and grid.order == ("E",) and grid.seeds == SECOND_PILOT_SEEDS
    assert grid.control_alpha == CONTROL_ALPHA == pytest.approx(0.01)
    assert PILOT_GRIDS["pilot"].seeds == PRESETS["pilot"].seeds


def test_the_pilot_runs_grpo_family_arms_only_over_every_candidate_regime():
    from maspo_verl.sandbox.presets import PILOT_CANDIDATES

    pilot = PRESETS["pilot"]
    assert {arm.method for arm in pilot.arms} == {"grpo", "grpo_no_trust_region"}
    names = {arm.name: arm for arm in pilot.arms}
    for candidate in PILOT_CANDIDATES:
        grpo, control = names[f"grpo@{candidate.name}"], names[f"grpo_no_trust_region@{candidate.name}"]
        assert grpo.run_settings(pilot.settings) == candidate.run_settings() == control.run_settings(pilot.settings)
        assert control.baseline == grpo.name and control.expected == "different"
    assert len(pilot.arms) == 2 * len(PILOT_CANDIDATES), "GRPO and its control per candidate, nothing else"
    candidate = {c.name: c for c in PILOT_CANDIDATES}[REGIME.name]
    assert replace(REGIME, seed_sd=candidate.seed_sd) == candidate, "the regime is one of the pilot's candidates"
    from maspo_verl.sandbox.presets import EARLIER_PILOT_SEED_SD, REGIME_PICKED_BY_PILOT

    if not REGIME_PICKED_BY_PILOT:
        assert REGIME == PILOT_CANDIDATES[0] and REGIME.seed_sd == EARLIER_PILOT_SEED_SD, "provisional: A, sd 0.03"


def test_the_pilot_draws_the_candidates_cheapest_first():
    from maspo_verl.sandbox.pilot import CONTROL_ALPHA, DRAW_ORDER
    from maspo_verl.sandbox.presets import PILOT_CANDIDATES

    by_name = {c.name: c for c in PILOT_CANDIDATES}
    assert sorted(DRAW_ORDER) == sorted(by_name)

    def work(name):  # responses trained on, then steps (per-step overhead)
        c = by_name[name]
        return (c.train_batch_size * c.steps, c.steps)

    assert [work(name) for name in DRAW_ORDER] == sorted(work(name) for name in DRAW_ORDER)
    assert CONTROL_ALPHA == pytest.approx(0.05 / len(PILOT_CANDIDATES))


def test_trust_region_arms_carry_the_overrides_they_name():
    from maspo_verl.sandbox.presets import GRPO_LOSS_MODE, MATCHED_SIGMA_BASE

    actor, maspo = "actor_rollout_ref.actor", "actor_rollout_ref.actor.policy_loss.maspo"
    assert GRPO_LOSS_MODE == "vanilla_with_ratio_stats"
    for name in ("grpo", "grpo_no_dual_clip", "grpo_no_trust_region", "clip_higher", "entropy_advantage"):
        assert METHODS[name].loss_mode == GRPO_LOSS_MODE, f"{name} logs the ratio statistics GRPO's arms report"
    assert METHODS["grpo"].overrides == ()
    assert METHODS["grpo_no_trust_region"].overrides == (
        f"{actor}.clip_ratio_low=1",
        f"{actor}.clip_ratio_high=1e6",
        f"{actor}.clip_ratio_c=1e6",
    )
    assert METHODS["grpo_no_dual_clip"].overrides == (f"{actor}.clip_ratio_c=1e6",)
    assert METHODS["maspo"].overrides == () and METHODS["maspo"].loss_mode == "maspo", "MASPO: no dual clip"
    assert METHODS["maspo_dual_clip"].overrides == (f"{maspo}.clip_ratio_c=3.0",)
    assert METHODS["maspo_hard_gate"].overrides == (f"{maspo}.gate=hard",), "hard gate with verl's dual clip 3"
    assert METHODS["maspo_hard_gate_no_dual_clip"].overrides == (f"{maspo}.gate=hard", f"{actor}.clip_ratio_c=1e6")
    assert METHODS["dac"].overrides == (f"{actor}.clip_ratio_c=10",)
    assert METHODS["dac_c3"].overrides == (f"{actor}.clip_ratio_c=3",)
    # equal outward gradient area: eps (GRPO's box) = sigma sqrt(pi/2) (the gate's Gaussian), eps = 0.2
    assert MATCHED_SIGMA_BASE == pytest.approx(0.16) and 0.2 * (2 / 3.141592653589793) ** 0.5 == pytest.approx(
        MATCHED_SIGMA_BASE, abs=0.005
    )
    assert METHODS["maspo_matched_sigma"].overrides == (f"{maspo}.sigma_base=0.16", f"{maspo}.sigma_high=1.6")
    # MASPO's whole width profile at 0.16 of its size: every token's sigma_pos and sigma_neg scale alike
    import torch

    from maspo_verl import MaspoConfig
    from maspo_verl.gate import trust_region_widths

    def widths(**overrides):
        config = MaspoConfig(**overrides)
        keys = ("sigma_base", "alpha", "beta_pos", "beta_neg", "sigma_high", "adv_low", "adv_high")
        return trust_region_widths(old_log_prob, advantages, **{key: getattr(config, key) for key in keys})

    generator = torch.Generator().manual_seed(0)
    old_log_prob = -torch.rand(4, 64, generator=generator) * 12  # p from 1 down to 6e-6: past the limiter's cap
    advantages = torch.randn(4, 64, generator=generator) * 20  # past the risk controller's clamps
    default, matched = widths(), widths(sigma_base=0.16, sigma_high=1.6)
    for full_size, scaled in zip(default, matched, strict=True):
        torch.testing.assert_close(scaled, 0.16 * full_size)
    assert (default[0] == default[0].max()).any(), "some token reaches the cap"
    decomposition = {arm.method for arm in PRESETS["decomposition"].arms}
    assert decomposition == {
        "grpo",
        "grpo_no_dual_clip",
        "grpo_no_trust_region",
        "maspo",
        "maspo_dual_clip",
        "maspo_hard_gate",
        "maspo_hard_gate_no_dual_clip",
        "maspo_matched_sigma",
    }
    assert "equal outward gradient area" in PRESETS["decomposition"].reason
    # it takes full's difference apart: the same seeds, so full's GRPO, MASPO and control runs are its own
    assert PRESETS["decomposition"].seeds == PRESETS["full"].seeds
    methods = [arm for arm in PRESETS["decomposition"].arms if arm.method != "grpo_no_trust_region"]
    planned = planned_minimum_detectable_difference(
        REGIME.seed_sd, len(PRESETS["decomposition"].seeds), len(methods) - 1
    )
    assert planned < 0.10, f"the decomposition's 6-method family is a test, not a screen ({planned:.3f})"
    assert all("bapo" not in arm.method for name in TRUST_REGION_PRESETS for arm in PRESETS[name].arms)


def test_ablations_reuse_fulls_seeds_and_test_moderate_effects():
    ablations = PRESETS["ablations"]
    # MASPO, its hard gate, GRPO and the control already ran on full's seeds: the same runs, reused
    assert ablations.seeds == PRESETS["full"].seeds
    shared = {"maspo", "maspo_hard_gate", "grpo", "grpo_no_trust_region"}
    for preset in ("full", "decomposition"):
        other = {arm.name: arm for arm in PRESETS[preset].arms}
        for arm in ablations.arms:
            if arm.name in shared and arm.name in other:
                theirs = other[arm.name]
                assert arm.run_settings(ablations.settings) == theirs.run_settings(PRESETS[preset].settings)
                assert replace(arm, baseline=None) == replace(theirs, baseline=None), "only the pairing differs"
    assert not [arm for arm in ablations.arms if arm.sanity], "no lr-0 line in the regime, as in full"
    methods = [arm for arm in ablations.arms if arm.baseline == "maspo"]
    planned = planned_minimum_detectable_difference(REGIME.seed_sd, len(ablations.seeds), len(methods))
    assert len(methods) == 3 and planned < 0.04, f"three ablations against MASPO, MDE {planned:.3f}"


def test_ablations_matched_switch_off_one_component_of_the_matched_arm_on_reused_runs():
    from maspo_verl.sandbox.presets import MATCHED_SIGMA_BASE

    preset = PRESETS["ablations_matched"]
    assert preset.seeds == PRESETS["full"].seeds
    arms = {arm.name: arm for arm in preset.arms}
    # the matched arm, the hard gate without dual clip, GRPO and the control are decomposition's (and full's) runs
    reused = {"maspo_matched_sigma", "maspo_hard_gate_no_dual_clip", "grpo", "grpo_no_trust_region"}
    theirs = {arm.name: arm for arm in PRESETS["decomposition"].arms}
    for name in reused:
        assert arms[name].run_settings(preset.settings) == theirs[name].run_settings(PRESETS["decomposition"].settings)
        assert replace(arms[name], baseline=None) == replace(theirs[name], baseline=None), "only the pairing differs"
    ablations = [arm for arm in preset.arms if arm.baseline == "maspo_matched_sigma"]
    assert {arm.name for arm in ablations} == {
        "maspo_hard_gate_no_dual_clip",
        "maspo_matched_sigma_no_mass_adaptive",
        "maspo_matched_sigma_no_risk_control",
    }
    matched = set(METHODS["maspo_matched_sigma"].overrides)
    assert f"{MASPO_KEY}.sigma_base={MATCHED_SIGMA_BASE}" in matched
    for name, switch in (("no_mass_adaptive", "mass_adaptive=false"), ("no_risk_control", "risk_control=false")):
        arm = arms[f"maspo_matched_sigma_{name}"]
        overrides = set(METHODS[arm.method].overrides)
        assert overrides - matched == {f"{MASPO_KEY}.{switch}"} and matched <= overrides and not arm.overrides, (
            "one component off, sigma_base and sigma_high unchanged"
        )
        assert arm.run_settings(preset.settings) == arms["maspo_matched_sigma"].run_settings(preset.settings)
    assert not [arm for arm in preset.arms if arm.sanity]
    planned = planned_minimum_detectable_difference(REGIME.seed_sd, len(preset.seeds), len(ablations))
    assert planned < 0.04, f"MDE {planned:.3f}"


def test_the_width_sweep_scales_maspos_whole_profile_and_draws_only_the_middle_width_anew():
    from maspo_verl.config import MaspoConfig
    from maspo_verl.sandbox.presets import MATCHED_SIGMA_BASE, MIDDLE_SIGMA_BASE

    preset = PRESETS["width_sweep"]
    assert preset.seeds == PRESETS["full"].seeds
    assert MIDDLE_SIGMA_BASE == 0.4 == round((MATCHED_SIGMA_BASE * MaspoConfig().sigma_base) ** 0.5, 2)
    width_keys = {f"{MASPO_KEY}.sigma_base", f"{MASPO_KEY}.sigma_high"}
    widths = {}
    for arm in preset.arms:
        assert arm.overrides == () and arm.run_settings(preset.settings) == REGIME.run_settings()
        if METHODS[arm.method].loss_mode != "maspo":
            continue
        keys = dict(o.rsplit("=", 1) for o in METHODS[arm.method].overrides)
        assert set(keys) <= width_keys, f"{arm.name}: the width alone changes, not {set(keys) - width_keys}"
        base = float(keys.get(f"{MASPO_KEY}.sigma_base", MaspoConfig().sigma_base))
        high = float(keys.get(f"{MASPO_KEY}.sigma_high", MaspoConfig().sigma_high))
        assert high == pytest.approx(MaspoConfig().sigma_high / MaspoConfig().sigma_base * base), "the cap scales too"
        widths[base] = arm
    assert sorted(widths) == [MATCHED_SIGMA_BASE, MIDDLE_SIGMA_BASE, 1.0]
    assert all(arm.baseline == "grpo" for arm in widths.values()), "each width against GRPO"
    # only the middle width is new: the others are full's and decomposition's runs
    drawn = {arm.name: arm for name in ("full", "decomposition") for arm in PRESETS[name].arms}
    assert [arm.name for arm in preset.arms if arm.name not in drawn] == ["maspo_middle_sigma"]
    for arm in preset.arms:
        if arm.name in drawn:
            assert replace(arm, baseline=None) == replace(drawn[arm.name], baseline=None)
    # the two steps between the widths add up to decomposition's width step
    steps = [(c.arm, c.other) for c in preset.contrasts]
    assert steps == [("maspo", "maspo_middle_sigma"), ("maspo_middle_sigma", "maspo_matched_sigma")]
    assert [(c.arm, c.other) for c in PRESETS["decomposition"].contrasts if c.name == "width"] == [
        ("maspo", "maspo_matched_sigma")
    ]
    mde = [planned_minimum_detectable_difference(REGIME.seed_sd, len(preset.seeds), k) for k in (3, 2, 1)]
    assert [round(100 * d, 1) for d in mde] == [3.4, 3.1, 2.5], "the protocol's figures"


def test_a_regime_and_run_settings_refuse_what_the_pilot_rule_cannot_read():
    from maspo_verl.sandbox.presets import PILOT_CANDIDATES, Regime

    by_name = {c.name: c for c in PILOT_CANDIDATES}

    with pytest.raises(ValueError, match="test_freq"):
        Regime("X", 16, 16, 1e-4, 20, 120, 3, 5, 0.03)
    with pytest.raises(ValueError, match="updates_per_batch"):
        Regime("X", 16, 5, 1e-4, 20, 120, 2, 5, 0.03)
    with pytest.raises(ValueError, match="--val-last-k"):
        RunSettings(val_last_k=3).validate()  # validations at 10 and 20 only
    assert RunSettings().validation_steps == [0, 10, 20]
    a, d = by_name["A"], by_name["D"]
    assert a.run_settings().validation_steps[-a.val_last_k :] == [12, 14, 16, 18, 20]
    assert d.run_settings().validation_steps[-d.val_last_k :] == [24, 28, 32, 36, 40]


# ---------------------------------------------------------------------------------------------------------------
# The statistics' rules as the report applies them


def _seeded_runs(arm, finals, start=0.2, **extra):
    return [
        RunResult(
            arm,
            seed,
            True,
            1.0,
            f"/runs/{arm}-seed{seed}",
            summary={
                "val_acc_start": start,
                "val_acc_final": value,
                "val_acc_last_k": value,
                "val_acc_rise": value - start,
                **{key: values[seed] for key, values in extra.items()},
            },
        )
        for seed, value in enumerate(finals)
    ]


def test_a_screen_gives_differences_and_no_verdicts():
    base = [0.40, 0.45, 0.38]
    arms = [Arm("grpo", "grpo", "GRPO")] + [Arm(f"m{i}", "maspo", f"M{i}", "grpo") for i in range(6)]
    results = _seeded_runs("grpo", base)
    for i in range(6):
        results += _seeded_runs(f"m{i}", [b + 0.2 + 0.01 * (i + 1) * (s - 1) for s, b in enumerate(base)])
    analysis = analyse(arms, results, RunSettings(), pilot_seed_sd=0.03, primary="val_acc_last_k")
    assert analysis["design"]["kind"] == "screen" and analysis["planned"]["minimum_detectable_difference"] > 0.10
    verdicts = {analysis["paired"][f"m{i}"]["val_acc_last_k"]["verdict"] for i in range(6)}
    assert verdicts == {"screen: no verdict"}, "a +20-point difference in every seed still gets no verdict"
    assert analysis["paired"]["m1"]["val_acc_last_k"]["verdict_if_tested"] == "better"
    table = format_table(arms, analysis, RunSettings())
    assert "A SCREEN, not a test" in table and "screen: no verdict" in table
    assert f"mean of the last {RunSettings().val_last_k} validations" in table, "k is named, not left as 'k'"


def test_identical_per_seed_differences_give_no_p_and_no_verdict():
    arms = [Arm("grpo", "grpo", "GRPO"), Arm("maspo", "maspo", "MASPO", "grpo")]
    results = _seeded_runs("grpo", [0.40, 0.45]) + _seeded_runs("maspo", [0.45, 0.50])
    analysis = analyse(arms, results, RunSettings(), pilot_seed_sd=0.001)
    comparison = analysis["paired"]["maspo"]["val_acc_final"]
    assert comparison["difference"] == pytest.approx(0.05) and comparison["p_value"] is None
    assert comparison["verdict"] == "no test (identical per-seed differences)"
    assert "Identical per-seed differences" in format_table(arms, analysis, RunSettings())
    assert analysis["realised"] is None, "no spread: no realised MDE (it would print as 0)"


def test_the_problem_level_standard_error_stands_beside_the_between_seed_sd():
    problems = [f"p{i}" for i in range(8)]
    grpo = [{p: 0.5 for p in problems}, {p: 0.25 for p in problems}, {p: 0.5 for p in problems}]
    maspo = [{p: 0.5 + (0.125 if i % 2 else -0.125) for i, p in enumerate(problems)}, grpo[1], grpo[2]]
    arms = [Arm("grpo", "grpo", "GRPO"), Arm("maspo", "maspo", "MASPO", "grpo")]
    results = _seeded_runs("grpo", [0.40, 0.45, 0.41], val_problem_acc_last_k=grpo) + _seeded_runs(
        "maspo", [0.42, 0.44, 0.45], val_problem_acc_last_k=maspo
    )
    analysis = analyse(arms, results, RunSettings(), pilot_seed_sd=0.03, primary="val_acc_last_k")
    comparison = analysis["paired"]["maspo"]["val_acc_last_k"]
    seed0 = 0.125 * (8 / 7) ** 0.5 / 8**0.5  # sd (ddof 1) of eight +-0.125 differences over sqrt(8)
    assert comparison["problem_se_per_seed"] == pytest.approx([seed0, 0.0, 0.0])
    assert comparison["problem_se"] == pytest.approx((seed0**2 / 3) ** 0.5)
    assert comparison["between_seed_sd"] == pytest.approx(float(__import__("numpy").std([0.02, -0.01, 0.04], ddof=1)))
    assert "Evaluation noise: the problem-level SE" in format_table(arms, analysis, RunSettings())
    one_seed = [run for run in results if run.seed == 0]  # a problem-level SE, no between-seed sd
    analysis = analyse(arms, one_seed, RunSettings(), primary="val_acc_last_k")
    assert analysis["paired"]["maspo"]["val_acc_last_k"]["between_seed_sd"] is None
    note = next(line for line in format_table(arms, analysis, RunSettings()).splitlines() if "Evaluation" in line)
    assert f"is {seed0:.3f}-{seed0:.3f}." in note and "between-seed" not in note


def test_the_pilot_rule_picks_the_first_candidate_in_the_order_that_passes():
    from maspo_verl.sandbox.pilot import apply_pilot_rule, format_pilot
    from maspo_verl.sandbox.presets import Regime

    a = Regime("A", 16, 16, 2.5e-4, 20, 120, 2, 5, 0.03)
    b = Regime("B", 16, 16, 2.5e-4, 20, 80, 2, 5, 0.03)
    c = Regime("C", 16, 8, 5e-4, 20, 80, 2, 5, 0.03)
    d = Regime("D", 16, 8, 5e-4, 20, 80, 2, 5, 0.03)

    def curve(start, middle, end):
        return [[0, start], [10, middle], [20, end]]

    def candidate_runs(name, middle, control_shift, seconds, jitter=0.004):
        grpo_end = [0.40, 0.42, 0.41, 0.43, 0.40]
        grpo = _seeded_runs(
            f"grpo@{name}",
            grpo_end,
            start=0.25,
            val_curve=[curve(0.25, middle + e - 0.40, e) for e in grpo_end],
        )
        control = _seeded_runs(
            f"grpo_no_trust_region@{name}", [e + control_shift + jitter * (s % 2) for s, e in enumerate(grpo_end)]
        )
        for run in grpo + control:
            run.seconds = seconds
        return grpo + control

    results = (
        candidate_runs("A", middle=0.39, control_shift=-0.08, seconds=100)  # learning over by the middle
        # learning lasts, the control 1 point below at p 0.026 >= 0.05 / 5 = 0.01: not apart at the grid's threshold
        + candidate_runs("B", middle=0.33, control_shift=-0.015, seconds=150, jitter=0.012)
        + candidate_runs("C", middle=0.33, control_shift=-0.08, seconds=120)  # passes
        # the control 8 points below in every seed, all alike: no spread, no p, not apart
        + candidate_runs("D", middle=0.33, control_shift=-0.08, seconds=90, jitter=0.0)
    )
    arms = []
    for name in "ABCD":
        arms += [
            Arm(f"grpo@{name}", "grpo", "GRPO"),
            Arm(f"grpo_no_trust_region@{name}", "grpo_no_trust_region", "ctl", f"grpo@{name}", expected="different"),
        ]
    analysis = analyse(arms, results, RunSettings(), primary="val_acc_last_k")
    pilot = apply_pilot_rule(results, analysis, (a, b, c, d), order=("A", "B", "C", "D"))
    assert pilot["candidates"]["A"]["learning_lasts"] is False and pilot["candidates"]["A"]["control_apart"]
    assert pilot["candidates"]["B"]["learning_lasts"] and 0.01 < pilot["candidates"]["B"]["control_p"] < 0.05
    assert not pilot["candidates"]["B"]["control_apart"], "Bonferroni over the grid, not 0.05"
    assert pilot["candidates"]["C"]["passes"]
    assert pilot["candidates"]["D"]["control_p"] is None and not pilot["candidates"]["D"]["passes"]
    assert pilot["candidates"]["C"]["grpo_second_half_rise"] == pytest.approx(0.07)  # end - middle in every seed
    assert pilot["candidates"]["C"]["grpo_rise"] == pytest.approx(0.412 - 0.25)
    assert pilot["chosen"] == "C", "the first passing candidate in the order, whatever the wall time says"
    # sqrt(2) x GRPO's between-seed sd (0.0184) beats the control differences' sd (0.0022); rounded up to 0.005
    assert pilot["candidates"]["C"]["seed_sd"] == pytest.approx(0.02)
    assert "Chosen: C" in format_pilot(pilot) and "p - (apart: no)" in format_pilot(pilot)

    def rule_without(drop):
        kept = [r for r in results if not drop(r)]
        return apply_pilot_rule(
            kept, analyse(arms, kept, RunSettings(), primary="val_acc_last_k"), (a, b, c, d), ("A", "B", "C", "D")
        )

    no_b_control = rule_without(lambda r: r.arm == "grpo_no_trust_region@B")
    assert (no_b_control["chosen"], no_b_control["next"]) == (None, "B"), "C counts only once B was drawn"
    assert "draw candidate B next" in format_pilot(no_b_control)
    assert "--arms grpo@A,grpo_no_trust_region@A,grpo@B,grpo_no_trust_region@B)" in format_pilot(no_b_control)
    second = apply_pilot_rule(
        results, analysis, (a, b, c, d), ("B", "A", "C", "D"), control_alpha=0.05, preset="second_pilot"
    )
    assert second["chosen"] == "B" and second["control_alpha"] == 0.05, "B's p 0.026 passes at 0.05"
    no_b_second = apply_pilot_rule(
        no_b_control_results := [r for r in results if r.arm != "grpo_no_trust_region@B"],
        analyse(arms, no_b_control_results, RunSettings(), primary="val_acc_last_k"),
        (a, b, c, d),
        ("B", "A", "C", "D"),
        preset="second_pilot",
    )
    assert "(--preset second_pilot --arms grpo@B,grpo_no_trust_region@B)" in format_pilot(no_b_second)
    four_seeds = rule_without(lambda r: r.arm.endswith("@B") and r.seed == 4)
    assert (four_seeds["chosen"], four_seeds["next"]) == (None, "B"), "a candidate counts once all its seeds ran"
    assert "4 seeds finished" in format_pilot(four_seeds)
    with pytest.raises(ValueError, match="must name each candidate"):
        apply_pilot_rule(results, analysis, (a, b, c, d), ("A", "B", "C"))


def test_summarize_run_reads_the_primary_outcome_over_the_last_k_validations_and_its_problems(tmp_path):
    """verl's file logger and validation dumps of a run validated at steps 0, 2, 4, 6: the mean of the last k = 2."""
    key = f"val-core/{WarmupSettings().task.data_source}/acc/mean@2"
    accuracies = {0: 0.25, 2: 0.5, 4: 0.75, 6: 1.0}
    lines = [json.dumps({"step": step, "data": {key: value}}) for step, value in accuracies.items()]
    lines += [
        json.dumps({"step": step, "data": {"critic/score/mean": 0.1 * step, "actor/ratio/p99_neg": 1.5}})
        for step in range(1, 7)
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    dumps = tmp_path / "val_generations"
    dumps.mkdir()
    for step, accuracy in accuracies.items():  # two problems x two samples; problem "a" right from step 4 on
        right_a, right_b = (step >= 4, step >= 4), (step >= 2, step == 6)
        records = [
            {"input": prompt, "output": "x", "score": float(correct), "data_source": "tiny_sort"}
            for prompt, outcomes in (("1=", right_a), ("2=", right_b))
            for correct in outcomes
        ]
        (dumps / f"{step}.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    settings = RunSettings(steps=6, test_freq=2, val_n=2, pass_k=2, val_last_k=2)
    summary = runs.summarize_run(tmp_path, settings)
    assert summary["val_acc_final"] == 1.0 and summary["val_acc_last_k"] == pytest.approx(0.875)
    assert summary["val_last_k_steps"] == [4, 6] and summary["val_curve"] == [[s, a] for s, a in accuracies.items()]
    assert summary["val_problem_acc_last_k"] == {"tiny_sort/1=": 1.0, "tiny_sort/2=": 0.75}
    assert summary["ratio/p99_neg_mean"] == pytest.approx(1.5), "GRPO's ratio statistics reach the summary"
    one = runs.summarize_run(tmp_path, replace(settings, val_last_k=1))
    assert one["val_acc_last_k"] == one["val_acc_final"] == 1.0


def test_the_comparison_is_split_by_part_with_one_summarize_run_and_the_command_line_in_compare():
    import inspect
    from pathlib import Path

    import maspo_verl.sandbox as sandbox

    sources = {path.name: path.read_text() for path in Path(sandbox.__file__).parent.glob("*.py")}
    assert sum(text.count("\ndef summarize_run(") for text in sources.values()) == 1
    assert "\ndef summarize_run(" in sources["runs.py"] and compare.summarize_run is runs.summarize_run
    assert {"presets.py", "runs.py", "analysis.py", "report.py", "pilot.py", "compare.py"} <= set(sources)
    assert "\ndef main(" in sources["compare.py"] and 'if __name__ == "__main__":' in sources["compare.py"]
    assert inspect.getmodule(compare.main) is compare
    for part in ("presets.py", "runs.py", "analysis.py", "report.py", "pilot.py"):  # no part reaches the CLI
        assert "sandbox.compare" not in sources[part].replace("python -m maspo_verl.sandbox.compare", ""), part


def test_the_decomposition_takes_maspo_minus_grpo_apart_into_steps_that_add_up():
    from maspo_verl.sandbox.presets import DECOMPOSITION_CONTRASTS
    from maspo_verl.sandbox.report import format_contrasts

    preset = PRESETS["decomposition"]
    assert preset.contrasts == DECOMPOSITION_CONTRASTS
    chain = [(c.arm, c.other) for c in preset.contrasts[:4]]
    assert chain[0][0] == "maspo" and chain[-1][1] == "grpo", "from MASPO down to GRPO"
    assert all(a[1] == b[0] for a, b in zip(chain, chain[1:], strict=False)), "each step starts where the last ended"
    # after the chain, the dual clip at the 2x2's other corners: no dual clip minus dual clip, as in the chain
    extras = {c.name: (c.arm, c.other) for c in preset.contrasts[4:]}
    assert extras == {
        "dual_clip_soft_gate": ("maspo", "maspo_dual_clip"),
        "dual_clip_grpo": ("grpo_no_dual_clip", "grpo"),
    }
    from maspo_verl.sandbox.presets import MASPO_KEY, NO_DUAL_CLIP

    overrides = {c.arm: set(METHODS[c.arm].overrides) for c in preset.contrasts}
    assert overrides["maspo"] == set()
    assert overrides["maspo_matched_sigma"] == {f"{MASPO_KEY}.sigma_base=0.16", f"{MASPO_KEY}.sigma_high=1.6"}
    # shape: the gate and the width it is matched at; neither has a dual clip (the soft gate's is opt-in)
    assert overrides["maspo_hard_gate_no_dual_clip"] == {f"{MASPO_KEY}.gate=hard", *NO_DUAL_CLIP}
    assert overrides["maspo_hard_gate_no_dual_clip"] - overrides["maspo_hard_gate"] == set(NO_DUAL_CLIP)
    assert METHODS["maspo_hard_gate"].loss_mode == "maspo" and METHODS["grpo"].loss_mode == "vanilla_with_ratio_stats"

    values = {
        "grpo": [0.40, 0.42, 0.41],
        "maspo_hard_gate": [0.41, 0.42, 0.43],
        "maspo_hard_gate_no_dual_clip": [0.39, 0.43, 0.42],
        "maspo_matched_sigma": [0.40, 0.40, 0.44],
        "maspo": [0.36, 0.38, 0.37],
    }
    arms = [arm for arm in preset.arms if arm.name in values]
    results = [r for name, finals in values.items() for r in _seeded_runs(name, finals)]
    analysis = analyse(arms, results, RunSettings(), 0.03, "val_acc_last_k", preset.contrasts)
    drawn = analysis["contrasts"]
    assert list(drawn) == ["width", "shape", "dual_clip", "adaptive"]
    assert drawn["width"]["per_seed"] == pytest.approx([-0.04, -0.02, -0.07])
    total = [sum(parts) for parts in zip(*(c["per_seed"] for c in drawn.values()), strict=True)]
    assert total == pytest.approx(analysis["paired"]["maspo"]["val_acc_last_k"]["per_seed"]), "they add up"
    assert all("verdict" not in c and c["descriptive"] for c in drawn.values())
    text = format_contrasts(analysis)
    assert (
        "- width: maspo - maspo_matched_sigma" in text
        and "sum of width + shape + dual_clip + adaptive per seed: -0.040, -0.040, -0.040" in text
    )
    assert format_contrasts(analyse(arms[:2], results, RunSettings())) == "", "no contrasts, no lines"
    without = [r for r in results if r.arm != "maspo_matched_sigma"]
    assert set(analyse(arms, without, RunSettings(), None, "val_acc_last_k", preset.contrasts)["contrasts"]) == {
        "dual_clip",
        "adaptive",
    }, "a contrast whose arm has no run is left out"
    broken = [r for r in results if r.arm != "maspo_hard_gate_no_dual_clip"]
    text = format_contrasts(analyse(arms, broken, RunSettings(), None, "val_acc_last_k", preset.contrasts))
    assert "- width:" in text and "- adaptive:" in text and "sum" not in text, "no sum over a broken chain"

    with pytest.raises(ValueError, match="names \\['nope'\\]"):
        replace(preset, contrasts=(replace(DECOMPOSITION_CONTRASTS[0], other="nope"),))

    # with the corners drawn too, the extras are listed but stay out of the sum
    values |= {"maspo_dual_clip": [0.38, 0.37, 0.40], "grpo_no_dual_clip": [0.41, 0.42, 0.40]}
    arms = [arm for arm in preset.arms if arm.name in values]
    results = [r for name, finals in values.items() for r in _seeded_runs(name, finals)]
    analysis = analyse(arms, results, RunSettings(), 0.03, "val_acc_last_k", preset.contrasts)
    assert list(analysis["contrasts"]) == ["width", "shape", "dual_clip", "adaptive", *extras]
    assert analysis["contrasts"]["dual_clip_soft_gate"]["per_seed"] == pytest.approx([-0.02, 0.01, -0.03])
    assert analysis["contrasts"]["dual_clip_grpo"]["per_seed"] == pytest.approx([0.01, 0.0, -0.01])
    text = format_contrasts(analysis)
    assert "- dual_clip_grpo: grpo_no_dual_clip - grpo" in text
    assert "sum of width + shape + dual_clip + adaptive per seed: -0.040, -0.040, -0.040" in text

"""maspo_verl.experiments.evaluation: unbiased pass@k, the paper's table from verl's validation dumps, and the
training-dynamics plot."""

from __future__ import annotations

import json
import math

import pytest

from maspo_verl.experiments.evaluation.pass_at_k import (
    format_table,
    latest_dump,
    load_generations,
    pass_at_k,
    summarize,
)
from maspo_verl.experiments.evaluation.pass_at_k import main as table_main
from maspo_verl.experiments.evaluation.plot import load_log, plot_runs
from maspo_verl.experiments.evaluation.plot import main as plot_main

pytestmark = pytest.mark.kind("unit")


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 2, 1, 2 / 5),  # pass@1 is the fraction correct
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
        (4, 0, 2, 0.0),
        (4, 4, 4, 1.0),
        (32, 1, 32, 1.0),  # one correct sample among 32 passes at k=32
        (32, 0, 32, 0.0),
        (6, 4, 3, 1.0),  # fewer than k wrong samples: every k-subset holds a correct one
    ],
)
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_the_binomial_formula_for_large_n():
    n, c, k = 200, 7, 32
    assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), rel=1e-12)


@pytest.mark.parametrize(("n", "c", "k"), [(4, 5, 1), (4, -1, 1), (4, 2, 5), (4, 2, 0)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def write_dump(path, outcomes, step=10):
    """A verl validation dump: {data_source: {problem: [acc, ...]}} -> <step>.jsonl lines as verl writes them."""
    path.mkdir(parents=True, exist_ok=True)
    with open(path / f"{step}.jsonl", "w") as handle:
        for source, problems in outcomes.items():
            for problem, accs in problems.items():
                for index, acc in enumerate(accs):
                    record = {
                        "input": f"{source}:{problem}",
                        "output": "...",
                        "gts": "1",
                        "score": acc,
                        "step": step,
                        "reward": acc,
                        "acc": acc,
                        "pred": "1",
                        "data_source": source,
                        "uid": f"{problem}-uid_0_{index}",
                    }
                    handle.write(json.dumps(record) + "\n")
    return path


OUTCOMES = {
    "math500": {"p1": [1.0, 1.0, 0.0, 0.0], "p2": [0.0, 0.0, 0.0, 0.0]},
    "aime24": {"q1": [1.0, 0.0, 0.0, 0.0], "q2": [1.0, 1.0, 1.0, 1.0]},
}


def test_table_per_benchmark_hand_computed(tmp_path):
    results = {
        r.name: r for r in summarize(load_generations(str(latest_dump(str(write_dump(tmp_path, OUTCOMES))))), k=2)
    }
    assert [r for r in results] == ["aime24", "math500"]  # the paper's column order
    # aime24: Avg = 5/8; Pass@2 = mean(1 - C(3,2)/C(4,2), 1) = mean(0.5, 1)
    assert results["aime24"].average == pytest.approx(62.5)
    assert results["aime24"].pass_k == pytest.approx(75.0)
    # math500: Avg = 2/8; Pass@2 = mean(1 - C(2,2)/C(4,2), 0) = mean(5/6, 0)
    assert results["math500"].average == pytest.approx(25.0)
    assert results["math500"].pass_k == pytest.approx(100 * 5 / 12)
    assert (results["math500"].num_problems, results["math500"].samples_per_problem) == (2, 4)
    table = format_table([("MASPO", list(results.values()))], k=2)
    assert "| Method | AIME24 | MATH500 | Avg. |" in table
    assert "| MASPO | 62.5 / 75.0 | 25.0 / 41.7 | 43.8 / 58.3 |" in table


def test_cli_compares_runs_and_reads_the_latest_step(tmp_path, capsys):
    maspo = write_dump(tmp_path / "maspo", OUTCOMES, step=5)
    write_dump(maspo, {"math500": {"p1": [1.0] * 4}}, step=20)
    grpo = write_dump(tmp_path / "grpo", {"math500": {"p1": [0.0, 0.0, 0.0, 1.0]}})
    assert table_main([str(maspo), str(grpo), "--label", "MASPO", "--label", "GRPO", "--k", "4"]) == 0
    out = capsys.readouterr().out
    assert "| MASPO | 100.0 / 100.0 | 100.0 / 100.0 |" in out  # step 20, not step 5
    assert "| GRPO | 25.0 / 100.0 | 25.0 / 100.0 |" in out
    assert table_main([str(maspo), "--step", "5", "--k", "4"]) == 0
    assert "AIME24" in capsys.readouterr().out


def test_too_few_samples_or_no_dump_is_a_clear_error(tmp_path, capsys):
    dump = write_dump(tmp_path / "run", OUTCOMES)
    assert table_main([str(dump), "--k", "32"]) == 1
    assert "fewer than k=32" in capsys.readouterr().err
    assert table_main([str(tmp_path / "nothing")]) == 1
    assert "no such" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text('{"input": "x"}\n')
    assert table_main([str(tmp_path / "bad.jsonl"), "--k", "1"]) == 1
    assert "bad.jsonl:1" in capsys.readouterr().err


def synthetic_log(path, steps=12, slope=0.02):
    with open(path, "w") as handle:
        for step in range(1, steps + 1):
            data = {
                "critic/score/mean": slope * step,
                "actor/entropy": 0.6 - 0.01 * step,
                "response_length/mean": 2000.0 + 10 * step,
                "actor/pg_clipfrac": 0.05,
                "actor/maspo/gated_frac_pos": 0.1,
                "actor/maspo/sigma_pos_mean": 1.4,
                "timing_s/step": 3.0,
            }
            if step % 4 == 0:
                data |= {"val-core/aime24/acc/mean@32": 0.2 + slope * step, "val-core/math500/acc/mean@32": 0.8}
            handle.write(json.dumps({"step": step, "data": data}) + "\n")
    return str(path)


def assert_png(path):
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width = matplotlib.image.imread(str(path)).shape[:2]
    assert height > 200 and width > 200


def test_plot_writes_a_png_with_the_dynamics_panels(tmp_path):
    runs = [
        load_log(synthetic_log(tmp_path / "maspo.jsonl")),
        load_log(synthetic_log(tmp_path / "grpo.jsonl", slope=0.01)),
    ]
    assert runs[0]["val-core/aime24/acc/mean@32"][0] == (4, pytest.approx(0.28))
    titles = plot_runs(runs, ["MASPO", "GRPO"], str(tmp_path / "out" / "dynamics.png"))
    assert titles[:4] == [
        "Training reward",
        "Policy entropy",
        "Response length (tokens)",
        "Validation accuracy, mean over benchmarks",
    ]
    assert {"MASPO: gated_frac_pos", "MASPO: sigma_pos_mean"} <= set(titles)
    assert_png(tmp_path / "out" / "dynamics.png")


def test_a_run_keeps_its_legend_colour_in_panels_other_runs_lack(tmp_path, monkeypatch):
    """GRPO has no MASPO metrics: MASPO's line in a MASPO panel must still be MASPO's colour, not
    the colour the legend gives GRPO."""
    import matplotlib.pyplot as plt

    grpo_log = tmp_path / "grpo.jsonl"
    with open(grpo_log, "w") as handle:
        for step in range(1, 6):
            handle.write(json.dumps({"step": step, "data": {"critic/score/mean": 0.1 * step}}) + "\n")
    runs = [load_log(str(grpo_log)), load_log(synthetic_log(tmp_path / "maspo.jsonl"))]
    figures = []
    monkeypatch.setattr(plt, "close", lambda figure=None: figures.append(figure))
    titles = plot_runs(runs, ["GRPO", "MASPO"], str(tmp_path / "colours.png"))
    axes = figures[0].axes
    reward = axes[titles.index("Training reward")]
    legend_colour = {line.get_label(): line.get_color() for line in reward.get_lines()}
    assert legend_colour["GRPO"] != legend_colour["MASPO"]
    maspo_panel = axes[titles.index("MASPO: sigma_pos_mean")]
    assert [(line.get_label(), line.get_color()) for line in maspo_panel.get_lines()] == [
        ("MASPO", legend_colour["MASPO"])
    ]


def test_plot_reads_a_tensorboard_folder(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "tb"))
    for step in range(1, 6):
        writer.add_scalar("critic/score/mean", 0.1 * step, step)
        writer.add_scalar("actor/maspo/gate_weight_mean", 0.9, step)
    writer.close()
    assert plot_main([str(tmp_path / "tb"), "-o", str(tmp_path / "tb.png")]) == 0
    assert_png(tmp_path / "tb.png")


def test_plot_errors_name_the_problem(tmp_path, capsys):
    (tmp_path / "bad.jsonl").write_text("not json\n")
    assert plot_main([str(tmp_path / "bad.jsonl")]) == 1
    assert "bad.jsonl:1" in capsys.readouterr().err
    (tmp_path / "other.jsonl").write_text(json.dumps({"step": 1, "data": {"timing_s/step": 1.0}}) + "\n")
    assert plot_main([str(tmp_path / "other.jsonl"), "-o", str(tmp_path / "x.png")]) == 1
    assert "none of the plotted metrics" in capsys.readouterr().err


def test_a_resumed_runs_metrics_parts_are_read_together(tmp_path):
    """verl's FileLogger restarts metrics.jsonl on resume; the scripts keep the old file as metrics.part<N>.jsonl."""

    def write(name, records):
        (tmp_path / name).write_text("".join(json.dumps({"step": step, "data": data}) + "\n" for step, data in records))

    write("metrics.part1.jsonl", [(0, {"val-core/aime24/acc/mean@4": 0.1}), (1, {"critic/score/mean": 0.2})])
    write("metrics.part2.jsonl", [(2, {"critic/score/mean": 0.3})])  # killed again after step 2
    # the resumed run validates again at its resumed step, then trains on
    write("metrics.jsonl", [(2, {"val-core/aime24/acc/mean@4": 0.4}), (3, {"critic/score/mean": 0.5})])
    write("metrics.part10.jsonl", [])  # numeric order, not text order: part10 after part2
    write("other.part1.jsonl", [(9, {"critic/score/mean": 9.0})])  # another log's part
    series = load_log(str(tmp_path / "metrics.jsonl"))
    assert series["critic/score/mean"] == [(1, 0.2), (2, 0.3), (3, 0.5)]
    assert series["val-core/aime24/acc/mean@4"] == [(0, 0.1), (2, 0.4)]
    (tmp_path / "metrics.jsonl").unlink()  # killed before the resumed run logged anything
    assert load_log(str(tmp_path / "metrics.jsonl"))["critic/score/mean"] == [(1, 0.2), (2, 0.3)]
    write("metrics.part2.jsonl", [(2, {"critic/score/mean": 0.7})])
    assert load_log(str(tmp_path / "metrics.jsonl"))["critic/score/mean"][-1] == (2, 0.7)

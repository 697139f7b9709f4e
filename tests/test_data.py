"""Tests of the GLUE and instruction-data loaders, metrics and tokenisation."""

from __future__ import annotations

import math

import datasets
import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer

from mlorc_lab.data import (
    DATA_DIR_ENV,
    IGNORE_INDEX,
    GlueCollator,
    InstructCollator,
    encode_glue,
    encode_instruct,
    extract_gsm8k_answer,
    format_prompt,
    get_glue_task,
    glue_metrics,
    load_code_alpaca,
    load_codefeedback,
    load_glue_split,
    load_gsm8k,
    load_metamathqa,
    read_glue_tsv,
    resolve_data_dir,
    tokenize_prompt_response,
)
from mlorc_lab.models import resolve_model

# Row counts from the data README; label sums computed independently with awk over
# the TSV files (count of label 1 / not_entailment, sum of STS-B scores).
GLUE_REFERENCE = [
    ("cola", "train", 8551, 6023),
    ("cola", "validation", 1043, 721),
    ("mrpc", "train", 3668, 2474),
    ("mrpc", "validation", 408, 279),
    ("rte", "train", 2490, 1241),
    ("rte", "validation", 277, 131),
    ("stsb", "train", 5749, 15528.0434),
    ("stsb", "validation", 1500, 3545.8613),
]


@pytest.fixture(scope="module")
def minilm_tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model("all-minilm-l6-v2").path_or_id, local_files_only=True)


@pytest.fixture(scope="module")
def smollm_tokenizer():
    resolved = resolve_model("smollm2-135m")
    return AutoTokenizer.from_pretrained(resolved.path_or_id, gguf_file=resolved.gguf_file)


@pytest.fixture
def no_data_env(monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)


def write_tsv(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# --- paths -------------------------------------------------------------------


def test_resolve_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    assert resolve_data_dir() is None

    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "from_env"))
    assert resolve_data_dir() == tmp_path / "from_env"
    assert resolve_data_dir(tmp_path / "explicit") == tmp_path / "explicit"

    monkeypatch.chdir(tmp_path)
    assert resolve_data_dir("relative") == tmp_path / "relative"


# --- GLUE loading ---------------------------------------------------------------


@pytest.mark.parametrize(("task", "split", "rows", "label_sum"), GLUE_REFERENCE)
def test_glue_split_counts(data_dir, task, split, rows, label_sum):
    frame = load_glue_split(task, split, data_dir=data_dir)

    assert list(frame.columns) == ["sentence1", "sentence2", "label"]
    assert len(frame) == rows
    assert frame["label"].sum() == pytest.approx(label_sum, abs=1e-3)
    assert frame["sentence1"].map(lambda text: isinstance(text, str) and text != "").all()
    if task == "cola":
        assert frame["sentence2"].isna().all()
    else:
        assert frame["sentence2"].map(lambda text: isinstance(text, str) and text != "").all()


@pytest.mark.parametrize("task", ["cola", "mrpc", "rte"])
def test_glue_classification_labels(data_dir, task):
    frame = load_glue_split(task, "validation", data_dir=data_dir)
    assert frame["label"].dtype == np.int64
    assert set(frame["label"].unique()) == {0, 1}


def test_stsb_scores_are_floats(data_dir):
    frame = load_glue_split("STS-B", "train", data_dir=data_dir)
    assert frame["label"].dtype == np.float64
    assert frame["label"].min() == 0.0
    assert frame["label"].max() == 5.0


def test_glue_reads_env_variable(data_dir, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(data_dir))
    from_env = load_glue_split("rte", "validation")
    explicit = load_glue_split("rte", "validation", data_dir=data_dir)
    pd.testing.assert_frame_equal(from_env, explicit)


def test_glue_max_examples_is_head(data_dir):
    full = load_glue_split("mrpc", "train", data_dir=data_dir)
    head = load_glue_split("mrpc", "train", data_dir=data_dir, max_examples=25)
    assert len(head) == 25
    pd.testing.assert_frame_equal(head, full.iloc[:25])


def test_glue_keeps_stray_quotes(tmp_path):
    # A lone double quote must stay part of the text (QUOTE_NONE), not open a field.
    path = write_tsv(
        tmp_path / "dev.tsv",
        ["index\tsentence1\tsentence2\tlabel", '0\tHe said "yes.\tNo "quote\' here\tentailment'],
    )
    frame = read_glue_tsv(path, "rte")
    assert frame.loc[0, "sentence1"] == 'He said "yes.'
    assert frame.loc[0, "sentence2"] == "No \"quote' here"
    assert frame.loc[0, "label"] == 0


def test_glue_task_names():
    assert get_glue_task("CoLA").folder == "CoLA"
    assert get_glue_task("sts-b").name == "stsb"
    assert get_glue_task("STSB").num_labels == 1
    assert get_glue_task("Rte").hub_config == "rte"
    assert get_glue_task("mrpc").metric_names == ("accuracy", "f1")


def test_glue_unknown_task():
    with pytest.raises(ValueError, match=r"Unknown GLUE task 'sst2'.*cola, mrpc, rte, stsb"):
        get_glue_task("sst2")


def test_glue_unknown_split(data_dir):
    with pytest.raises(ValueError, match=r"Unknown GLUE split 'dev'.*train, validation"):
        load_glue_split("rte", "dev", data_dir=data_dir)


def test_glue_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"glue/STS-B/dev\.tsv.*10 tab-separated columns"):
        load_glue_split("stsb", "validation", data_dir=tmp_path)


def test_glue_wrong_column_count(tmp_path):
    path = write_tsv(tmp_path / "glue" / "CoLA" / "train.tsv", ["src\t1\t\tFine.", "src\t0\tBroken row."])
    with pytest.raises(ValueError, match=r"train\.tsv, line 2: found 3 columns, expected 4"):
        load_glue_split("cola", "train", data_dir=tmp_path)


def test_glue_bad_label(tmp_path):
    header = "index\tsentence1\tsentence2\tlabel"
    path = write_tsv(tmp_path / "rte.tsv", [header, "0\tA.\tB.\tentailment", "1\tA.\tB.\tcontradiction"])
    with pytest.raises(ValueError, match=r"rte\.tsv, line 3: invalid RTE label 'contradiction'"):
        read_glue_tsv(path, "rte")

    stsb = ["\t".join(get_glue_task("stsb").header), "0\tg\tf\ty\t0\ts\ts\tA.\tB.\t7.5"]
    path = write_tsv(tmp_path / "stsb.tsv", stsb)
    with pytest.raises(ValueError, match=r"stsb\.tsv, line 2: invalid STS-B score '7\.5'"):
        read_glue_tsv(path, "stsb")

    path = write_tsv(tmp_path / "cola.tsv", ["src\tyes\t\tA sentence."])
    with pytest.raises(ValueError, match=r"cola\.tsv, line 1: invalid CoLA label 'yes'; expected 0 or 1"):
        read_glue_tsv(path, "cola")


def test_glue_bad_header(tmp_path):
    path = write_tsv(tmp_path / "mrpc.tsv", ["label\ts1\ts2", "1\tA.\tB."])
    with pytest.raises(ValueError, match=r"mrpc\.tsv, line 1: invalid header.*Quality \| #1 ID"):
        read_glue_tsv(path, "mrpc")


def test_glue_empty_file(tmp_path):
    path = write_tsv(tmp_path / "rte.tsv", ["index\tsentence1\tsentence2\tlabel"])
    with pytest.raises(ValueError, match=r"rte\.tsv: no data rows"):
        read_glue_tsv(path, "rte")


def test_glue_hub_call(monkeypatch, no_data_env):
    # The fake replaces only the hub and returns rows shaped like nyu-mll/glue.
    calls = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split, kwargs))
        if name == "cola":
            return datasets.Dataset.from_dict({"sentence": ["One.", "Two.", "Three."], "label": [1, 0, 1], "idx": [0, 1, 2]})
        return datasets.Dataset.from_dict(
            {"sentence1": ["A.", "B."], "sentence2": ["C.", "D."], "label": [0.5, 4.25], "idx": [0, 1]}
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)

    frame = load_glue_split("STS-B", "validation")
    assert calls[-1] == ("nyu-mll/glue", "stsb", "validation", {})
    assert list(frame.columns) == ["sentence1", "sentence2", "label"]
    assert frame["label"].tolist() == [0.5, 4.25]
    assert frame["label"].dtype == np.float64

    frame = load_glue_split("cola", "train", max_examples=2)
    assert calls[-1] == ("nyu-mll/glue", "cola", "train", {})
    assert frame["sentence1"].tolist() == ["One.", "Two."]
    assert frame["sentence2"].isna().all()
    assert frame["label"].dtype == np.int64


# --- GLUE metrics ---------------------------------------------------------------


def test_metrics_cola_matthews():
    # tp=2, tn=2, fp=1, fn=1 -> (2*2 - 1*1) / sqrt(3*3*3*3) = 1/3.
    result = glue_metrics("cola", [1, 1, 0, 0, 1, 0], [1, 0, 0, 1, 1, 0])
    assert result["matthews_correlation"] == pytest.approx(1 / 3, abs=1e-12)
    # A constant prediction makes the denominator zero; the convention is 0.
    assert glue_metrics("cola", [1, 1, 1], [1, 0, 1])["matthews_correlation"] == 0.0
    assert glue_metrics("cola", [1, 0, 1], [1, 0, 1])["matthews_correlation"] == pytest.approx(1.0, abs=1e-12)


def test_metrics_mrpc_f1_accuracy():
    # tp=2, fp=1, fn=1, tn=1 -> accuracy 3/5, F1 = 2*2 / (2*2 + 1 + 1) = 2/3.
    result = glue_metrics("mrpc", np.array([1, 1, 1, 0, 0]), np.array([1, 0, 1, 1, 0]))
    assert result["accuracy"] == pytest.approx(0.6, abs=1e-12)
    assert result["f1"] == pytest.approx(2 / 3, abs=1e-12)


def test_metrics_rte_accuracy():
    result = glue_metrics("rte", torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 0, 0]))
    assert result == {"accuracy": pytest.approx(0.75, abs=1e-12)}


def test_metrics_stsb_correlations():
    # Prediction ranks 1,2,4,3,5 against 1..5: Spearman = 1 - 6*2/(5*24) = 0.9.
    # Pearson: dx = (-1.7,-1.2,0.8,0.3,1.8), dy = (-2..2); 8.5 / sqrt(8.3*10).
    result = glue_metrics("stsb", [0.5, 1.0, 3.0, 2.5, 4.0], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert result["spearmanr"] == pytest.approx(0.9, abs=1e-12)
    assert result["pearson"] == pytest.approx(8.5 / math.sqrt(83.0), abs=1e-12)


def test_metrics_invalid_inputs():
    with pytest.raises(ValueError, match="differ in length: 3 vs 2"):
        glue_metrics("rte", [0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match=r"must be 1-D.*argmax"):
        glue_metrics("cola", [[0.1, 0.9]], [1])
    with pytest.raises(ValueError, match="empty"):
        glue_metrics("stsb", [], [])
    with pytest.raises(ValueError, match=r"in \{0, 1\}, got values \[0, 1, 2\]"):
        glue_metrics("mrpc", [0, 2], [1, 0])


# --- GLUE tokenisation ----------------------------------------------------------


def test_encode_glue_pairs(data_dir, minilm_tokenizer):
    frame = load_glue_split("rte", "validation", data_dir=data_dir, max_examples=4)
    features = encode_glue(frame, minilm_tokenizer, max_length=64)
    batch = GlueCollator(minilm_tokenizer)(features)

    reference = minilm_tokenizer(frame.loc[2, "sentence1"], frame.loc[2, "sentence2"], truncation=True, max_length=64)
    length = len(reference["input_ids"])
    assert features[2]["input_ids"] == reference["input_ids"]
    assert batch["input_ids"].shape == (4, max(len(f["input_ids"]) for f in features))
    assert batch["input_ids"][2, :length].tolist() == reference["input_ids"]
    assert batch["attention_mask"][2].sum().item() == length
    assert batch["token_type_ids"][2, :length].tolist() == reference["token_type_ids"]
    assert batch["labels"].dtype == torch.int64
    assert batch["labels"].tolist() == frame["label"].tolist()


def test_encode_glue_single_and_regression(data_dir, minilm_tokenizer):
    cola = load_glue_split("cola", "train", data_dir=data_dir, max_examples=3)
    features = encode_glue(cola, minilm_tokenizer, max_length=8)
    sep = minilm_tokenizer.sep_token_id
    for feature in features:
        assert len(feature["input_ids"]) <= 8
        assert feature["input_ids"].count(sep) == 1
        assert set(feature["token_type_ids"]) == {0}

    stsb = load_glue_split("stsb", "validation", data_dir=data_dir, max_examples=3)
    batch = GlueCollator(minilm_tokenizer)(encode_glue(stsb, minilm_tokenizer, max_length=32))
    assert batch["labels"].dtype == torch.float32
    assert torch.allclose(batch["labels"], torch.tensor(stsb["label"].tolist(), dtype=torch.float32))


# --- instruction data -----------------------------------------------------------


def test_format_prompt_template():
    assert format_prompt("Add 2 and 3.") == "### Instruction:\nAdd 2 and 3.\n\n### Response:\n"
    assert format_prompt("Sort it.", "[3, 1]") == "### Instruction:\nSort it.\n\n### Input:\n[3, 1]\n\n### Response:\n"
    assert format_prompt("Sort it.", "  ") == "### Instruction:\nSort it.\n\n### Response:\n"


def test_load_gsm8k_local(data_dir):
    train = load_gsm8k("train", data_dir=data_dir)
    test = load_gsm8k("test", data_dir=data_dir)
    assert len(train) == 7473
    assert len(test) == 1319
    for example in test:
        assert example["prompt"].startswith("### Instruction:\n")
        assert example["prompt"].endswith("\n\n### Response:\n")
        assert "### Input:" not in example["prompt"]
        assert "####" in example["response"]
    assert load_gsm8k("test", data_dir=data_dir, max_examples=5) == test[:5]


def test_gsm8k_answers_sum(data_dir):
    # Reference: the numbers after "#### " in test.jsonl, commas removed, summed with awk.
    answers = [extract_gsm8k_answer(example["response"]) for example in load_gsm8k("test", data_dir=data_dir)]
    assert sum(int(answer) for answer in answers) == 9009187


def test_load_code_alpaca_local(data_dir):
    examples = load_code_alpaca(data_dir=data_dir)
    assert len(examples) == 2017
    # 1011 records have an empty input (grep -c '"input": ""'), so 1006 have an Input block.
    assert sum("### Input:" in example["prompt"] for example in examples) == 1006
    # Two records have an empty output (grep -c '"output": ""'); they are kept as is.
    assert sum(example["response"] == "" for example in examples) == 2


def test_gsm8k_malformed_json(tmp_path):
    path = tmp_path / "gsm8k" / "train.jsonl"
    path.parent.mkdir()
    path.write_text('{"question": "Q1?", "answer": "#### 1"}\n\n{"question": "Q2?", "answer": \n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"train\.jsonl, line 3: malformed JSON"):
        load_gsm8k("train", data_dir=tmp_path)


def test_gsm8k_missing_field(tmp_path):
    path = tmp_path / "gsm8k" / "test.jsonl"
    path.parent.mkdir()
    path.write_text('{"question": "Q1?", "answer": "#### 1"}\n{"question": "Q2?"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"test\.jsonl, line 2: missing field 'answer'"):
        load_gsm8k("test", data_dir=tmp_path)


def test_code_alpaca_missing_field(tmp_path):
    path = tmp_path / "codealpaca" / "code_alpaca_2k.json"
    path.parent.mkdir()
    path.write_text(
        '[\n  {"instruction": "A", "input": "", "output": "B"},\n  {"instruction": "C",\n   "output": "D"}\n]\n',
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match=r"code_alpaca_2k\.json, line 3: missing field 'input'"):
        load_code_alpaca(data_dir=tmp_path)


def test_code_alpaca_malformed_json(tmp_path):
    path = tmp_path / "codealpaca" / "code_alpaca_2k.json"
    path.parent.mkdir()
    path.write_text('[\n  {"instruction": "A", "input": "", "output": "B"}\n  {"instruction": "C"}\n]\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"code_alpaca_2k\.json, line 3: malformed JSON \(expected ',' or ']'"):
        load_code_alpaca(data_dir=tmp_path)


def test_instruct_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"gsm8k/test\.jsonl.*question and answer"):
        load_gsm8k("test", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"codealpaca/code_alpaca_2k\.json"):
        load_code_alpaca(data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"Unknown GSM8K split 'validation'"):
        load_gsm8k("validation", data_dir=tmp_path)


def test_instruct_hub_calls(monkeypatch, no_data_env):
    # The fake replaces only the hub and returns rows shaped like each hub data set.
    calls = []
    rows = {
        "openai/gsm8k": {"question": ["Q?"], "answer": ["Work.\n#### 7"]},
        "sahil280114/codealpaca": {"instruction": ["Do X."], "input": ["y"], "output": ["Done."]},
        "meta-math/MetaMathQA": {"query": ["Q1?", "Q2?"], "response": ["R1", "R2"], "type": ["a", "b"]},
        "m-a-p/CodeFeedback-Filtered-Instruction": {"query": ["Code?"], "answer": ["print(1)"], "lang": ["py"]},
    }

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return datasets.Dataset.from_dict(rows[path])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)

    assert load_gsm8k("test") == [{"prompt": format_prompt("Q?"), "response": "Work.\n#### 7"}]
    assert calls[-1] == ("openai/gsm8k", "main", "test")
    assert load_code_alpaca() == [{"prompt": format_prompt("Do X.", "y"), "response": "Done."}]
    assert calls[-1] == ("sahil280114/codealpaca", None, "train")
    assert load_metamathqa(max_examples=1) == [{"prompt": format_prompt("Q1?"), "response": "R1"}]
    assert calls[-1] == ("meta-math/MetaMathQA", None, "train")
    assert load_codefeedback() == [{"prompt": format_prompt("Code?"), "response": "print(1)"}]
    assert calls[-1] == ("m-a-p/CodeFeedback-Filtered-Instruction", None, "train")


def test_hub_failure_message(monkeypatch):
    def unreachable(path, name=None, split=None, **kwargs):
        raise ConnectionError(f"Couldn't reach '{path}' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(OSError, match=r"meta-math/MetaMathQA.*set MLORC_LAB_DATA_DIR"):
        load_metamathqa()


# --- instruction tokenisation ------------------------------------------------------


def test_tokenize_prompt_response_labels(smollm_tokenizer):
    example = {"prompt": format_prompt("What is 2 + 3?"), "response": "2 + 3 = 5\n#### 5"}
    prompt_ids = smollm_tokenizer(example["prompt"])["input_ids"]
    response_ids = smollm_tokenizer(example["response"], add_special_tokens=False)["input_ids"]
    eos = smollm_tokenizer.eos_token_id

    feature = tokenize_prompt_response(example, smollm_tokenizer, max_length=512)
    n_prompt = len(prompt_ids)
    assert feature["input_ids"] == prompt_ids + response_ids + [eos]
    assert feature["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert feature["labels"][n_prompt:] == response_ids + [eos]
    assert feature["attention_mask"] == [1] * (n_prompt + len(response_ids) + 1)

    truncated = tokenize_prompt_response(example, smollm_tokenizer, max_length=n_prompt + 2)
    assert truncated["input_ids"] == prompt_ids + response_ids[:2]
    assert truncated["labels"] == [IGNORE_INDEX] * n_prompt + response_ids[:2]


def test_instruct_collator_pads(data_dir, smollm_tokenizer):
    examples = load_gsm8k("test", data_dir=data_dir, max_examples=3)
    features = encode_instruct(examples, smollm_tokenizer, max_length=256)
    batch = InstructCollator(pad_token_id=smollm_tokenizer.pad_token_id)(features)

    lengths = [len(feature["input_ids"]) for feature in features]
    assert batch["input_ids"].shape == (3, max(lengths))
    for row, feature in enumerate(features):
        size = lengths[row]
        assert batch["input_ids"][row, :size].tolist() == feature["input_ids"]
        assert batch["labels"][row, :size].tolist() == feature["labels"]
        assert batch["attention_mask"][row].sum().item() == size
        assert (batch["labels"][row, size:] == IGNORE_INDEX).all()
        assert (batch["input_ids"][row, size:] == smollm_tokenizer.pad_token_id).all()


def test_encode_instruct_drops_full_prompts(smollm_tokenizer, caplog):
    examples = [
        {"prompt": format_prompt("Short?"), "response": "Yes."},
        {"prompt": format_prompt("A much longer question " * 20), "response": "No."},
    ]
    short_prompt = len(smollm_tokenizer(examples[0]["prompt"])["input_ids"])
    features = encode_instruct(examples, smollm_tokenizer, max_length=short_prompt + 3)
    assert len(features) == 1
    assert features[0]["labels"][-3:] != [IGNORE_INDEX] * 3
    assert "Dropped 1 of 2 examples" in caplog.text


# --- GSM8K answer extraction ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She makes 9 * 2 = $18.\n#### 18", "18"),
        ("Total: 1,080 apples.\n#### 1,080", "1080"),
        ("#### $ 2,500.00", "2500"),
        ("#### -7", "-7"),
        ("First #### 3 then\n#### 4", "4"),
        ("The answer is 42.", "42"),
        ("So x = 3.50 and y = 12.", "12"),
        ("Pay $1,234.5 in total", "1234.5"),
        ("#### none\nbut 5 apples", "5"),
        ("No number here.", None),
    ],
)
def test_extract_gsm8k_answer(text, expected):
    assert extract_gsm8k_answer(text) == expected

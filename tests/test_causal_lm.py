"""The causal-LM runner at smoke size on the real SmolLM2-135M and the local data."""

from __future__ import annotations

import math

import pytest

from mlorc_lab.methods import METHODS
from mlorc_lab.profiles import get_profile
from mlorc_lab.records import read_metadata, read_records
from mlorc_lab.train.causal_lm import load_instruction_data, method_options, run_causal_lm

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("method", sorted(METHODS))
def test_math_run_every_method(method, tmp_path, data_dir):
    # GSM8K generation runs for one method only, to keep the file fast.
    settings = get_profile("smoke").causal_lm
    if method != "mlorc-adamw":
        settings = settings.replace(gsm8k_test_examples=0)
    run_dir = run_causal_lm("math", method, settings, tmp_path, data_dir=data_dir, progress=False)
    train = read_records(run_dir, "train")
    assert list(train["step"]) == [1, 2]
    assert train["loss"].map(math.isfinite).all()
    # A pretrained instruct model on GSM8K answers: a loss far below log(vocab) = 10.8.
    assert 0.0 < train["loss"].iloc[0] < 5.0
    metadata = read_metadata(run_dir)
    assert metadata["status"] == "completed"
    assert metadata["total_steps"] == 2
    evaluation = metadata["eval"]
    assert math.isfinite(evaluation["heldout_loss"])
    assert evaluation["heldout_examples"] == 2
    if method == "mlorc-adamw":
        assert evaluation["gsm8k_examples"] == 2
        assert evaluation["gsm8k_accuracy"] in (0.0, 0.5, 1.0)


def test_code_run_with_humaneval(tmp_path, data_dir):
    settings = get_profile("smoke").causal_lm
    run_dir = run_causal_lm("code", "mlorc-adamw", settings, tmp_path, data_dir=data_dir, progress=False)
    metadata = read_metadata(run_dir)
    assert metadata["eval"]["humaneval_problems"] == 1
    assert metadata["eval"]["humaneval_pass_at_1"] in (0.0, 1.0)
    assert len(read_records(run_dir, "train")) == 2


def test_completed_run_reused(tmp_path, data_dir):
    settings = get_profile("smoke").causal_lm.replace(gsm8k_test_examples=0)
    first = run_causal_lm("math", "full-adamw", settings, tmp_path, data_dir=data_dir, progress=False)
    stamp = (first / "records.jsonl").stat().st_mtime_ns
    again = run_causal_lm("math", "full-adamw", settings, tmp_path, data_dir=data_dir, progress=False)
    assert again == first
    assert (again / "records.jsonl").stat().st_mtime_ns == stamp


def test_paper_profile_settings():
    settings = get_profile("paper").causal_lm
    assert settings.model == "meta-llama/Llama-2-7b-hf"
    assert settings.dtype == "bfloat16"
    assert settings.rank == 4
    assert settings.lora_rank == 4
    assert settings.batch_size == 32
    assert settings.epochs == 2.0
    assert settings.max_train_examples == 10_000
    assert settings.warmup_ratio == 0.03
    assert settings.weight_decay == 0.0
    assert settings.mlorc_beta1 == 0.8
    assert settings.oversampling == 0
    assert dict(settings.max_length) == {"math": 512, "code": 1024}
    assert settings.gradient_checkpointing is True
    assert settings.galore_update_gap == 300
    options = method_options(settings, "math", "mlorc-adamw")
    assert options.betas == (0.8, 0.999)
    assert method_options(settings, "math", "full-adamw").betas is None


def test_paper_profile_runs_small_model(tmp_path, data_dir):
    """The paper settings with SmolLM2 swapped in, and the batch cut from 32 to 4 for CPU time."""
    settings = get_profile("paper").causal_lm.replace(
        model="smollm2-135m", max_steps=2, batch_size=4, micro_batch_size=2, heldout_examples=4,
        gsm8k_test_examples=0,
    )
    run_dir = run_causal_lm("math", "mlorc-adamw", settings, tmp_path, data_dir=data_dir, progress=False)
    metadata = read_metadata(run_dir)
    assert metadata["settings"]["dtype"] == "bfloat16"
    assert metadata["settings"]["max_length"] == {"math": 512, "code": 1024}
    # 10k examples requested; the local GSM8K train file has 7,473, 4 of them held out.
    assert metadata["train_examples"] == 7473 - 4
    assert metadata["total_steps"] == 2
    train = read_records(run_dir, "train")
    assert train["loss"].map(math.isfinite).all()
    assert math.isfinite(metadata["eval"]["heldout_loss"])


def test_instruction_data_sources(data_dir):
    math_examples = load_instruction_data("math", data_dir, 3)
    code_examples = load_instruction_data("code", data_dir, 3)
    assert len(math_examples) == 3
    assert math_examples[0]["prompt"].startswith("### Instruction:\n")
    assert "####" in math_examples[0]["response"]
    assert len(code_examples) == 3
    with pytest.raises(ValueError, match="Unknown dataset 'poetry'"):
        load_instruction_data("poetry", data_dir, 3)


def test_bad_micro_batch_rejected(tmp_path, data_dir):
    settings = get_profile("smoke").causal_lm.replace(micro_batch_size=2)
    with pytest.raises(ValueError, match="micro_batch_size=2 must be a positive divisor of batch_size=1"):
        run_causal_lm("math", "full-adamw", settings, tmp_path, data_dir=data_dir, progress=False)


def test_unknown_learning_rate_rejected():
    settings = get_profile("smoke").causal_lm
    with pytest.raises(ValueError, match="No learning rate for method 'sgd' on 'math'"):
        settings.learning_rate("math", "sgd")

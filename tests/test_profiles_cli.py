"""Profiles resolve to their stated settings; the paper profile runs with a small model."""

import dataclasses

import pytest

from mlorc_lab.cli import main
from mlorc_lab.profiles import PROFILE_NAMES, get_profile
from mlorc_lab.records import read_metadata, read_records
from mlorc_lab.train.encoder import run_glue


def test_paper_profile_is_appendix_c1():
    settings = get_profile("paper").glue_spectra
    assert settings.model == "FacebookAI/roberta-base"
    assert settings.batch_size == 128
    assert settings.learning_rate == 1e-4
    assert settings.epochs == 20.0
    assert settings.max_steps is None
    assert settings.record_every == 10
    assert settings.top_k == 8


def test_cpu_profile_uses_shipped_encoder():
    settings = get_profile("cpu").glue_spectra
    assert settings.model == "all-minilm-l6-v2"
    assert settings.tasks == ("cola", "mrpc", "rte", "stsb")


def test_every_profile_builds():
    for name in PROFILE_NAMES:
        assert get_profile(name).name == name


def test_unknown_profile_raises():
    with pytest.raises(ValueError, match="Unknown profile 'laptop'; choose one of smoke, cpu, paper"):
        get_profile("laptop")


@pytest.mark.slow
def test_paper_profile_runs_with_small_model(tmp_path, data_dir):
    paper = get_profile("paper").glue_spectra
    # The hub is unreachable here: keep every paper setting but the model, and stop
    # after 2 steps of batch 128.
    settings = paper.replace(model="all-minilm-l6-v2", max_steps=2, max_train_examples=256, max_eval_examples=64)
    run_dir = run_glue("cola", "full-adamw", settings, tmp_path, data_dir=data_dir, progress=False)
    metadata = read_metadata(run_dir)
    assert metadata["settings"] == {**dataclasses.asdict(paper), **dict(
        model="all-minilm-l6-v2", max_steps=2, max_train_examples=256, max_eval_examples=64, tasks=list(paper.tasks)
    )}
    train = read_records(run_dir, "train")
    assert list(train["step"]) == [1, 2]
    assert -1.0 <= metadata["eval"]["matthews_correlation"] <= 1.0
    # Spectra at step 1 (the paper records every 10 steps, and step 1 is always kept).
    assert sorted(read_records(run_dir, "spectrum")["step"].unique()) == [1]


def test_cli_rejects_unknown_profile(caplog):
    assert main(["figures", "--profile", "laptop", "--only", "fig1"]) == 2
    assert "Unknown profile 'laptop'" in caplog.text


def test_cli_rejects_unknown_figure(caplog):
    assert main(["figures", "--only", "fig99"]) == 2
    assert "Unknown figure 'fig99'" in caplog.text


def test_cli_rejects_unknown_task(caplog, tmp_path, data_dir):
    status = main(["train", "glue", "--task", "qnli", "--profile", "smoke", "--data-dir", str(data_dir), "--output-dir", str(tmp_path)])
    assert status == 2
    assert "qnli" in caplog.text


def test_cli_rejects_data_folder_without_files(caplog, tmp_path):
    status = main(["train", "glue", "--task", "rte", "--profile", "smoke", "--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "runs")])
    assert status == 2
    assert "RTE" in caplog.text
    assert "train.tsv" in caplog.text


def test_cli_rejects_unknown_method_before_loading(caplog, tmp_path):
    # The data folder is empty: the method check must come first, or the error would
    # name the missing GLUE files instead.
    status = main(["train", "glue", "--task", "stsb", "--method", "adam", "--profile", "smoke", "--data-dir", str(tmp_path)])
    assert status == 2
    assert "Unknown method 'adam'; choose one of full-adamw" in caplog.text


@pytest.mark.parametrize("kind, option", [("causal-lm", ["--dataset", "math"]), ("glue-table", ["--task", "rte"])])
def test_cli_comparison_runs_reject_unknown_method(caplog, tmp_path, kind, option):
    status = main(["train", kind, *option, "--method", "adam", "--profile", "smoke", "--data-dir", str(tmp_path)])
    assert status == 2
    assert "Unknown method 'adam'; choose one of full-adamw" in caplog.text


@pytest.mark.slow
def test_cli_glue_table_output_folder(tmp_path, data_dir):
    args = ["train", "glue-table", "--task", "rte", "--method", "lora", "--profile", "smoke"]
    args += ["--data-dir", str(data_dir), "--output-dir", str(tmp_path)]
    assert main(args) == 0
    run_dir = tmp_path / "smoke" / "glue_comparison" / "glue-rte-lora"
    metadata = read_metadata(run_dir)
    settings = get_profile("smoke").glue_comparison
    assert metadata["settings"]["learning_rate"] == settings.learning_rates["rte"]["lora"]
    assert list(read_records(run_dir, "train")["step"]) == list(range(1, settings.max_steps + 1))


@pytest.mark.slow
def test_cli_causal_lm_output_folder(tmp_path, data_dir):
    args = ["train", "causal-lm", "--dataset", "code", "--method", "mlorc-lion", "--profile", "smoke"]
    args += ["--data-dir", str(data_dir), "--output-dir", str(tmp_path), "--max-steps", "1"]
    assert main(args) == 0
    run_dir = tmp_path / "smoke" / "causal_lm" / "code-mlorc-lion"
    metadata = read_metadata(run_dir)
    assert metadata["settings"]["max_steps"] == 1
    assert metadata["learning_rate"] == get_profile("smoke").causal_lm.learning_rate("code", "mlorc-lion")
    assert list(read_records(run_dir, "train")["step"]) == [1]
    assert 0.0 <= metadata["eval"]["humaneval_pass_at_1"] <= 1.0


@pytest.mark.slow
def test_cli_offline_hub_exits_2(caplog, tmp_path, monkeypatch):
    # With no data folder the loaders read the hub, which offline mode rejects at once.
    monkeypatch.delenv("MLORC_LAB_DATA_DIR", raising=False)
    # The libraries read the offline flags when imported, so set their copies too.
    import datasets
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    status = main(["train", "glue-table", "--task", "rte", "--method", "lora", "--profile", "smoke", "--output-dir", str(tmp_path)])
    assert status == 2
    assert "set MLORC_LAB_DATA_DIR" in caplog.text

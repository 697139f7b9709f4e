"""The method registry on the real small models: MiniLM (BERT) and SmolLM2-135M (LLaMA).

Every method builds and takes two optimizer steps on a real batch. Which parameters
moved is compared by name between methods: LoRA must leave every base weight
bit-identical (torch.equal) and train the classifier head, and GaLore and MLorc must
move exactly the parameters full AdamW moves.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from mlorc_lab.data import GlueCollator, InstructCollator, encode_glue, encode_instruct, load_glue_split, load_gsm8k
from mlorc_lab.methods import (
    LION_BETAS,
    METHODS,
    MethodOptions,
    adapted_module_names,
    build_method,
    classifier_head_name,
)
from mlorc_lab.models import load_causal_lm, load_encoder

pytestmark = pytest.mark.slow

STEPS = 2


@pytest.fixture(scope="module")
def encoder_case(data_dir):
    model, tokenizer = load_encoder("all-minilm-l6-v2", num_labels=2, seed=0)
    frame = load_glue_split("mrpc", "train", data_dir, max_examples=8)
    batch = GlueCollator(tokenizer)(encode_glue(frame, tokenizer, max_length=48))
    return model, batch


@pytest.fixture(scope="module")
def causal_case(data_dir):
    model, tokenizer = load_causal_lm("smollm2-135m")
    examples = load_gsm8k("train", data_dir, max_examples=2)
    batch = InstructCollator(tokenizer.pad_token_id)(encode_instruct(examples, tokenizer, max_length=96))
    return model, batch


def _train(method: str, base: torch.nn.Module, batch: dict, **overrides) -> dict:
    """Run STEPS steps of ``method`` on a copy of ``base``.

    Returns the losses, the set of compared parameter names (peft names mapped back
    to the plain model's names) and the subset whose values changed.
    """
    model = copy.deepcopy(base)
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    options = MethodOptions(learning_rate=1e-3, rank=4, **overrides)
    model, optimizer = build_method(method, model, options)
    model.train()
    losses = []
    for _ in range(STEPS):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    compared, changed, adapters = set(), set(), set()
    for name, param in model.named_parameters():
        if "lora_" in name:
            adapters.add(name)
            continue
        plain = _plain_name(name)
        compared.add(plain)
        if not torch.equal(before[plain.removesuffix(ORIGINAL)], param.detach()):
            changed.add(plain)
    del model, optimizer, before
    return {"losses": losses, "compared": compared, "changed": changed, "adapters": adapters}


# Marks peft's frozen original of a modules_to_save head, kept beside the trained copy.
ORIGINAL = "#original"


def _plain_name(name: str) -> str:
    """Map a peft parameter name to the wrapped model's parameter name."""
    name = name.removeprefix("base_model.model.")
    name = name.replace(".base_layer.", ".").replace(".modules_to_save.default.", ".")
    if ".original_module." in name:
        name = name.replace(".original_module.", ".") + ORIGINAL
    return name


@pytest.fixture(scope="module")
def encoder_runs(encoder_case):
    model, batch = encoder_case
    return {method: _train(method, model, batch, lora_rank=8) for method in METHODS}


@pytest.fixture(scope="module")
def causal_runs(causal_case):
    model, batch = causal_case
    return {method: _train(method, model, batch) for method in METHODS}


def test_registry_names():
    assert sorted(METHODS) == sorted(
        ["full-adamw", "mlorc-adamw", "lora", "lora-full", "galore", "full-lion", "mlorc-lion"]
    )


def test_unknown_method_rejected():
    with pytest.raises(ValueError, match="Unknown method 'adam'"):
        build_method("adam", torch.nn.Linear(2, 2), MethodOptions(learning_rate=1e-3))


def test_adapted_modules_encoder(encoder_case):
    model, _ = encoder_case
    names = adapted_module_names(model)
    # 6 BERT layers x (query, key, value, attention output, intermediate, output).
    assert len(names) == 36
    assert "bert.encoder.layer.0.attention.self.query" in names
    assert "bert.encoder.layer.5.output.dense" in names
    assert "bert.pooler.dense" not in names
    assert classifier_head_name(model) == "classifier"


def test_adapted_modules_causal(causal_case):
    model, _ = causal_case
    names = adapted_module_names(model)
    # 30 LLaMA layers x (q, k, v, o, gate, up, down).
    assert len(names) == 30 * 7
    assert "model.layers.29.mlp.down_proj" in names


def test_no_projection_rejected():
    with pytest.raises(ValueError, match="No attention or MLP projection found in Sequential"):
        adapted_module_names(torch.nn.Sequential(torch.nn.Linear(2, 2)))


@pytest.mark.parametrize("case", ["encoder", "causal"])
def test_every_method_steps(case, encoder_runs, causal_runs):
    runs = encoder_runs if case == "encoder" else causal_runs
    for method, run in runs.items():
        assert len(run["losses"]) == STEPS, method
        assert all(math.isfinite(loss) for loss in run["losses"]), (method, run["losses"])
        assert run["changed"] or run["adapters"], f"{method} trained nothing"


@pytest.mark.parametrize("case", ["encoder", "causal"])
def test_galore_mlorc_train_what_full_trains(case, encoder_runs, causal_runs):
    runs = encoder_runs if case == "encoder" else causal_runs
    full = runs["full-adamw"]["changed"]
    # Full AdamW moves every parameter with a gradient: on these models, all of them.
    assert full == runs["full-adamw"]["compared"]
    for method in ("mlorc-adamw", "galore", "full-lion", "mlorc-lion"):
        assert runs[method]["changed"] == full, method


def test_lora_freezes_base_encoder(encoder_runs):
    run = encoder_runs["lora"]
    # Only the trainable copy of the head moved; its frozen original did not.
    assert run["changed"] == {"classifier.weight", "classifier.bias"}
    assert "classifier.weight" + ORIGINAL in run["compared"]
    assert "bert.encoder.layer.0.attention.self.query.weight" in run["compared"]
    # 36 adapted layers x (lora_A, lora_B).
    assert len(run["adapters"]) == 2 * 36


def test_lora_freezes_base_causal(causal_runs):
    run = causal_runs["lora"]
    assert run["changed"] == set()
    assert run["compared"] == causal_runs["full-adamw"]["compared"]
    assert len(run["adapters"]) == 2 * 30 * 7


def test_lora_full_trains_the_rest(encoder_case, encoder_runs):
    model, _ = encoder_case
    adapted = {name + ".weight" for name in adapted_module_names(model)}
    run = encoder_runs["lora-full"]
    full = encoder_runs["full-adamw"]["changed"]
    assert run["changed"] == full - adapted


def test_lora_rank_from_options(encoder_case):
    model, _ = encoder_case
    peft_model, _ = build_method("lora", copy.deepcopy(model), MethodOptions(learning_rate=1e-3, lora_rank=8))
    lora_a = dict(peft_model.named_parameters())[
        "base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.default.weight"
    ]
    assert tuple(lora_a.shape) == (8, 384)
    assert peft_model.peft_config["default"].lora_alpha == 16.0


def test_galore_groups(encoder_case):
    model, _ = encoder_case
    copy_model = copy.deepcopy(model)
    _, optimizer = build_method("galore", copy_model, MethodOptions(learning_rate=1e-3, galore_update_gap=50))
    plain, projected = optimizer.param_groups
    assert len(projected["params"]) == 36
    assert projected["update_proj_gap"] == 50
    assert projected["scale"] == 0.25
    assert projected["proj_type"] == "std"
    total = sum(1 for _ in copy_model.parameters())
    assert len(plain["params"]) + len(projected["params"]) == total


def test_lion_betas_default(encoder_case):
    model, _ = encoder_case
    for method in ("full-lion", "mlorc-lion"):
        _, optimizer = build_method(method, copy.deepcopy(model), MethodOptions(learning_rate=1e-4))
        assert tuple(optimizer.param_groups[0]["betas"]) == LION_BETAS

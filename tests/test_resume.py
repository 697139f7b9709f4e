"""Saving at step 3 and resuming gives the weights of a run that never stopped."""

from __future__ import annotations

import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR

from mlorc_lab.optim import MLorcAdamW, MLorcLion, PerLayerUpdater

OPTIMIZERS = [MLorcAdamW, MLorcLion]
ACCUMULATION = 2


def make_model(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 24))
    return model.to(dtype)


def make_training(optimizer_class, per_layer, seed=0):
    model = make_model(seed)
    optimizer = optimizer_class(model.named_parameters(), lr=1e-2, rank=4, oversampling=2, power_iterations=1)
    scheduler = LambdaLR(optimizer, lambda step: 0.9**step)
    if per_layer:
        PerLayerUpdater(optimizer, model, accumulation_steps=ACCUMULATION)
    return model, optimizer, scheduler


def train(model, optimizer, scheduler, steps):
    for step in steps:
        for micro in range(ACCUMULATION):
            inputs = torch.randn(6, 16, generator=torch.Generator().manual_seed(100 * step + micro))
            (model(inputs).square().mean() / ACCUMULATION).backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()


def assert_plain_values(value, where="state_dict"):
    """Check that a state dict holds only what weights_only loading accepts."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, (str, int)), f"{where}: key {key!r}"
            assert_plain_values(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            assert_plain_values(item, f"{where}[{index}]")
    else:
        assert value is None or isinstance(value, (torch.Tensor, bool, int, float, str)), (
            f"{where}: {type(value).__name__}"
        )


@pytest.mark.parametrize("per_layer", [False, True], ids=["standard", "per-layer"])
@pytest.mark.parametrize("optimizer_class", OPTIMIZERS)
def test_resume_is_bit_identical(optimizer_class, per_layer, tmp_path):
    model, optimizer, scheduler = make_training(optimizer_class, per_layer)
    train(model, optimizer, scheduler, range(6))

    first, first_optimizer, first_scheduler = make_training(optimizer_class, per_layer)
    train(first, first_optimizer, first_scheduler, range(3))
    checkpoint = {
        "model": first.state_dict(),
        "optimizer": first_optimizer.state_dict(),
        "scheduler": first_scheduler.state_dict(),
    }
    assert_plain_values(checkpoint["optimizer"])
    torch.save(checkpoint, tmp_path / "checkpoint.pt")

    # A different initial seed, so that only the checkpoint can make the runs agree.
    resumed, resumed_optimizer, resumed_scheduler = make_training(optimizer_class, per_layer, seed=1)
    loaded = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    resumed.load_state_dict(loaded["model"])
    resumed_optimizer.load_state_dict(loaded["optimizer"])
    resumed_scheduler.load_state_dict(loaded["scheduler"])
    train(resumed, resumed_optimizer, resumed_scheduler, range(3, 6))

    for (name, param), other in zip(model.named_parameters(), resumed.parameters()):
        assert torch.equal(param, other), name
        state, other_state = optimizer.state[param], resumed_optimizer.state[other]
        assert state["step"] == other_state["step"] == 6, name
        for key, value in state.items():
            if torch.is_tensor(value) and key != "rng_state":
                assert torch.equal(value, other_state[key]), (name, key)
    assert resumed_optimizer.is_compressed(resumed[0].weight)


@pytest.mark.parametrize("optimizer_class", OPTIMIZERS)
def test_older_state_dict_gets_defaults(optimizer_class, tmp_path):
    # A state dict written before power_iterations and state_dtype existed.
    model, optimizer, scheduler = make_training(optimizer_class, per_layer=False)
    train(model, optimizer, scheduler, range(2))
    old = optimizer.state_dict()
    for group in old["param_groups"]:
        del group["power_iterations"]
        del group["state_dtype"]
    torch.save(old, tmp_path / "old.pt")

    fresh_model = make_model()
    fresh_model.load_state_dict(model.state_dict())
    fresh = optimizer_class(fresh_model.named_parameters(), lr=1e-2, rank=4, oversampling=2, power_iterations=3)
    fresh.load_state_dict(torch.load(tmp_path / "old.pt", weights_only=True))

    group = fresh.param_groups[0]
    assert group["power_iterations"] == 3
    assert group["state_dtype"] is None
    assert group["oversampling"] == 2
    assert group["rank"] == 4
    assert fresh.state[fresh_model[0].weight]["step"] == 2
    fresh_model(torch.randn(6, 16, generator=torch.Generator().manual_seed(9))).square().mean().backward()
    fresh.step()
    assert fresh.state[fresh_model[0].weight]["step"] == 3
    assert fresh.state[fresh_model[0].weight]["exp_avg_U"].shape == (32, 4)


@pytest.mark.parametrize("optimizer_class", OPTIMIZERS)
def test_half_model_keeps_fp32_factors_on_load(optimizer_class, tmp_path):
    model = make_model(dtype=torch.bfloat16)
    optimizer = optimizer_class(model.parameters(), lr=1e-2)
    model(torch.randn(6, 16, dtype=torch.bfloat16, generator=torch.Generator().manual_seed(3))).float().sum().backward()
    optimizer.step()
    torch.save(optimizer.state_dict(), tmp_path / "optimizer.pt")

    fresh = optimizer_class(model.parameters(), lr=1e-2)
    fresh.load_state_dict(torch.load(tmp_path / "optimizer.pt", weights_only=True))
    state = fresh.state[model[0].weight]
    assert state["exp_avg_U"].dtype == torch.float32
    assert state["rng_state"].dtype == torch.uint8
    assert torch.equal(state["exp_avg_S"], optimizer.state[model[0].weight]["exp_avg_S"])
    assert fresh.state[model[0].bias]["exp_avg"].dtype == torch.float32

"""Per-layer updates from gradient hooks against the standard optimizer.step() mode."""

from __future__ import annotations

import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR

from mlorc_lab.optim import MLorcAdamW, MLorcLion, NonFiniteGradientError, PerLayerUpdater

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
OPTIMIZERS = [MLorcAdamW, MLorcLion]
ACCUMULATION = 4


def make_model(device="cpu"):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 24))
    return model.to(device, torch.float64)


def micro_batch(step, micro, device="cpu"):
    generator = torch.Generator().manual_seed(1000 * step + micro)
    return torch.randn(6, 16, generator=generator, dtype=torch.float64).to(device)


def schedule(step):
    return 1.0 / (1.0 + step)


def train(optimizer_class, *, per_layer, steps, accumulation, device="cpu"):
    """Train with the same loop in both modes, the loss scaled by 1 / accumulation."""
    model = make_model(device)
    optimizer = optimizer_class(model.parameters(), lr=1e-2, weight_decay=0.1, rank=4)
    scheduler = LambdaLR(optimizer, schedule)
    if per_layer:
        PerLayerUpdater(optimizer, model, accumulation_steps=accumulation)
    for step in range(steps):
        for micro in range(accumulation):
            loss = model(micro_batch(step, micro, device)).square().mean() / accumulation
            loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return model, optimizer


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("optimizer_class", OPTIMIZERS)
def test_matches_standard_mode_with_accumulation(optimizer_class, device):
    # Each parameter gets the same summed gradient, learning rate and generator in both
    # modes and is stepped by the same code, so the weights agree bit for bit.
    standard, standard_optimizer = train(optimizer_class, per_layer=False, steps=3, accumulation=ACCUMULATION, device=device)
    per_layer, per_layer_optimizer = train(optimizer_class, per_layer=True, steps=3, accumulation=ACCUMULATION, device=device)
    for (name, param), other in zip(standard.named_parameters(), per_layer.parameters()):
        assert torch.equal(param, other), name
        assert per_layer_optimizer.state[other]["step"] == 3, name
    assert per_layer_optimizer.is_compressed(per_layer[0].weight)
    assert torch.equal(
        per_layer_optimizer.state[per_layer[0].weight]["exp_avg_U"],
        standard_optimizer.state[standard[0].weight]["exp_avg_U"],
    )


@pytest.mark.parametrize("optimizer_class", OPTIMIZERS)
def test_accumulation_gives_one_update(optimizer_class):
    model = make_model()
    initial = [param.detach().clone() for param in model.parameters()]
    optimizer = optimizer_class(model.parameters(), lr=1e-2, rank=4)
    updater = PerLayerUpdater(optimizer, model, accumulation_steps=ACCUMULATION)

    for micro in range(ACCUMULATION):
        model(micro_batch(0, micro)).square().mean().backward()
        if micro < ACCUMULATION - 1:
            for param, start in zip(model.parameters(), initial):
                assert torch.equal(param, start)
                assert param.grad is not None
            assert updater.pending_micro_batches() == micro + 1
            assert len(optimizer.state) == 0

    for param, start in zip(model.parameters(), initial):
        assert param.grad is None
        assert optimizer.state[param]["step"] == 1
        assert not torch.equal(param, start)

    # One standard step on the gradient summed over the four micro-batches gives the
    # same weights.
    reference = make_model()
    reference_optimizer = optimizer_class(reference.parameters(), lr=1e-2, rank=4)
    for micro in range(ACCUMULATION):
        reference(micro_batch(0, micro)).square().mean().backward()
    reference_optimizer.step()
    for param, other in zip(model.parameters(), reference.parameters()):
        assert torch.equal(param, other)


def test_scheduler_learning_rate_is_used():
    # Without weight decay Lion moves each entry by exactly the learning rate, so the
    # weight change over each accumulated step shows which learning rate the hooks used.
    model = make_model()
    optimizer = MLorcLion(model.parameters(), lr=1e-2, rank=4)
    scheduler = LambdaLR(optimizer, schedule)
    PerLayerUpdater(optimizer, model, accumulation_steps=2)
    for step in range(4):
        before = model[0].weight.detach().clone()
        for micro in range(2):
            (model(micro_batch(step, micro)).square().mean() / 2).backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        expected = 1e-2 * schedule(step)
        change = (model[0].weight - before).abs()
        assert torch.allclose(change, torch.full_like(change, expected), rtol=0, atol=1e-15), step
        assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * schedule(step + 1), rel=1e-15)


def test_gradients_freed_during_backward():
    # The first layer's weight is the last to receive its gradient; when it does, every
    # later parameter has already been stepped and its gradient released.
    model = make_model()
    optimizer = MLorcAdamW(model.parameters(), lr=1e-2)
    PerLayerUpdater(optimizer, model)
    held = {}

    def record(param):
        held.update({name: other.grad is not None for name, other in model.named_parameters()})

    model[0].weight.register_post_accumulate_grad_hook(record)
    model(micro_batch(0, 0)).square().mean().backward()
    # 0.bias gets its gradient from the same autograd node as 0.weight, in either order.
    del held["0.bias"]
    assert held == {"0.weight": False, "1.weight": False, "1.bias": False, "2.weight": False, "2.bias": False}
    for name, param in model.named_parameters():
        assert param.grad is None, name
        assert optimizer.state[param]["step"] == 1, name


def test_remove_restores_standard_mode():
    model = make_model()
    optimizer = MLorcLion(model.parameters(), lr=1e-2)
    updater = PerLayerUpdater(optimizer, model)
    updater.remove()
    initial = [param.detach().clone() for param in model.parameters()]
    model(micro_batch(0, 0)).square().mean().backward()
    for param, start in zip(model.parameters(), initial):
        assert torch.equal(param, start)
        assert param.grad is not None
    optimizer.step()
    assert all(optimizer.state[param]["step"] == 1 for param in model.parameters())


def test_nan_gradient_raises_from_backward():
    model = make_model()
    optimizer = MLorcAdamW(model.named_parameters(), lr=1e-2)
    PerLayerUpdater(optimizer, model)
    model(micro_batch(0, 0)).square().mean().backward()

    bias = model[0].bias.detach().clone()
    saved = {key: value.clone() if torch.is_tensor(value) else value for key, value in optimizer.state[model[0].bias].items()}

    # The extra term gives 0.bias a NaN gradient and leaves every other gradient finite.
    loss = model(micro_batch(0, 1)).square().mean() + (model[0].bias * float("nan")).sum()
    with pytest.raises(NonFiniteGradientError, match=r"for 0\.bias at optimizer step 2"):
        loss.backward()

    assert torch.equal(model[0].bias, bias)
    for key, value in saved.items():
        if torch.is_tensor(value):
            assert torch.equal(optimizer.state[model[0].bias][key], value), key
        else:
            assert optimizer.state[model[0].bias][key] == value, key
    # Parameters stepped before 0.bias in the same backward pass keep their update.
    assert optimizer.state[model[2].weight]["step"] == 2


def test_rejects_foreign_parameter_and_optimizer():
    model = make_model()
    optimizer = MLorcAdamW(model[0].parameters())
    with pytest.raises(ValueError, match=r"not in any parameter group of this MLorcAdamW"):
        PerLayerUpdater(optimizer, model)
    with pytest.raises(TypeError, match=r"expects an MLorc optimizer .*got AdamW"):
        PerLayerUpdater(torch.optim.AdamW(model.parameters()), model)
    with pytest.raises(ValueError, match=r"Invalid accumulation_steps: 0"):
        PerLayerUpdater(optimizer, model[0], accumulation_steps=0)

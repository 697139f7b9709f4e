"""Half-precision parameters, autocast, GradScaler and non-finite or zero gradients."""

from __future__ import annotations

import copy

import pytest
import torch

from mlorc_lab.optim import MLorcAdamW, MLorcLion, NonFiniteGradientError

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
OPTIMIZERS = [MLorcAdamW, MLorcLion]
# Unit roundoff (half the distance between 1 and the next number) of each half dtype:
# bf16 keeps 8 significant bits, fp16 keeps 11.
UNIT_ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}
STEPS = 5


def clone_state(optimizer):
    return {
        param: {key: value.clone() if torch.is_tensor(value) else value for key, value in state.items()}
        for param, state in optimizer.state.items()
    }


def assert_same_state(optimizer, saved):
    assert set(optimizer.state) == set(saved)
    for param, state in saved.items():
        assert set(optimizer.state[param]) == set(state)
        for key, value in state.items():
            if torch.is_tensor(value):
                assert torch.equal(optimizer.state[param][key], value), key
            else:
                assert optimizer.state[param][key] == value, key


def small_model(seed=0, dtype=torch.float32, device="cpu"):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(30, 40), torch.nn.Tanh(), torch.nn.Linear(40, 24)).to(device, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("optimizer_class", OPTIMIZERS)
def test_half_parameters_track_fp32_run(optimizer_class, half, device):
    # Both runs start from the same half-representable weights and see the same
    # half-representable gradients. The update runs in fp32 with fp32 state in both, so
    # the state is bit-identical and the half weights differ from the fp32 ones only by
    # one rounding per step: at most STEPS * unit roundoff * max|w|.
    generator = torch.Generator().manual_seed(0)
    shapes = [(40, 30), (40,)]
    initial = [torch.randn(shape, generator=generator).to(half).float().to(device) for shape in shapes]
    gradients = [
        [torch.randn(shape, generator=generator).to(half).float().to(device) for shape in shapes] for _ in range(STEPS)
    ]
    full = [torch.nn.Parameter(tensor.clone()) for tensor in initial]
    halves = [torch.nn.Parameter(tensor.to(half)) for tensor in initial]
    full_optimizer = optimizer_class(full, lr=1e-2, weight_decay=0.1, rank=4)
    half_optimizer = optimizer_class(halves, lr=1e-2, weight_decay=0.1, rank=4)

    for step, step_gradients in enumerate(gradients, start=1):
        for full_param, half_param, grad in zip(full, halves, step_gradients):
            full_param.grad = grad.clone()
            half_param.grad = grad.to(half)
        full_optimizer.step()
        half_optimizer.step()
        if step == 1:
            for full_param, half_param in zip(full, halves):
                assert torch.equal(half_param, full_param.to(half))

    bound = STEPS * UNIT_ROUNDOFF[half] * max(param.abs().max().item() for param in full)
    for full_param, half_param in zip(full, halves):
        assert half_param.dtype == half
        assert (half_param.float() - full_param).abs().max().item() <= bound
        for key, value in full_optimizer.state[full_param].items():
            if torch.is_tensor(value) and key != "rng_state":
                stored = half_optimizer.state[half_param][key]
                assert stored.dtype == torch.float32, key
                assert torch.equal(stored, value), key
    assert half_optimizer.is_compressed(halves[0])


@pytest.mark.parametrize("optimizer_class", OPTIMIZERS)
def test_half_state_dtype_rounds_factors(optimizer_class):
    # Factors are computed in fp32 and only rounded when stored, so at step 1 the bf16
    # factors equal the fp32 factors cast to bf16.
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(40, 30, generator=generator).to(torch.bfloat16)
    grad = torch.randn(40, 30, generator=generator).to(torch.bfloat16)
    fp32_state = torch.nn.Parameter(weight.clone())
    bf16_state = torch.nn.Parameter(weight.clone())
    fp32_optimizer = optimizer_class([fp32_state], rank=4)
    bf16_optimizer = optimizer_class([bf16_state], rank=4, state_dtype="bfloat16")
    fp32_state.grad = grad.clone()
    bf16_state.grad = grad.clone()
    fp32_optimizer.step()
    bf16_optimizer.step()

    for key in ("exp_avg_U", "exp_avg_S", "exp_avg_V"):
        stored = bf16_optimizer.state[bf16_state][key]
        assert stored.dtype == torch.bfloat16
        assert torch.equal(stored, fp32_optimizer.state[fp32_state][key].to(torch.bfloat16)), key
    assert torch.equal(bf16_state, fp32_state)


@pytest.mark.parametrize("optimizer_class", OPTIMIZERS)
def test_step_inside_autocast_matches_outside(optimizer_class):
    # Autocast would run the randomized SVD's products in bf16; the optimizer disables
    # it, so a step taken inside an autocast region is bit-identical to one outside.
    model = small_model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(torch.randn(8, 30, generator=torch.Generator().manual_seed(2))).float().square().mean()
    loss.backward()
    twin = copy.deepcopy(model)  # deepcopy leaves .grad out, so copy the gradients
    for param, twin_param in zip(model.parameters(), twin.parameters()):
        twin_param.grad = param.grad.clone()
    inside = optimizer_class(model.parameters(), lr=1e-2)
    outside = optimizer_class(twin.parameters(), lr=1e-2)
    for _ in range(2):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            inside.step()
        outside.step()

    for param, twin_param in zip(model.parameters(), twin.parameters()):
        assert torch.equal(param, twin_param)
        for key, value in inside.state[param].items():
            if torch.is_tensor(value):
                assert value.dtype != torch.bfloat16, key
                assert torch.equal(value, outside.state[twin_param][key]), key


@pytest.mark.parametrize("optimizer_class", OPTIMIZERS)
def test_grad_scaler_matches_unscaled_step(optimizer_class):
    # The scale 2**16 is a power of two, so scaling and unscaling are exact and the
    # scaled run must equal the plain one bit for bit.
    model = small_model()
    twin = copy.deepcopy(model)
    scaled_optimizer = optimizer_class(model.parameters(), lr=1e-2)
    plain_optimizer = optimizer_class(twin.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    inputs = torch.randn(8, 30, generator=torch.Generator().manual_seed(3))
    for _ in range(3):
        scaled_optimizer.zero_grad()
        plain_optimizer.zero_grad()
        scaler.scale(model(inputs).square().mean()).backward()
        scaler.step(scaled_optimizer)
        scaler.update()
        twin(inputs).square().mean().backward()
        plain_optimizer.step()

    for param, twin_param in zip(model.parameters(), twin.parameters()):
        assert torch.equal(param, twin_param)


@pytest.mark.parametrize("optimizer_class", OPTIMIZERS)
def test_grad_scaler_skips_inf_step(optimizer_class):
    model = small_model()
    optimizer = optimizer_class(model.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    inputs = torch.randn(8, 30, generator=torch.Generator().manual_seed(4))
    scaler.scale(model(inputs).square().mean()).backward()
    scaler.step(optimizer)
    scaler.update()
    weights = [param.detach().clone() for param in model.parameters()]
    saved = clone_state(optimizer)

    optimizer.zero_grad()
    bad_inputs = inputs.clone()
    bad_inputs[0, 0] = float("inf")
    scaler.scale(model(bad_inputs).square().mean()).backward()
    scaler.step(optimizer)
    scaler.update()

    assert scaler.get_scale() == 2.0**15
    for param, weight in zip(model.parameters(), weights):
        assert torch.equal(param, weight)
    assert_same_state(optimizer, saved)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("optimizer_class", OPTIMIZERS)
def test_nan_gradient_raises_and_changes_nothing(optimizer_class, device):
    model = small_model(device=device)
    optimizer = optimizer_class(model.named_parameters(), lr=1e-2)
    inputs = torch.randn(8, 30, generator=torch.Generator().manual_seed(5)).to(device)
    for _ in range(2):
        optimizer.zero_grad()
        model(inputs).square().mean().backward()
        optimizer.step()
    optimizer.zero_grad()
    model(inputs).square().mean().backward()
    model[2].weight.grad[3, 5] = float("nan")
    weights = [param.detach().clone() for param in model.parameters()]
    saved = clone_state(optimizer)

    with pytest.raises(NonFiniteGradientError, match=r"Non-finite gradient .* for 2\.weight at optimizer step 3"):
        optimizer.step()

    for param, weight in zip(model.parameters(), weights):
        assert torch.equal(param, weight)
    assert_same_state(optimizer, saved)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("optimizer_class", OPTIMIZERS)
def test_zero_gradient_gives_finite_factors(optimizer_class, device):
    # A zero gradient on zero momentum: the randomized SVD factorises the zero matrix,
    # and the weights may change only by weight decay, W (1 - lr * weight_decay).
    weight = torch.randn(40, 30, generator=torch.Generator().manual_seed(6), dtype=torch.float64).to(device)
    param = torch.nn.Parameter(weight.clone())
    optimizer = optimizer_class([param], lr=1e-2, weight_decay=0.5, rank=4)
    expected = weight.clone()
    for _ in range(3):
        param.grad = torch.zeros_like(param)
        optimizer.step()
        expected = expected * (1 - 1e-2 * 0.5)
        state = optimizer.state[param]
        assert optimizer.is_compressed(param)
        for key in state:
            if key.endswith(("_U", "_S", "_V")):
                assert torch.isfinite(state[key]).all(), key
                assert state[key].device == param.device, key
        assert torch.equal(state["exp_avg_S"], torch.zeros(4, dtype=torch.float64, device=device))
        assert (param - expected).abs().max().item() <= 1e-15
    if optimizer_class is MLorcAdamW:
        assert state["negative_v_fraction"].item() == 0.0
        assert state["negative_v_fill"].item() == 0.0

"""Shape rules, parameter groups, rejected inputs and state_bytes() of both optimizers."""

from __future__ import annotations

import pytest
import torch

from mlorc_lab.linalg import randomized_svd
from mlorc_lab.optim import MLorcAdamW, MLorcLion

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
OPTIMIZERS = [MLorcAdamW, MLorcLion]
# Seed stride of the per-parameter generators (parameter i uses seed * stride + i).
SEED_STRIDE = 1_000_003


def moment_names(optimizer_class):
    return ("exp_avg", "exp_avg_sq") if optimizer_class is MLorcAdamW else ("exp_avg",)


def random_gradient(param, seed):
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(param.shape, generator=generator, dtype=param.dtype).to(param.device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("optimizer_class", OPTIMIZERS)
def test_bias_and_layernorm_change(optimizer_class, device):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 4)).to(device)
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    optimizer = optimizer_class(model.parameters(), lr=1e-2)
    inputs = torch.randn(8, 16, generator=torch.Generator().manual_seed(1)).to(device)
    model(inputs).square().mean().backward()
    optimizer.step()

    for name in ("0.bias", "1.weight", "1.bias", "2.bias"):
        change = (dict(model.named_parameters())[name] - before[name]).abs().max().item()
        assert change > 1e-4, name
    assert optimizer.is_compressed(model[0].weight)
    assert not optimizer.is_compressed(model[1].weight)


@pytest.mark.parametrize("optimizer_class", OPTIMIZERS)
def test_small_classifier_keeps_dense_state(optimizer_class):
    # 3 x 32 at rank 4: factors would take 4 * (3 + 32 + 1) = 144 numbers > 96 entries.
    classifier = torch.nn.Parameter(torch.zeros(3, 32))
    optimizer = optimizer_class([classifier], lr=1e-2, rank=4)
    for seed in range(3):
        classifier.grad = random_gradient(classifier, seed)
        optimizer.step()

    assert not optimizer.is_compressed(classifier)
    for name in moment_names(optimizer_class):
        assert optimizer.state[classifier][name].shape == (3, 32)
    assert classifier.abs().min().item() > 0.0


@pytest.mark.parametrize("optimizer_class", OPTIMIZERS)
def test_vector_state_keeps_its_shape(optimizer_class):
    vector = torch.nn.Parameter(torch.zeros(7))
    optimizer = optimizer_class([vector], lr=1e-2, rank=4)
    vector.grad = random_gradient(vector, 0)
    optimizer.step()

    for name in moment_names(optimizer_class):
        assert optimizer.state[vector][name].shape == (7,)
        assert optimizer.moment(vector, name).shape == (7,)
    assert vector.shape == (7,)


@pytest.mark.parametrize("optimizer_class", OPTIMIZERS)
def test_rank_above_smaller_side(optimizer_class):
    # A wide 3 x 40 matrix at rank 5: dense under the size rule, an error when forced.
    wide = torch.nn.Parameter(torch.zeros(3, 40))
    optimizer = optimizer_class([wide], rank=5)
    wide.grad = random_gradient(wide, 0)
    optimizer.step()
    assert not optimizer.is_compressed(wide)
    assert optimizer.state[wide]["exp_avg"].shape == (3, 40)

    with pytest.raises(ValueError, match=r"Invalid rank: 5 exceeds min\(m, n\) = 3"):
        optimizer_class([torch.nn.Parameter(torch.zeros(3, 40))], rank=5, compress=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("optimizer_class", OPTIMIZERS)
def test_conv_weight_viewed_as_matrix(optimizer_class, device):
    conv = torch.nn.Conv2d(3, 8, kernel_size=3).to(device)
    optimizer = optimizer_class(conv.parameters(), rank=2)
    conv(torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(0)).to(device)).mean().backward()
    optimizer.step()

    state = optimizer.state[conv.weight]
    for name in moment_names(optimizer_class):
        assert state[f"{name}_U"].shape == (8, 2)
        assert state[f"{name}_S"].shape == (2,)
        assert state[f"{name}_V"].shape == (27, 2)
        assert optimizer.moment(conv.weight, name).shape == (8, 3, 3, 3)
        assert state[f"{name}_U"].device == conv.weight.device
    assert not optimizer.is_compressed(conv.bias)


@pytest.mark.parametrize("optimizer_class", OPTIMIZERS)
def test_parameter_without_gradient_is_skipped(optimizer_class):
    first = torch.nn.Parameter(torch.randn(24, 16, generator=torch.Generator().manual_seed(0)))
    second = torch.nn.Parameter(torch.randn(24, 16, generator=torch.Generator().manual_seed(1)))
    optimizer = optimizer_class([first, second], lr=1e-2)
    first.grad = random_gradient(first, 2)
    second.grad = random_gradient(second, 3)
    optimizer.step()
    saved_state = {key: value.clone() if torch.is_tensor(value) else value for key, value in optimizer.state[second].items()}
    saved_weight = second.detach().clone()

    second.grad = None
    first.grad = random_gradient(first, 4)
    optimizer.step()

    assert optimizer.state[first]["step"] == 2
    assert optimizer.state[second]["step"] == 1
    assert torch.equal(second, saved_weight)
    for key, value in saved_state.items():
        if torch.is_tensor(value):
            assert torch.equal(optimizer.state[second][key], value), key


@pytest.mark.parametrize("optimizer_class", OPTIMIZERS)
def test_sparse_gradient_rejected(optimizer_class):
    embedding = torch.nn.Embedding(50, 16, sparse=True)
    optimizer = optimizer_class(embedding.parameters())
    embedding(torch.tensor([1, 2, 3])).sum().backward()
    with pytest.raises(TypeError, match=r"does not support sparse gradients .*sparse=False"):
        optimizer.step()
    assert len(optimizer.state) == 0


@pytest.mark.parametrize("optimizer_class", OPTIMIZERS)
def test_complex_parameter_rejected(optimizer_class):
    complex_param = torch.nn.Parameter(torch.zeros(8, 8, dtype=torch.complex64))
    with pytest.raises(TypeError, match=r"does not support complex parameters .*torch.view_as_real"):
        optimizer_class([complex_param])


@pytest.mark.parametrize("optimizer_class", OPTIMIZERS)
def test_groups_use_own_rsvd_options(optimizer_class):
    # Each group's factors must equal a randomized SVD called directly with that
    # group's rank, oversampling and power iterations and the parameter's seed.
    shapes = [(40, 30), (36, 28)]
    params = [torch.nn.Parameter(torch.zeros(shape, dtype=torch.float64)) for shape in shapes]
    groups = [
        {"params": [params[0]], "rank": 2},
        {"params": [params[1]], "rank": 3, "oversampling": 2, "power_iterations": 1},
    ]
    seed = 7
    optimizer = optimizer_class(groups, lr=1e-2, seed=seed)
    gradients = [random_gradient(param, index) for index, param in enumerate(params)]
    for param, grad in zip(params, gradients):
        param.grad = grad.clone()
    optimizer.step()

    # The first stored momentum is (1 - beta) * g, with beta2 for Lion and beta1 for AdamW.
    decay = optimizer.defaults["betas"][1 if optimizer_class is MLorcLion else 0]
    for index, (group, param, grad) in enumerate(zip(groups, params, gradients)):
        generator = torch.Generator().manual_seed(seed * SEED_STRIDE + index)
        expected = randomized_svd(
            (1 - decay) * grad,
            group["rank"],
            oversampling=group.get("oversampling", 0),
            power_iterations=group.get("power_iterations", 0),
            generator=generator,
        )
        state = optimizer.state[param]
        assert state["exp_avg_S"].shape == (group["rank"],)
        assert torch.allclose(state["exp_avg_S"], expected.S, rtol=1e-12, atol=0)
        assert torch.allclose(
            state["exp_avg_U"] * state["exp_avg_S"] @ state["exp_avg_V"].T,
            expected.U * expected.S @ expected.V.T,
            rtol=0,
            atol=1e-12,
        )


@pytest.mark.parametrize("optimizer_class", OPTIMIZERS)
def test_group_opts_out_of_compression(optimizer_class):
    compressed = torch.nn.Parameter(torch.zeros(40, 30))
    dense = torch.nn.Parameter(torch.zeros(40, 30))
    optimizer = optimizer_class([{"params": [compressed]}, {"params": [dense], "compress": False}])
    compressed.grad = random_gradient(compressed, 0)
    dense.grad = random_gradient(dense, 1)
    optimizer.step()
    assert optimizer.is_compressed(compressed)
    assert not optimizer.is_compressed(dense)
    assert optimizer.state[dense]["exp_avg"].shape == (40, 30)


@pytest.mark.parametrize(
    ("optimizer_class", "moments"),
    [(MLorcAdamW, 2), (MLorcLion, 1)],
)
@pytest.mark.parametrize(("state_dtype", "itemsize"), [(None, 4), ("bfloat16", 2)])
def test_state_bytes(optimizer_class, moments, state_dtype, itemsize):
    model = torch.nn.Sequential(torch.nn.Linear(30, 40), torch.nn.Linear(40, 3))
    rank = 4
    optimizer = optimizer_class(model.named_parameters(), rank=rank, state_dtype=state_dtype)
    assert optimizer.state_bytes()["0.weight"] == {"compressed": 0, "dense": 0}

    model(torch.randn(5, 30, generator=torch.Generator().manual_seed(0))).sum().backward()
    optimizer.step()
    report = optimizer.state_bytes()

    m, n = 40, 30
    assert report["0.weight"] == {"compressed": moments * rank * (m + n + 1) * itemsize, "dense": 0}
    assert report["0.bias"] == {"compressed": 0, "dense": moments * 40 * itemsize}
    # 3 x 40 at rank 4 keeps dense state (factors would be larger).
    assert report["1.weight"] == {"compressed": 0, "dense": moments * 3 * 40 * itemsize}
    assert report["1.bias"] == {"compressed": 0, "dense": moments * 3 * itemsize}
    assert set(report) == {"0.weight", "0.bias", "1.weight", "1.bias"}


def test_state_bytes_keys_by_index_without_names():
    params = [torch.nn.Parameter(torch.zeros(5)), torch.nn.Parameter(torch.zeros(50, 60))]
    optimizer = MLorcLion([{"params": [params[0]]}, {"params": [params[1]], "rank": 2}])
    for seed, param in enumerate(params):
        param.grad = random_gradient(param, seed)
    optimizer.step()
    assert optimizer.state_bytes() == {
        0: {"compressed": 0, "dense": 5 * 4},
        1: {"compressed": 2 * (50 + 60 + 1) * 4, "dense": 0},
    }


@pytest.mark.parametrize("optimizer_class", OPTIMIZERS)
def test_integer_parameter_rejected(optimizer_class):
    counts = torch.zeros(4, dtype=torch.int64)
    with pytest.raises(TypeError, match=r"expects floating-point parameters, got dtype torch.int64"):
        optimizer_class([counts])

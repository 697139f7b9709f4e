"""MLorcLion against lion_pytorch.Lion and a dense reference of the Lion paper's rule."""

from __future__ import annotations

import pytest
import torch
from lion_pytorch import Lion

from mlorc_lab.optim import MLorcLion

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

LR = 1e-2
BETAS = (0.9, 0.99)
WEIGHT_DECAY = 0.1
STEPS = 20
# Full-rank factors rebuild the momentum to within about 1e-15 in fp64, so weights can
# only differ where sign() flips; each test asserts that the smallest
# |beta1 * m + (1 - beta1) * g| stays far above that (MARGIN), so no sign can flip and
# the weights agree to fp64 rounding of a few lr-sized steps.
WEIGHT_TOLERANCE = 1e-12
MOMENT_TOLERANCE = 1e-12
MARGIN = 1e-8


def reference_lion_step(weight, momentum, grad, *, lr, beta1, beta2, weight_decay):
    """One step of Lion as Chen et al. (2023), Algorithm 2, writes it.

    update = sign(interp(g, m, beta1)); m = interp(g, m, beta2); update += lambda * W;
    W = W - lr * update, where interp(g, m, beta) = beta * m + (1 - beta) * g.
    Returns the new weight, the new momentum and the pre-sign mix.
    """
    mix = beta1 * momentum + (1 - beta1) * grad
    update = torch.sign(mix) + weight_decay * weight
    new_momentum = beta2 * momentum + (1 - beta2) * grad
    return weight - lr * update, new_momentum, mix


def gradient_sequence(shape, steps, device, seed=1):
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return [torch.randn(shape, generator=generator, dtype=torch.float64).to(device) for _ in range(steps)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(6, 5), (8, 3, 3, 3)])
def test_full_rank_matches_lion_pytorch(device, shape):
    initial = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(device)
    ours = torch.nn.Parameter(initial.clone())
    theirs = torch.nn.Parameter(initial.clone())
    full_rank = min(shape[0], initial[0].numel())
    mlorc = MLorcLion([ours], lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY, rank=full_rank, compress=True)
    lion = Lion([theirs], lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY)

    smallest_mix = float("inf")
    for grad in gradient_sequence(shape, STEPS, device):
        if lion.state[theirs]:
            mix = BETAS[0] * lion.state[theirs]["exp_avg"] + (1 - BETAS[0]) * grad
            smallest_mix = min(smallest_mix, mix.abs().min().item())
        ours.grad = grad.clone()
        theirs.grad = grad.clone()
        mlorc.step()
        lion.step()
        assert mlorc.is_compressed(ours)
        assert (ours - theirs).abs().max().item() <= WEIGHT_TOLERANCE
        assert (mlorc.moment(ours) - lion.state[theirs]["exp_avg"]).abs().max().item() <= MOMENT_TOLERANCE
    assert smallest_mix > MARGIN


@pytest.mark.parametrize("device", DEVICES)
def test_lion_pytorch_follows_paper_betas(device):
    # lion_pytorch must mix with beta1 and decay with beta2; a port with the two swapped
    # would fail here, and the test above would then compare against the wrong rule.
    shape = (6, 5)
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(device)
    param = torch.nn.Parameter(weight.clone())
    lion = Lion([param], lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY)
    momentum = torch.zeros_like(weight)
    for grad in gradient_sequence(shape, 5, device):
        weight, momentum, _ = reference_lion_step(
            weight, momentum, grad, lr=LR, beta1=BETAS[0], beta2=BETAS[1], weight_decay=WEIGHT_DECAY
        )
        param.grad = grad.clone()
        lion.step()
    assert (param - weight).abs().max().item() <= WEIGHT_TOLERANCE
    assert (lion.state[param]["exp_avg"] - momentum).abs().max().item() <= MOMENT_TOLERANCE


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("shape", "compress"),
    [((6, 5), True), ((7,), None), ((3, 32), None)],
    ids=["compressed-full-rank", "vector-dense", "small-matrix-dense"],
)
def test_matches_paper_reference(device, shape, compress):
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(device)
    param = torch.nn.Parameter(weight.clone())
    rank = min(shape) if len(shape) == 2 else 4
    optimizer = MLorcLion([param], lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY, rank=rank, compress=compress)
    momentum = torch.zeros_like(weight)

    smallest_mix = float("inf")
    for grad in gradient_sequence(shape, STEPS, device, seed=3):
        weight, momentum, mix = reference_lion_step(
            weight, momentum, grad, lr=LR, beta1=BETAS[0], beta2=BETAS[1], weight_decay=WEIGHT_DECAY
        )
        smallest_mix = min(smallest_mix, mix.abs().min().item())
        param.grad = grad.clone()
        optimizer.step()
        assert (param - weight).abs().max().item() <= WEIGHT_TOLERANCE
        assert (optimizer.moment(param) - momentum).abs().max().item() <= MOMENT_TOLERANCE
    assert optimizer.is_compressed(param) is (compress is True)
    assert smallest_mix > MARGIN


def test_each_entry_moves_by_lr():
    # Without weight decay every entry with a nonzero mix moves by exactly lr.
    param = torch.nn.Parameter(torch.zeros(16, 12, dtype=torch.float64))
    optimizer = MLorcLion([param], lr=0.125, rank=2)
    for grad in gradient_sequence((16, 12), 3, "cpu", seed=4):
        before = param.detach().clone()
        param.grad = grad
        optimizer.step()
        assert torch.equal((param - before).abs(), torch.full((16, 12), 0.125, dtype=torch.float64))


def test_low_rank_state_shapes():
    param = torch.nn.Parameter(torch.randn(40, 24, generator=torch.Generator().manual_seed(5)))
    optimizer = MLorcLion([param], rank=3)
    for grad in gradient_sequence((40, 24), 4, "cpu", seed=6):
        param.grad = grad.float()
        optimizer.step()
    state = optimizer.state[param]
    assert state["exp_avg_U"].shape == (40, 3)
    assert state["exp_avg_S"].shape == (3,)
    assert state["exp_avg_V"].shape == (24, 3)
    assert "exp_avg" not in state
    assert state["step"] == 4
    assert torch.linalg.matrix_rank(optimizer.moment(param)).item() == 3


def test_defaults():
    optimizer = MLorcLion([torch.nn.Parameter(torch.zeros(4))])
    assert optimizer.defaults["lr"] == 1e-4
    assert optimizer.defaults["betas"] == (0.9, 0.99)
    assert optimizer.defaults["weight_decay"] == 0.0
    assert optimizer.defaults["rank"] == 4
    assert optimizer.defaults["oversampling"] == 0
    assert optimizer.defaults["power_iterations"] == 0
    assert optimizer.defaults["compress"] is None
    assert optimizer.defaults["state_dtype"] is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(betas=(1.5, 0.99)), r"Invalid beta parameter at index 0: 1.5"),
        (dict(betas=(0.9, -0.1)), r"Invalid beta parameter at index 1: -0.1"),
        (dict(betas=(0.9,)), r"Invalid betas: \(0.9,\)"),
        (dict(lr=-1.0), r"Invalid learning rate: -1.0"),
        (dict(weight_decay=-0.5), r"Invalid weight_decay value: -0.5"),
        (dict(rank=0), r"Invalid rank: 0"),
    ],
)
def test_invalid_options(options, message):
    with pytest.raises(ValueError, match=message):
        MLorcLion([torch.nn.Parameter(torch.zeros(8, 8))], **options)


def test_unknown_moment_name():
    param = torch.nn.Parameter(torch.zeros(8, 8))
    optimizer = MLorcLion([param])
    assert optimizer.moment(param) is None
    with pytest.raises(ValueError, match=r"Unknown moment 'exp_avg_sq'"):
        optimizer.moment(param, "exp_avg_sq")

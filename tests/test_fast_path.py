"""The fast MLorc update against the reference path, step by step, and its helpers."""

from __future__ import annotations

import pytest
import torch

from mlorc_lab.optim import MLorcAdamW, MLorcLion
from mlorc_lab.optim.compression import fix_negative_entries
from mlorc_lab.optim.fast import fix_negative_entries_, orthonormal_basis

STEPS = 25
SHAPES = [(48, 40), (8, 3, 3, 5), (30,)]
# Options that exercise oversampling, power iterations and the size rule together.
RSVD_OPTIONS = [dict(rank=4), dict(rank=3, oversampling=2, power_iterations=1)]


def gradient_sequence(shape, dtype, seed=0):
    """Gradients with a decaying rank-4 part plus noise, so the top-r subspace is stable.

    A gap between the 4th and 5th singular value of the moments keeps the randomized SVD
    well conditioned, so that rounding differences between the paths stay at rounding
    level instead of rotating the basis.
    """
    generator = torch.Generator().manual_seed(seed)
    rows, cols = shape[0], int(torch.tensor(shape[1:]).prod()) if len(shape) > 1 else 1
    left = torch.randn(rows, 4, generator=generator, dtype=torch.float64)
    right = torch.randn(cols, 4, generator=generator, dtype=torch.float64)
    scales = torch.tensor([8.0, 4.0, 2.0, 1.0], dtype=torch.float64)
    grads = []
    for _ in range(STEPS):
        wobble = 1.0 + 0.1 * torch.randn(4, generator=generator, dtype=torch.float64)
        signal = (left * scales * wobble) @ right.T
        noise = 0.01 * torch.randn(rows, cols, generator=generator, dtype=torch.float64)
        grads.append((signal + noise).reshape(shape).to(dtype))
    return grads


def run_both(optimizer_class, dtype, options, compare, candidate):
    """Step a reference optimizer and a ``candidate`` one alike, comparing after each step."""
    params = {}
    optimizers = {}
    for implementation in ("reference", candidate):
        generator = torch.Generator().manual_seed(1)
        params[implementation] = [
            torch.nn.Parameter(torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype))
            for shape in SHAPES
        ]
        optimizers[implementation] = optimizer_class(
            params[implementation], lr=1e-2, weight_decay=0.1, implementation=implementation, seed=3, **options
        )
    gradients = [gradient_sequence(shape, dtype, seed=index) for index, shape in enumerate(SHAPES)]
    for step in range(STEPS):
        for implementation in ("reference", candidate):
            for param, sequence in zip(params[implementation], gradients):
                param.grad = sequence[step].clone()
            optimizers[implementation].step()
        compare(step, params["reference"], params[candidate], optimizers["reference"], optimizers[candidate])


@pytest.mark.parametrize("options", RSVD_OPTIONS)
@pytest.mark.parametrize(
    ("dtype", "weight_atol", "moment_rtol"),
    # The paths differ by the summation order of the sketch product, about the unit
    # roundoff relative. The moments keep that size (measured: 6e-14 of the largest
    # entry in fp64, 2e-5 in fp32), while m / sqrt(v) amplifies it at entries where v is
    # small (measured weight differences: 2e-12 in fp64, 9e-4 in fp32). The fp32 weight
    # tolerance, 2e-3, is under 1 % of the 0.25 that 25 steps of lr 1e-2 can move a weight.
    [(torch.float64, 1e-10, 1e-11), (torch.float32, 2e-3, 1e-4)],
)
def test_adamw_fast_matches_reference_every_step(dtype, weight_atol, moment_rtol, options):
    def compare(step, reference_params, params, reference_optimizer, optimizer):
        for reference, fast in zip(reference_params, params):
            torch.testing.assert_close(fast, reference, rtol=0, atol=weight_atol, msg=f"weights, step {step + 1}")
            for name in ("exp_avg", "exp_avg_sq"):
                expected = reference_optimizer.moment(reference, name)
                actual = optimizer.moment(fast, name)
                scale = expected.abs().max().item()
                torch.testing.assert_close(
                    actual, expected, rtol=0, atol=moment_rtol * scale, msg=f"{name}, step {step + 1}"
                )
        state_reference = reference_optimizer.state[reference_params[0]]
        state_fast = optimizer.state[params[0]]
        if step > 0:
            torch.testing.assert_close(
                state_fast["negative_v_fraction"], state_reference["negative_v_fraction"], rtol=0, atol=0.01
            )
            torch.testing.assert_close(
                state_fast["negative_v_fill"], state_reference["negative_v_fill"], rtol=1e-3, atol=1e-12
            )

    run_both(MLorcAdamW, dtype, options, compare, "fast")


@pytest.mark.parametrize("options", RSVD_OPTIONS)
@pytest.mark.parametrize(("dtype", "moment_rtol"), [(torch.float64, 1e-11), (torch.float32, 1e-4)])
def test_lion_fast_matches_reference_every_step(dtype, moment_rtol, options):
    # Lion's weights move by exactly lr * sign(...), so they agree to rounding unless a
    # sign flips; the rank-4 gradients keep beta1 * m + (1 - beta1) * g far from zero
    # at all but a few entries, which the mismatch count allows for.
    def compare(step, reference_params, params, reference_optimizer, optimizer):
        for reference, fast in zip(reference_params, params):
            differs = (fast - reference).abs() > 1e-6
            assert differs.sum().item() <= 0.01 * reference.numel(), f"weights, step {step + 1}"
            expected = reference_optimizer.moment(reference)
            actual = optimizer.moment(fast)
            scale = expected.abs().max().item()
            torch.testing.assert_close(actual, expected, rtol=0, atol=moment_rtol * scale, msg=f"step {step + 1}")

    run_both(MLorcLion, dtype, options, compare, "fast")


def test_in_place_negative_v_fix_matches_reference():
    generator = torch.Generator().manual_seed(0)
    rebuilt = torch.randn(64, 48, generator=generator) + 0.5  # about 30 % negative entries
    expected, expected_fraction, expected_fill = fix_negative_entries(rebuilt.clone())
    actual = rebuilt.clone()
    fraction, fill = fix_negative_entries_(actual, scratch=torch.empty_like(actual))
    # The fill is the same sum in another order (negated values instead of absolute ones).
    torch.testing.assert_close(fill, expected_fill, rtol=1e-6, atol=0)
    assert fraction.item() == expected_fraction.item()
    negative = rebuilt < 0
    assert torch.equal(actual[~negative], rebuilt[~negative])
    torch.testing.assert_close(actual[negative], expected[negative], rtol=1e-6, atol=0)


def test_in_place_negative_v_fix_without_negatives_is_identity():
    rebuilt = torch.tensor([[0.5, 0.0], [0.4, 0.1]])
    actual = rebuilt.clone()
    fraction, fill = fix_negative_entries_(actual, scratch=torch.empty_like(actual))
    assert torch.equal(actual, rebuilt)
    assert fraction.item() == 0.0
    assert fill.item() == 0.0


def test_cholesky_basis_spans_householder_basis():
    generator = torch.Generator().manual_seed(0)
    sketch = torch.randn(500, 6, generator=generator)
    householder = orthonormal_basis(sketch, "householder")
    cholesky = orthonormal_basis(sketch, "cholesky")
    # Sign-free comparison: both bases must give the same orthogonal projector.
    torch.testing.assert_close(cholesky @ cholesky.T, householder @ householder.T, rtol=0, atol=1e-5)
    torch.testing.assert_close(cholesky.T @ cholesky, torch.eye(6), rtol=0, atol=1e-5)


def test_cholesky_basis_of_rank_deficient_sketch_is_orthonormal():
    # Two equal columns make the Gram matrix singular, so Cholesky fails and the
    # Householder QR is used for this sketch.
    generator = torch.Generator().manual_seed(0)
    column = torch.randn(100, 1, generator=generator, dtype=torch.float64)
    sketch = torch.cat([column, column, torch.randn(100, 2, generator=generator, dtype=torch.float64)], dim=1)
    basis = orthonormal_basis(sketch, "cholesky")
    torch.testing.assert_close(basis.T @ basis, torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize(("optimizer_class", "moments"), [(MLorcAdamW, 2), (MLorcLion, 1)])
def test_workspace_is_one_matrix_per_moment_of_largest(optimizer_class, moments):
    params = [torch.nn.Parameter(torch.zeros(64, 48)), torch.nn.Parameter(torch.zeros(40, 30))]
    optimizer = optimizer_class(params, rank=4)
    for param in params:
        param.grad = torch.ones_like(param)
    optimizer.step()
    assert optimizer.workspace_bytes() == moments * 64 * 48 * 4
    optimizer.release_workspace()
    assert optimizer.workspace_bytes() == 0


def test_reference_keeps_no_workspace():
    param = torch.nn.Parameter(torch.zeros(64, 48))
    optimizer = MLorcAdamW([param], rank=4, implementation="reference")
    param.grad = torch.ones_like(param)
    optimizer.step()
    assert optimizer.workspace_bytes() == 0



@pytest.mark.parametrize(
    ("optimizer_class", "dtype", "weight_atol", "moment_rtol"),
    [
        (MLorcAdamW, torch.float64, 1e-12, 1e-12),
        (MLorcAdamW, torch.float32, 1e-5, 1e-4),
        (MLorcLion, torch.float64, 1e-12, 1e-12),
        (MLorcLion, torch.float32, 1e-6, 1e-4),
    ],
)
def test_compiled_step_matches_reference_step(optimizer_class, dtype, weight_atol, moment_rtol):
    # Each step starts both paths from the reference's weights and state, so the check
    # is one step's arithmetic. Along a whole run the negative-v fix amplifies
    # rounding: an entry of the rebuilt v that lands on the other side of zero gets
    # the fill value in one path only. In fp32 that moved v by 6e-4 of its largest
    # entry after 17 steps, so only a one-step comparison isolates kernel errors.
    # The moment tolerances are those of the fast path tests, whose randomized SVD
    # this path shares; the weights move by the kernels' rounding only.
    generator = torch.Generator().manual_seed(1)
    initial = [torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype) for shape in SHAPES]
    gradients = [gradient_sequence(shape, dtype, seed=index) for index, shape in enumerate(SHAPES)]

    params, optimizers = {}, {}
    for implementation in ("reference", "compiled"):
        params[implementation] = [torch.nn.Parameter(value.clone()) for value in initial]
        optimizers[implementation] = optimizer_class(
            params[implementation], lr=1e-2, weight_decay=0.1, rank=4, implementation=implementation, seed=3
        )

    for step in range(STEPS):
        if step > 0:
            state = optimizers["reference"].state_dict()
            state["param_groups"][0]["implementation"] = "compiled"
            optimizers["compiled"].load_state_dict(state)
            with torch.no_grad():
                for target, source in zip(params["compiled"], params["reference"]):
                    target.copy_(source)
        for implementation in ("reference", "compiled"):
            for param, sequence in zip(params[implementation], gradients):
                param.grad = sequence[step].clone()
            optimizers[implementation].step()

        for reference, compiled in zip(params["reference"], params["compiled"]):
            torch.testing.assert_close(compiled, reference, rtol=0, atol=weight_atol, msg=f"weights, step {step + 1}")
            for name in optimizer_class._moment_names:
                expected = optimizers["reference"].moment(reference, name)
                actual = optimizers["compiled"].moment(compiled, name)
                scale = expected.abs().max().item()
                torch.testing.assert_close(
                    actual, expected, rtol=0, atol=moment_rtol * scale, msg=f"{name}, step {step + 1}"
                )



@pytest.mark.parametrize("optimizer_class", [MLorcAdamW, MLorcLion])
def test_compiled_path_serves_many_shapes_and_rates(optimizer_class):
    # Twelve shapes and a new learning rate every step: more variants than
    # torch.compile's default limit of 8 recompilations, so each kernel must compile once.
    shapes = [(8 + index, 12 + 3 * index) for index in range(12)]
    generator = torch.Generator().manual_seed(0)
    initial = [torch.randn(shape, generator=generator, dtype=torch.float64) for shape in shapes]
    grads = [[torch.randn(shape, generator=generator, dtype=torch.float64) for shape in shapes] for _ in range(3)]
    params = {}
    for implementation in ("reference", "compiled"):
        params[implementation] = [torch.nn.Parameter(value.clone()) for value in initial]
        optimizer = optimizer_class(params[implementation], lr=1e-2, rank=2, implementation=implementation)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
        for step_grads in grads:
            for param, grad in zip(params[implementation], step_grads):
                param.grad = grad.clone()
            optimizer.step()
            schedule.step()

    for reference, compiled in zip(params["reference"], params["compiled"]):
        torch.testing.assert_close(compiled, reference, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(implementation="triton"), "Invalid implementation: 'triton'"),
        (dict(orthonormalisation="gram"), "Invalid orthonormalisation: 'gram'"),
    ],
)
def test_invalid_fast_path_options_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MLorcAdamW([torch.nn.Parameter(torch.zeros(8, 10))], **kwargs)

"""Randomized SVD against torch.linalg.svd on matrices of known rank and spectrum."""

import pytest
import torch

from mlorc_lab.linalg import LowRankFactors, randomized_svd, rebuild, sketch_width

# Relative tolerances by dtype: a few hundred ulps of the compute dtype, since QR and
# SVD of an (m, l) sketch accumulate rounding over O(m) operations.
RTOL = {torch.float64: 1e-10, torch.float32: 1e-4}


def matrix_with_spectrum(m, n, singular_values, dtype, seed=0):
    """Return an (m, n) matrix U diag(s) V^T with random orthonormal U, V."""
    generator = torch.Generator().manual_seed(seed)
    k = len(singular_values)
    u, _ = torch.linalg.qr(torch.randn(m, k, generator=generator, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, k, generator=generator, dtype=torch.float64))
    s = torch.tensor(singular_values, dtype=torch.float64)
    return ((u * s) @ v.T).to(dtype)


def projector(basis):
    return basis @ basis.T


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_exact_rank_matrix_recovered(dtype):
    spectrum = [10.0, 5.0, 2.0, 1.0, 0.5]
    matrix = matrix_with_spectrum(60, 40, spectrum, dtype)
    factors = randomized_svd(matrix, 5, generator=torch.Generator().manual_seed(1))
    expected = torch.linalg.svdvals(matrix.double())[:5]
    torch.testing.assert_close(factors.S.double(), expected, rtol=RTOL[dtype], atol=0)
    error = torch.linalg.norm(rebuild(factors).double() - matrix.double()) / torch.linalg.norm(matrix.double())
    assert error.item() < RTOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_subspaces_match_dense_svd(dtype):
    matrix = matrix_with_spectrum(50, 30, [8.0, 4.0, 2.0], dtype, seed=3)
    factors = randomized_svd(matrix, 3, oversampling=2, generator=torch.Generator().manual_seed(4))
    u, _, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    # Sign-free comparison: the projectors onto the singular subspaces are unique.
    torch.testing.assert_close(projector(factors.U.double()), projector(u[:, :3]), rtol=0, atol=RTOL[dtype] * 10)
    torch.testing.assert_close(projector(factors.V.double()), projector(vh[:3].T), rtol=0, atol=RTOL[dtype] * 10)


def test_full_rank_reproduces_matrix_wide_and_tall():
    generator = torch.Generator().manual_seed(5)
    for shape in [(7, 19), (19, 7)]:
        matrix = torch.randn(*shape, generator=generator, dtype=torch.float64)
        factors = randomized_svd(matrix, min(shape), generator=generator)
        torch.testing.assert_close(rebuild(factors), matrix, rtol=0, atol=1e-12)


def test_truncation_error_near_optimal_with_power_iterations():
    # Decaying spectrum: the best rank-4 Frobenius error is the tail norm; with one power
    # iteration and p = 5 the randomized error should be within 10 % of it.
    spectrum = [2.0 ** (-i) for i in range(20)]
    matrix = matrix_with_spectrum(80, 60, spectrum, torch.float64, seed=7)
    tail = torch.tensor(spectrum[4:], dtype=torch.float64).square().sum().sqrt()
    factors = randomized_svd(
        matrix, 4, oversampling=5, power_iterations=1, generator=torch.Generator().manual_seed(8)
    )
    error = torch.linalg.norm(matrix - rebuild(factors))
    assert tail.item() <= error.item() <= 1.1 * tail.item()


def test_low_precision_input_computed_in_fp32():
    matrix = matrix_with_spectrum(32, 16, [3.0, 1.0], torch.bfloat16)
    factors = randomized_svd(matrix, 2, generator=torch.Generator().manual_seed(0))
    assert factors.U.dtype == torch.float32
    expected = torch.linalg.svdvals(matrix.double())[:2]
    torch.testing.assert_close(factors.S.double(), expected, rtol=1e-4, atol=0)


def test_generator_makes_draws_reproducible_and_leaves_global_rng():
    matrix = torch.randn(30, 20, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first = randomized_svd(matrix, 3, generator=torch.Generator().manual_seed(9))
    second = randomized_svd(matrix, 3, generator=torch.Generator().manual_seed(9))
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(first.U, second.U)
    assert torch.equal(first.S, second.S)


def test_zero_matrix_gives_finite_factors():
    factors = randomized_svd(torch.zeros(10, 6), 2)
    for tensor in factors:
        assert torch.isfinite(tensor).all()
    assert torch.count_nonzero(rebuild(factors)) == 0


def test_sketch_width_rule():
    assert sketch_width((100, 50), 4, 0) == 4
    assert sketch_width((100, 50), 4, 10) == 14
    assert sketch_width((100, 6), 4, 10) == 6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(rank=0), "Invalid rank: 0"),
        (dict(rank=11), "Invalid rank: 11 exceeds"),
        (dict(rank=2, oversampling=-1), "Invalid oversampling: -1"),
        (dict(rank=2, power_iterations=-2), "Invalid power_iterations: -2"),
    ],
)
def test_invalid_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        randomized_svd(torch.ones(10, 12), **kwargs)


def test_non_matrix_raises():
    with pytest.raises(ValueError, match="expects a 2-D matrix"):
        randomized_svd(torch.ones(3, 4, 5), 2)


def test_factors_type():
    factors = randomized_svd(torch.eye(4), 2)
    assert isinstance(factors, LowRankFactors)
    assert factors.U.shape == (4, 2)
    assert factors.V.shape == (4, 2)

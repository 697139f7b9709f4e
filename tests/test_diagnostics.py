"""RSVD error bound, low-rank summaries and principal angles against hand computations."""

import math

import pytest
import torch

from mlorc_lab.diagnostics import (
    matrix_with_spectrum,
    rsvd_error_study,
    rsvd_error_sweep,
    summarize_low_rank,
    synthetic_spectrum,
    theorem_threshold,
)
from mlorc_lab.diagnostics.rsvd_error import NOISE_STANDARD_ERRORS
from mlorc_lab.linalg import principal_angles, randomized_svd, rsvd_error_bound


def test_bound_arithmetic_by_hand():
    # r = 4, p = 5: (1 + 4 / 4)^(1/2) * 2 = 2 sqrt(2).
    assert rsvd_error_bound(2.0, 4, 5) == pytest.approx(2.0 * math.sqrt(2.0), rel=1e-15)
    # r = 8, p = 2: (1 + 8 / 1)^(1/2) * 0.5 = 1.5.
    assert rsvd_error_bound(0.5, 8, 2) == pytest.approx(1.5, rel=1e-15)
    # r = 4, p = 10: (1 + 4 / 9)^(1/2) * 3 = sqrt(13).
    assert rsvd_error_bound(3.0, 4, 10) == pytest.approx(math.sqrt(13.0), rel=1e-15)


@pytest.mark.parametrize("oversampling", [0, 1])
def test_bound_undefined_below_two(oversampling):
    assert rsvd_error_bound(1.0, 4, oversampling) is None
    matrix = torch.randn(30, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    study = rsvd_error_study(matrix, 4, oversampling, 0, 3, torch.Generator().manual_seed(1))
    assert study.bound is None
    assert study.bound_defined is False
    record = study.as_record()
    assert record["bound"] is None
    assert record["bound_over_tail"] is None
    assert record["range_exceeds_bound"] is None


def test_sweep_keeps_none_not_nan():
    matrix = torch.randn(30, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    frame = rsvd_error_sweep(matrix, 3, draws=2, generator=torch.Generator().manual_seed(1))
    assert len(frame) == 8
    undefined = frame[frame.oversampling < 2]
    assert len(undefined) == 2
    assert all(value is None for value in undefined["bound"])
    assert not undefined["bound_defined"].any()
    assert all(value is not None and math.isfinite(value) for value in frame[frame.oversampling >= 2]["bound"])


def test_bound_rejects_invalid_arguments():
    with pytest.raises(ValueError, match="Invalid oversampling: -1"):
        rsvd_error_bound(1.0, 4, -1)
    with pytest.raises(ValueError, match="Invalid rank: 0"):
        rsvd_error_bound(1.0, 0, 5)
    with pytest.raises(ValueError, match="Invalid tail: nan"):
        rsvd_error_bound(float("nan"), 4, 5)
    matrix = torch.zeros(6, 5)
    with pytest.raises(ValueError, match="Invalid draws: 1"):
        rsvd_error_study(matrix, 2, 2, 0, 1, torch.Generator())


def test_effective_oversampling_clipped_by_shape():
    # A 12 x 8 matrix has sketches of at most 8 columns, so r = 4, p = 10 uses p = 4.
    matrix = torch.randn(12, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    study = rsvd_error_study(matrix, 4, 10, 0, 2, torch.Generator().manual_seed(3))
    assert study.effective_oversampling == 4
    assert study.bound == pytest.approx(math.sqrt(1 + 4 / 3) * study.tail, rel=1e-12)
    # The sketch spans the whole column space, so the range error is rounding only.
    assert study.range_error_mean < 1e-12 * study.norm


def test_errors_coincide_at_zero_oversampling_and_exceed_tail():
    spectrum = synthetic_spectrum("polynomial", 40, 1.0)
    matrix = matrix_with_spectrum((60, 40), spectrum, torch.Generator().manual_seed(4))
    study = rsvd_error_study(matrix, 4, 0, 0, 5, torch.Generator().manual_seed(5))
    assert study.error_mean == pytest.approx(study.range_error_mean, rel=1e-12)
    expected_tail = math.sqrt(sum(value**2 for value in spectrum[4:].tolist()))
    assert study.tail == pytest.approx(expected_tail, rel=1e-10)
    # Eckart-Young: no rank-4 approximation beats the tail.
    assert study.error_mean >= study.tail * (1 - 1e-10)


@pytest.mark.parametrize("kind,rate", [("polynomial", 1.0), ("exponential", 0.15)])
@pytest.mark.parametrize("oversampling", [2, 5, 10])
def test_mean_error_within_bound_on_synthetic(kind, rate, oversampling):
    # Theorem 10.5 bounds the expected range error at q = 0. With K = 200 draws the
    # mean may exceed the bound only by sampling noise, NOISE_STANDARD_ERRORS (3)
    # standard errors std / sqrt(K).
    draws = 200
    spectrum = synthetic_spectrum(kind, 60, rate)
    matrix = matrix_with_spectrum((90, 60), spectrum, torch.Generator().manual_seed(6))
    study = rsvd_error_study(matrix, 4, oversampling, 0, draws, torch.Generator().manual_seed(7))
    margin = NOISE_STANDARD_ERRORS * study.range_error_std / math.sqrt(draws)
    assert study.range_error_mean <= study.bound + margin
    assert study.exceeds_bound("range") is False
    # The range error never beats the exact rank-(r + p) error either.
    assert study.range_error_mean >= math.sqrt(float(spectrum[4 + oversampling :].square().sum())) * (1 - 1e-10)


def test_theorem_threshold_by_hand():
    # beta2 = 0.999, d = 10 * 20 = 200, r = 4, p = 5:
    # 0.001 / (8 * 0.999 * sqrt(200 * 2)) = 0.001 / (7.992 * 20).
    assert theorem_threshold(0.999, (10, 20), 4, 5) == pytest.approx(0.001 / (7.992 * 20.0), rel=1e-12)
    assert theorem_threshold(0.999, (10, 20), 4, 0) is None
    assert theorem_threshold(0.999, (10, 20), 4, 1) is None
    with pytest.raises(ValueError, match="Invalid beta2: 1.0"):
        theorem_threshold(1.0, (10, 20), 4, 5)


def test_low_rank_summary_by_hand():
    summary = summarize_low_rank([3.0, 4.0], rank=1)
    assert summary.norm == pytest.approx(5.0)
    assert summary.tail == pytest.approx(3.0)
    assert summary.rho == pytest.approx(0.6)
    # p = (3/7, 4/7): exp(-sum p log p).
    expected = math.exp(-(3 / 7 * math.log(3 / 7) + 4 / 7 * math.log(4 / 7)))
    assert summary.effective_rank == pytest.approx(expected, rel=1e-12)
    zero = summarize_low_rank([0.0, 0.0], rank=1)
    assert zero.rho is None
    assert zero.effective_rank is None


def test_principal_angles_identical_and_orthogonal():
    generator = torch.Generator().manual_seed(8)
    basis = torch.randn(20, 3, generator=generator, dtype=torch.float64)
    mixed = basis @ torch.randn(3, 3, generator=generator, dtype=torch.float64)  # same span
    torch.testing.assert_close(principal_angles(basis, mixed), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-7)
    identity = torch.eye(6, dtype=torch.float64)
    angles = principal_angles(identity[:, :2], identity[:, 2:5])
    torch.testing.assert_close(angles, torch.full((2,), math.pi / 2, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("theta", [1e-6, 0.3, math.pi / 4, 1.2, math.pi / 2 - 1e-6])
def test_principal_angles_rotated_plane(theta):
    # span(e1, e2) against span(cos t e1 + sin t e3, e2): angles (0, t).
    identity = torch.eye(5, dtype=torch.float64)
    plane = identity[:, :2]
    rotated = torch.stack([math.cos(theta) * identity[:, 0] + math.sin(theta) * identity[:, 2], identity[:, 1]], 1)
    angles = principal_angles(plane, rotated)
    expected = torch.tensor(sorted([0.0, theta]), dtype=torch.float64)
    torch.testing.assert_close(angles, expected, rtol=0, atol=1e-12)


def test_principal_angles_unequal_dimensions():
    identity = torch.eye(5, dtype=torch.float64)
    line = identity[:, 1:2]
    angles = principal_angles(identity[:, :3], line)
    assert angles.shape == (1,)
    assert angles.item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="different spaces: 5 and 4 rows"):
        principal_angles(identity, torch.eye(4, dtype=torch.float64))


def test_synthetic_spectrum_values():
    torch.testing.assert_close(synthetic_spectrum("polynomial", 3, 2.0), torch.tensor([1.0, 0.25, 1 / 9], dtype=torch.float64))
    torch.testing.assert_close(
        synthetic_spectrum("exponential", 3, 0.5), torch.tensor([1.0, math.exp(-0.5), math.exp(-1.0)], dtype=torch.float64)
    )
    matrix = matrix_with_spectrum((7, 5), synthetic_spectrum("polynomial", 5, 1.0), torch.Generator().manual_seed(9))
    torch.testing.assert_close(
        torch.linalg.svdvals(matrix), synthetic_spectrum("polynomial", 5, 1.0), rtol=1e-12, atol=1e-14
    )


def test_study_errors_match_randomized_svd_factors():
    # The study's rank-r error must be that of randomized_svd(A, r, oversampling=p)
    # drawn from the same generator state, one draw after the other.
    matrix = torch.randn(50, 40, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    study = rsvd_error_study(matrix, 4, 5, 1, 2, torch.Generator().manual_seed(11))
    generator = torch.Generator().manual_seed(11)
    errors = []
    for _ in range(2):
        u, s, v = randomized_svd(matrix, 4, oversampling=5, power_iterations=1, generator=generator)
        errors.append(float(torch.linalg.norm(matrix - (u * s) @ v.T)))
    assert study.error_mean == pytest.approx(sum(errors) / 2, rel=1e-12)

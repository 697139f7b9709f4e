"""Randomized SVD and the low-rank factors that MLorc stores.

The randomized SVD follows Halko, Martinsson and Tropp, "Finding structure with
randomness" (SIAM Review, 2011): Algorithm 4.1 (randomized range finder) with
oversampling, optionally refined by the power iterations of Algorithm 4.4, followed by
the direct SVD of Algorithm 5.1. Randomness comes only from the generator passed in, so
the optimizer's draws never shift the global RNG that dropout and data shuffling use.

When the whole spectrum is needed, or the matrix is small, ``torch.linalg.svd`` is the
better choice: the randomized path only pays off when the rank is much smaller than
both sides of the matrix.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = [
    "LowRankFactors",
    "compute_dtype_for",
    "principal_angles",
    "randomized_svd",
    "rebuild",
    "rsvd_error_bound",
    "sketch_width",
]


class LowRankFactors(NamedTuple):
    """Rank-r factors of an (m, n) matrix A, with A ~= U @ diag(S) @ V.T.

    ``U`` is (m, r) with orthonormal columns, ``S`` is (r,) in descending order and
    ``V`` is (n, r) with orthonormal columns.
    """

    U: torch.Tensor
    S: torch.Tensor
    V: torch.Tensor


def compute_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """Return the dtype the arithmetic runs in: fp32, or fp64 for fp64 input.

    Half-precision inputs are upcast because QR and SVD in bf16 or fp16 lose most of
    their digits; fp64 is kept so that reference tests can compare tightly.
    """
    return torch.promote_types(dtype, torch.float32)


def sketch_width(shape: tuple[int, int], rank: int, oversampling: int) -> int:
    """Return the number of random test vectors, min(rank + oversampling, m, n).

    A sketch wider than the smaller side of the matrix cannot add information, so the
    oversampling is reduced there by this rule (the rank itself is never reduced).
    """
    return min(rank + oversampling, shape[0], shape[1])


def _orthonormal_basis(matrix: torch.Tensor) -> torch.Tensor:
    # Reduced QR: Q has as many columns as the input (the sketch width).
    q, _ = torch.linalg.qr(matrix, mode="reduced")
    return q


def _check_rsvd_arguments(matrix: torch.Tensor, rank: int, oversampling: int, power_iterations: int) -> None:
    if not isinstance(matrix, torch.Tensor):
        raise TypeError(f"randomized_svd expects a torch.Tensor, got {type(matrix).__name__}")
    if matrix.dim() != 2:
        raise ValueError(
            f"randomized_svd expects a 2-D matrix, got shape {tuple(matrix.shape)}; "
            "reshape n-D weights to (shape[0], -1) first"
        )
    if matrix.is_complex():
        raise TypeError(f"randomized_svd supports real matrices only, got dtype {matrix.dtype}")
    smaller_side = min(matrix.shape)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"Invalid rank: {rank!r}; rank must be an integer >= 1")
    if rank > smaller_side:
        raise ValueError(
            f"Invalid rank: {rank} exceeds the smaller side of the {tuple(matrix.shape)} matrix; "
            f"use rank <= {smaller_side}"
        )
    if isinstance(oversampling, bool) or not isinstance(oversampling, int) or oversampling < 0:
        raise ValueError(f"Invalid oversampling: {oversampling!r}; oversampling must be an integer >= 0")
    if isinstance(power_iterations, bool) or not isinstance(power_iterations, int) or power_iterations < 0:
        raise ValueError(
            f"Invalid power_iterations: {power_iterations!r}; power_iterations must be an integer >= 0"
        )


def randomized_svd(
    matrix: torch.Tensor,
    rank: int,
    *,
    oversampling: int = 0,
    power_iterations: int = 0,
    generator: torch.Generator | None = None,
) -> LowRankFactors:
    """Compute rank-``rank`` factors of ``matrix`` by randomized SVD.

    Parameters
    ----------
    matrix : Tensor of shape (m, n)
        Real matrix. The arithmetic runs in fp32 (fp64 stays fp64) whatever its dtype.
    rank : int
        Number of singular triplets kept, ``1 <= rank <= min(m, n)``.
    oversampling : int, default 0
        Extra test vectors p. The sketch has ``min(rank + p, m, n)`` columns. The MLorc
        paper's experiments use p = 0.
    power_iterations : int, default 0
        Subspace iterations q of Halko et al. (2011), Algorithm 4.4; each one sharpens
        a slowly decaying spectrum at the cost of two more products with the matrix.
    generator : torch.Generator, optional
        Source of the Gaussian test matrix; it must live on ``matrix``'s device. When
        omitted, a fresh generator seeded with 0 is used, so calls are deterministic.

    Returns
    -------
    LowRankFactors
        ``U`` (m, r), ``S`` (r,), ``V`` (n, r) in the compute dtype.

    Notes
    -----
    Steps: Omega ~ N(0, 1) of shape (n, l); Y = A Omega; Q = qr(Y); optionally
    q times Q = qr(A qr(A^T Q)); B = Q^T A; B = U_B S V^T; U = Q U_B; truncate to r.
    When ``rank`` equals ``min(m, n)`` the sketch spans the whole range of A and the
    factors reproduce A up to rounding.
    """
    _check_rsvd_arguments(matrix, rank, oversampling, power_iterations)
    dtype = compute_dtype_for(matrix.dtype)
    a = matrix.to(dtype)
    if generator is None:
        generator = torch.Generator(device=a.device).manual_seed(0)

    width = sketch_width(tuple(a.shape), rank, oversampling)
    test_matrix = torch.randn(a.shape[1], width, generator=generator, device=a.device, dtype=dtype)
    basis = _orthonormal_basis(a @ test_matrix)  # (m, l)
    for _ in range(power_iterations):
        # Re-orthonormalise after each product so rounding does not collapse the
        # basis onto the top singular vector (Halko et al. 2011, Algorithm 4.4).
        row_basis = _orthonormal_basis(a.T @ basis)  # (n, l)
        basis = _orthonormal_basis(a @ row_basis)  # (m, l)

    small = basis.T @ a  # (l, n)
    small_u, singular_values, small_vh = torch.linalg.svd(small, full_matrices=False)
    u = basis @ small_u[:, :rank]
    return LowRankFactors(u, singular_values[:rank], small_vh[:rank].T)


def rebuild(factors: LowRankFactors, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Rebuild the (m, n) matrix U @ diag(S) @ V.T from its factors.

    The product runs in the compute dtype of the factors (at least fp32) and is cast to
    ``dtype`` when given.
    """
    u, s, v = factors
    work = compute_dtype_for(u.dtype)
    matrix = (u.to(work) * s.to(work)) @ v.to(work).T
    return matrix if dtype is None else matrix.to(dtype)


def rsvd_error_bound(tail: float, rank: int, oversampling: int) -> float | None:
    """Return the expected Frobenius error bound (1 + r / (p - 1))^(1/2) * tail, or None.

    Halko, Martinsson and Tropp (2011), Theorem 10.5: for a Gaussian test matrix with
    r + p columns, Y = A Omega and no power iterations, E ||A - P_Y A||_F is at most this
    value, where ``tail`` is (sum_{j > r} sigma_j^2)^(1/2). The theorem assumes p >= 2
    (and r >= 2, r + p <= min(m, n)); for p = 0 or 1 the factor r / (p - 1) is
    undefined or negative, so None is returned instead of inf or NaN.

    The bound is for the projection onto the whole sketched range (r + p columns), which
    is at least as accurate as the rank-r factors truncated from it.
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"Invalid rank: {rank!r}; rank must be an integer >= 1")
    if isinstance(oversampling, bool) or not isinstance(oversampling, int) or oversampling < 0:
        raise ValueError(f"Invalid oversampling: {oversampling!r}; oversampling must be an integer >= 0")
    if not tail >= 0:
        raise ValueError(f"Invalid tail: {tail!r}; the tail norm must be a number >= 0")
    if oversampling < 2:
        return None
    return float((1.0 + rank / (oversampling - 1)) ** 0.5 * tail)


def principal_angles(basis_a: torch.Tensor, basis_b: torch.Tensor) -> torch.Tensor:
    """Return the principal angles, in radians and ascending, between span(A) and span(B).

    ``basis_a`` is (m, k_a) and ``basis_b`` is (m, k_b); their columns need not be
    orthonormal but must be linearly independent. The result has min(k_a, k_b) angles
    in [0, pi/2], computed in fp64. Cosines are the singular values of Q_A^T Q_B
    (Bjorck and Golub, 1973), clamped to [0, 1]. Angles below pi/4 come from the sines,
    the singular values of Q_B - Q_A Q_A^T Q_B, because arccos loses half the digits
    of a cosine near 1 (Knyazev and Argentati, 2002).
    """
    for label, basis in (("basis_a", basis_a), ("basis_b", basis_b)):
        if not isinstance(basis, torch.Tensor) or basis.dim() != 2:
            raise ValueError(f"{label} must be a 2-D tensor (m, k), got {getattr(basis, 'shape', type(basis))}")
    if basis_a.shape[0] != basis_b.shape[0]:
        raise ValueError(
            f"The bases live in different spaces: {basis_a.shape[0]} and {basis_b.shape[0]} rows; "
            "compare subspaces of the same dimension m"
        )
    # The sine formula needs the larger subspace first.
    if basis_a.shape[1] < basis_b.shape[1]:
        basis_a, basis_b = basis_b, basis_a
    q_a = _orthonormal_basis(basis_a.to(torch.float64))
    q_b = _orthonormal_basis(basis_b.to(torch.float64))
    cross = q_a.T @ q_b
    cosines = torch.linalg.svdvals(cross).clamp(0.0, 1.0)  # descending
    sines = torch.linalg.svdvals(q_b - q_a @ cross).clamp(0.0, 1.0).flip(0)  # ascending
    from_cosines = torch.arccos(cosines)
    from_sines = torch.arcsin(sines)
    return torch.where(cosines.square() >= 0.5, from_sines, from_cosines)

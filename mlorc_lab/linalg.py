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
    "randomized_svd",
    "rebuild",
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

"""Synthetic matrices with a chosen singular-value spectrum."""

from __future__ import annotations

import torch

__all__ = ["SPECTRUM_KINDS", "matrix_with_spectrum", "synthetic_spectrum"]

SPECTRUM_KINDS = ("polynomial", "exponential")


def synthetic_spectrum(kind: str, size: int, rate: float) -> torch.Tensor:
    """Return ``size`` descending singular values in fp64, with sigma_1 = 1.

    Parameters
    ----------
    kind : {"polynomial", "exponential"}
        "polynomial": sigma_j = j^(-rate), a slowly decaying spectrum whose tail keeps
        a sizeable share of the energy. "exponential": sigma_j = exp(-rate (j - 1)),
        a rapidly decaying one.
    size : int
        Number of singular values, usually min(m, n).
    rate : float
        Decay rate, > 0.
    """
    if kind not in SPECTRUM_KINDS:
        raise ValueError(f"Unknown spectrum kind {kind!r}; use one of {SPECTRUM_KINDS}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"Invalid size: {size!r}; size must be an integer >= 1")
    if not rate > 0:
        raise ValueError(f"Invalid rate: {rate!r}; the decay rate must be > 0")
    index = torch.arange(1, size + 1, dtype=torch.float64)
    if kind == "polynomial":
        return index.pow(-rate)
    return torch.exp(-rate * (index - 1))


def matrix_with_spectrum(
    shape: tuple[int, int],
    singular_values: torch.Tensor,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Return an (m, n) matrix U diag(s) V^T with Haar-random orthonormal U and V.

    ``singular_values`` has at most min(m, n) entries; U and V come from the QR of
    Gaussian matrices drawn from ``generator``, so the matrix is reproducible.
    """
    m, n = shape
    values = torch.as_tensor(singular_values, dtype=torch.float64)
    k = values.numel()
    if k > min(m, n):
        raise ValueError(f"{k} singular values do not fit a {m} x {n} matrix; pass at most {min(m, n)}")
    u, _ = torch.linalg.qr(torch.randn(m, k, generator=generator, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, k, generator=generator, dtype=torch.float64))
    return ((u * values) @ v.T).to(dtype)

"""Summaries of a singular-value spectrum: top-k ratio, energy ratio, effective rank."""

from __future__ import annotations

import numpy as np

__all__ = ["effective_rank", "energy_ratio", "tail_norm", "top_k_ratio"]


def _as_spectrum(singular_values) -> np.ndarray:
    values = np.asarray(singular_values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"Expected a 1-D array of singular values, got shape {values.shape}")
    if np.any(values < 0):
        raise ValueError(f"Singular values must be >= 0, got minimum {values.min()}")
    return values


def top_k_ratio(singular_values, k: int = 8) -> float:
    """Return sum of the k largest singular values over the sum of all of them.

    This is the quantity of the MLorc paper's Figures 1 and 4 (k = 8). Returns NaN for
    an all-zero spectrum, where the ratio is undefined.
    """
    if k < 1:
        raise ValueError(f"Invalid k: {k}; k must be >= 1")
    values = np.sort(_as_spectrum(singular_values))[::-1]
    total = values.sum()
    return float(values[:k].sum() / total) if total > 0 else float("nan")


def energy_ratio(singular_values, k: int = 8) -> float:
    """Return the top-k ratio of the squared singular values (captured Frobenius energy)."""
    return top_k_ratio(np.square(_as_spectrum(singular_values)), k)


def effective_rank(singular_values) -> float:
    """Return the entropy effective rank exp(H(p)) with p = s / sum(s).

    From Roy and Vetterli, "The effective rank: a measure of effective dimensionality"
    (EUSIPCO 2007). It is 1 for a rank-one matrix and n for n equal singular values.
    """
    values = _as_spectrum(singular_values)
    total = values.sum()
    if total == 0:
        return float("nan")
    p = values[values > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def tail_norm(singular_values, rank: int) -> float:
    """Return (sum_{j > rank} s_j^2)^(1/2), the best rank-r Frobenius error (Eckart-Young)."""
    values = np.sort(_as_spectrum(singular_values))[::-1]
    return float(np.sqrt(np.square(values[rank:]).sum()))

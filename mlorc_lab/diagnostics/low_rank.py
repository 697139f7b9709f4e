"""How close a moment is to rank r: the relative tail rho and the convergence condition.

The MLorc paper (arXiv 2506.01897) assumes the first moment is nearly rank r: its
relative tail rho = (sum_{j > r} sigma_j^2)^(1/2) / ||m||_F is small (Assumption 3.3).
Its convergence theorem (Theorem 3.4) asks for

    rho <= (1 - beta2) / (8 beta2 sqrt(d (1 + r / (p - 1)))),   d = m n,

where the square-root factor is the randomized SVD bound of Halko et al. (2011),
Theorem 10.5, so the condition is defined only for oversampling p >= 2.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from mlorc_lab.spectral import effective_rank, tail_norm, top_k_ratio

__all__ = ["LowRankSummary", "summarize_low_rank", "theorem_threshold"]


def theorem_threshold(beta2: float, shape: tuple[int, int], rank: int, oversampling: int) -> float | None:
    """Return the largest rho that Theorem 3.4's condition allows, or None for p < 2.

    Parameters
    ----------
    beta2 : float
        Second-moment decay rate, in (0, 1).
    shape : (int, int)
        Matrix shape (m, n); d = m n.
    rank, oversampling : int
        r and p of the randomized SVD.
    """
    if not 0.0 < beta2 < 1.0:
        raise ValueError(f"Invalid beta2: {beta2!r}; it must be in (0, 1) for the condition to be defined")
    m, n = shape
    if m < 1 or n < 1:
        raise ValueError(f"Invalid shape: {shape!r}; both sides must be >= 1")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"Invalid rank: {rank!r}; rank must be an integer >= 1")
    if oversampling < 2:
        return None
    d = m * n
    return (1.0 - beta2) / (8.0 * beta2 * math.sqrt(d * (1.0 + rank / (oversampling - 1))))


@dataclasses.dataclass(frozen=True)
class LowRankSummary:
    """Low-rank summary of one matrix at rank r.

    ``rho`` is tail / norm (None for the zero matrix); ``effective_rank`` is the
    entropy effective rank of Roy and Vetterli (None for the zero matrix).
    """

    rank: int
    norm: float
    tail: float
    rho: float | None
    effective_rank: float | None
    top_k_ratio: float | None


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def summarize_low_rank(singular_values, rank: int, top_k: int = 8) -> LowRankSummary:
    """Return rho, the tail, the norm and the effective rank from a spectrum."""
    values = np.asarray(singular_values, dtype=np.float64)
    norm = float(np.sqrt(np.square(values).sum()))
    tail = tail_norm(values, rank)
    return LowRankSummary(
        rank=rank,
        norm=norm,
        tail=tail,
        rho=tail / norm if norm > 0 else None,
        effective_rank=_finite_or_none(effective_rank(values)),
        top_k_ratio=_finite_or_none(top_k_ratio(values, top_k)),
    )

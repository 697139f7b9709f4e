"""Randomized SVD error against the best rank-r error and the Halko et al. bound.

For a matrix A, rank r, oversampling p and power iterations q, the study measures over
K independent Gaussian test matrices

- ``error``: ||A - U diag(S) V^T||_F of the rank-r factors, what MLorc stores;
- ``range_error``: ||A - Q Q^T A||_F of the projection onto the whole sketched range
  (r + p columns), the quantity that Halko, Martinsson and Tropp (2011), Theorem 10.5
  bounds in expectation by (1 + r / (p - 1))^(1/2) * tail for p >= 2 and q = 0;

and compares them with ``tail`` = (sum_{j > r} sigma_j^2)^(1/2) from an exact SVD, the
best rank-r error (Eckart-Young). The two errors coincide at p = 0. For p >= 1 the
truncated factors lose the p extra directions, so their error can exceed the bound
even though the range error does not.

For q > 0 Theorem 10.5 does not apply as stated (its sketch is Y = A Omega). Power
iterations only sharpen the spectrum the sketch is built from, so the q = 0 bound is reported
for reference; whether it holds for q > 0 is measured here, not proven.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from mlorc_lab.linalg import randomized_svd, rsvd_error_bound, sketch_width
from mlorc_lab.spectral import tail_norm

__all__ = [
    "DEFAULT_OVERSAMPLINGS",
    "DEFAULT_POWER_ITERATIONS",
    "NOISE_STANDARD_ERRORS",
    "RsvdErrorStudy",
    "rsvd_error_study",
    "rsvd_error_sweep",
    "studies_frame",
    "sweep_studies",
    "synthetic_sweep",
]

DEFAULT_OVERSAMPLINGS = (0, 2, 5, 10)
DEFAULT_POWER_ITERATIONS = (0, 1)

# A mean over K draws counts as exceeding the bound only when it lies more than this
# many standard errors (std / sqrt(K)) above it. Theorem 10.5 bounds the expectation,
# and 3 standard errors leave about a 0.1 % chance of flagging a true mean at the bound.
NOISE_STANDARD_ERRORS = 3.0


@dataclasses.dataclass(frozen=True)
class RsvdErrorStudy:
    """Errors of K randomized SVDs of one matrix at one (rank, oversampling, power iterations).

    All errors are Frobenius norms, absolute (divide by ``norm`` for relative ones).
    ``bound`` is None, and ``bound_defined`` False, when the effective oversampling is
    below 2. ``effective_oversampling`` is the oversampling actually used:
    min(r + p, m, n) - r, because a sketch cannot be wider than the matrix.
    """

    shape: tuple[int, int]
    rank: int
    oversampling: int
    effective_oversampling: int
    power_iterations: int
    draws: int
    norm: float
    tail: float
    error_mean: float
    error_std: float
    range_error_mean: float
    range_error_std: float
    bound: float | None
    bound_defined: bool

    def exceeds_bound(self, error_kind: str = "range") -> bool | None:
        """Return whether the mean error lies above the bound beyond sampling noise.

        ``error_kind`` is "range" (the quantity the theorem bounds) or "truncated" (the
        rank-r factors). The margin is ``NOISE_STANDARD_ERRORS`` standard errors of
        the mean. Returns None when the bound is undefined.
        """
        if error_kind not in ("range", "truncated"):
            raise ValueError(f"Unknown error kind {error_kind!r}; use 'range' or 'truncated'")
        if self.bound is None:
            return None
        mean, std = (
            (self.range_error_mean, self.range_error_std)
            if error_kind == "range"
            else (self.error_mean, self.error_std)
        )
        return mean > self.bound + NOISE_STANDARD_ERRORS * std / math.sqrt(self.draws)

    def as_record(self) -> dict[str, Any]:
        """Return a flat dict for a record or a DataFrame row, with ratios to the tail."""
        record = dataclasses.asdict(self)
        record["shape"] = list(self.shape)
        record["relative_tail"] = self.tail / self.norm if self.norm > 0 else None
        record["error_over_tail"] = self.error_mean / self.tail if self.tail > 0 else None
        record["range_error_over_tail"] = self.range_error_mean / self.tail if self.tail > 0 else None
        record["bound_over_tail"] = (
            self.bound / self.tail if self.bound is not None and self.tail > 0 else None
        )
        record["range_exceeds_bound"] = self.exceeds_bound("range")
        record["truncated_exceeds_bound"] = self.exceeds_bound("truncated")
        return record


def _check_draws(draws: int) -> None:
    # Two draws are the fewest that give a sample standard deviation.
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 2:
        raise ValueError(f"Invalid draws: {draws!r}; the number of draws must be an integer >= 2")


def rsvd_error_study(
    matrix: torch.Tensor,
    rank: int,
    oversampling: int,
    power_iterations: int,
    draws: int,
    generator: torch.Generator,
    *,
    singular_values: torch.Tensor | None = None,
) -> RsvdErrorStudy:
    """Measure the randomized SVD's error on ``matrix`` over ``draws`` test matrices.

    Parameters
    ----------
    matrix : Tensor of shape (m, n)
        Real matrix; errors are computed in fp64.
    rank, oversampling, power_iterations : int
        r, p and q of :func:`mlorc_lab.linalg.randomized_svd`.
    draws : int
        Number K >= 2 of independent Gaussian test matrices.
    generator : torch.Generator
        Source of all test matrices, on ``matrix``'s device.
    singular_values : Tensor, optional
        The exact spectrum of ``matrix``, to skip its SVD when sweeping.

    Returns
    -------
    RsvdErrorStudy
        Mean and sample standard deviation (ddof = 1) of both errors, the tail and the
        bound of Theorem 10.5 (None for an effective oversampling below 2).

    Notes
    -----
    Each draw runs one randomized SVD at rank r + p with no oversampling. It draws the
    same test matrix as ``randomized_svd(matrix, r, oversampling=p)``, so its first r
    triplets are exactly those factors, and all r + p of them rebuild Q Q^T A.
    """
    _check_draws(draws)
    if matrix.dim() != 2:
        raise ValueError(f"rsvd_error_study expects a 2-D matrix, got shape {tuple(matrix.shape)}")
    shape = (int(matrix.shape[0]), int(matrix.shape[1]))
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= min(shape):
        raise ValueError(f"Invalid rank: {rank!r}; use an integer in [1, {min(shape)}] for the {shape} matrix")
    width = sketch_width(shape, rank, oversampling)
    reference = matrix.detach().to(torch.float64)
    if singular_values is None:
        singular_values = torch.linalg.svdvals(reference)
    tail = tail_norm(singular_values.cpu().numpy(), rank)
    norm = float(torch.linalg.norm(reference))

    errors, range_errors = [], []
    for _ in range(draws):
        u, s, v = randomized_svd(
            matrix, width, oversampling=0, power_iterations=power_iterations, generator=generator
        )
        u, s, v = u.to(torch.float64), s.to(torch.float64), v.to(torch.float64)
        range_errors.append(float(torch.linalg.norm(reference - (u * s) @ v.T)))
        errors.append(float(torch.linalg.norm(reference - (u[:, :rank] * s[:rank]) @ v[:, :rank].T)))

    error_values = torch.tensor(errors, dtype=torch.float64)
    range_values = torch.tensor(range_errors, dtype=torch.float64)
    effective = width - rank
    bound = rsvd_error_bound(tail, rank, effective)
    return RsvdErrorStudy(
        shape=shape,
        rank=rank,
        oversampling=oversampling,
        effective_oversampling=effective,
        power_iterations=power_iterations,
        draws=draws,
        norm=norm,
        tail=tail,
        error_mean=float(error_values.mean()),
        error_std=float(error_values.std()),
        range_error_mean=float(range_values.mean()),
        range_error_std=float(range_values.std()),
        bound=bound,
        bound_defined=bound is not None,
    )


def sweep_studies(
    matrix: torch.Tensor,
    rank: int,
    *,
    oversamplings: Sequence[int] = DEFAULT_OVERSAMPLINGS,
    power_iterations: Sequence[int] = DEFAULT_POWER_ITERATIONS,
    draws: int = 20,
    generator: torch.Generator,
) -> list[RsvdErrorStudy]:
    """Run :func:`rsvd_error_study` over power iterations x oversampling, one exact SVD."""
    singular_values = torch.linalg.svdvals(matrix.detach().to(torch.float64))
    return [
        rsvd_error_study(matrix, rank, p, q, draws, generator, singular_values=singular_values)
        for q in power_iterations
        for p in oversamplings
    ]


# Columns that hold None where the bound is undefined; kept as object dtype so that
# pandas does not turn the None into NaN.
_OPTIONAL_COLUMNS = ("bound", "bound_over_tail", "range_exceeds_bound", "truncated_exceeds_bound")


def studies_frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Return a DataFrame of study records that keeps None (not NaN) for undefined bounds."""
    frame = pd.DataFrame(list(records))
    for column in _OPTIONAL_COLUMNS:
        if column in frame:
            frame[column] = pd.Series([record.get(column) for record in records], dtype=object, index=frame.index)
    return frame


def rsvd_error_sweep(
    matrix: torch.Tensor,
    rank: int,
    *,
    oversamplings: Sequence[int] = DEFAULT_OVERSAMPLINGS,
    power_iterations: Sequence[int] = DEFAULT_POWER_ITERATIONS,
    draws: int = 20,
    generator: torch.Generator,
) -> pd.DataFrame:
    """Run :func:`rsvd_error_study` over oversampling x power iterations.

    The exact SVD is computed once. Returns one row per (p, q) with the columns of
    :meth:`RsvdErrorStudy.as_record`; ``bound`` is None (not NaN) where
    ``bound_defined`` is False.
    """
    studies = sweep_studies(
        matrix,
        rank,
        oversamplings=oversamplings,
        power_iterations=power_iterations,
        draws=draws,
        generator=generator,
    )
    return studies_frame([study.as_record() for study in studies])


def synthetic_sweep(
    shape: tuple[int, int],
    rank: int,
    *,
    spectra: Sequence[tuple[str, float]] = (("polynomial", 1.0), ("exponential", 0.05)),
    oversamplings: Sequence[int] = DEFAULT_OVERSAMPLINGS,
    power_iterations: Sequence[int] = DEFAULT_POWER_ITERATIONS,
    draws: int = 100,
    seed: int = 0,
) -> pd.DataFrame:
    """Run :func:`rsvd_error_sweep` on one synthetic matrix per (kind, rate) spectrum.

    The default spectra are sigma_j = 1 / j, whose tail keeps most of the energy, and
    sigma_j = exp(-0.05 (j - 1)), which decays by e^-1 every 20 values. The rows get a
    ``source`` column such as "polynomial 1/j^1".
    """
    from mlorc_lab.diagnostics.synthetic import matrix_with_spectrum, synthetic_spectrum

    generator = torch.Generator().manual_seed(seed)
    frames = []
    for kind, rate in spectra:
        spectrum = synthetic_spectrum(kind, min(shape), rate)
        matrix = matrix_with_spectrum(shape, spectrum, generator)
        frame = rsvd_error_sweep(
            matrix, rank, oversamplings=oversamplings, power_iterations=power_iterations, draws=draws, generator=generator
        )
        label = f"polynomial 1/j^{rate:g}" if kind == "polynomial" else f"exponential e^(-{rate:g}(j-1))"
        frame.insert(0, "source", f"synthetic {label}")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)

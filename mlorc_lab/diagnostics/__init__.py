"""Low-rank diagnostics: randomized SVD error against its bound, the low-rank assumption.

Pure functions on matrices live here; the recorders that call them during training
live in :mod:`mlorc_lab.instrument`.
"""

from mlorc_lab.diagnostics.low_rank import LowRankSummary, summarize_low_rank, theorem_threshold
from mlorc_lab.diagnostics.rsvd_error import (
    DEFAULT_OVERSAMPLINGS,
    DEFAULT_POWER_ITERATIONS,
    RsvdErrorStudy,
    rsvd_error_study,
    rsvd_error_sweep,
    synthetic_sweep,
)
from mlorc_lab.diagnostics.synthetic import SPECTRUM_KINDS, matrix_with_spectrum, synthetic_spectrum

__all__ = [
    "DEFAULT_OVERSAMPLINGS",
    "DEFAULT_POWER_ITERATIONS",
    "LowRankSummary",
    "RsvdErrorStudy",
    "SPECTRUM_KINDS",
    "matrix_with_spectrum",
    "rsvd_error_study",
    "rsvd_error_sweep",
    "summarize_low_rank",
    "synthetic_spectrum",
    "synthetic_sweep",
    "theorem_threshold",
]

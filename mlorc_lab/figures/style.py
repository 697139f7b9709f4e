"""Shared figure style and file output.

NOTE: a minimal stand-in so the diagnostics figures run on this branch; the lead's
version of this module replaces it on merge.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

__all__ = ["apply_style", "save_figure"]


def apply_style() -> None:
    """Set the seaborn theme used by every figure of the project."""
    sns.set_theme(style="whitegrid", context="paper")


def save_figure(figure: plt.Figure, path_without_suffix: str | os.PathLike) -> list[Path]:
    """Write ``figure`` as PNG (200 dpi) and PDF next to each other; return both paths."""
    base = Path(path_without_suffix)
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = [base.with_suffix(".png"), base.with_suffix(".pdf")]
    figure.savefig(paths[0], dpi=200, bbox_inches="tight")
    figure.savefig(paths[1], bbox_inches="tight")
    return paths

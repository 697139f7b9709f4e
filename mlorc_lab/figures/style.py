"""Shared figure style and saving."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are written to files; no display is needed

import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

__all__ = ["QUANTITY_LABELS", "apply_style", "save_figure"]

QUANTITY_LABELS = {
    "grad": "gradient",
    "exp_avg": "first moment $m$",
    "exp_avg_sq": "second moment $v$",
}


def apply_style() -> None:
    """Set the seaborn theme used by every figure of the project."""
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)


def save_figure(figure: plt.Figure, path_without_suffix: str | os.PathLike) -> list[Path]:
    """Write ``figure`` as PNG (200 dpi) and PDF next to each other; return both paths."""
    base = Path(path_without_suffix)
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = [base.with_suffix(".png"), base.with_suffix(".pdf")]
    figure.savefig(paths[0], dpi=200, bbox_inches="tight")
    figure.savefig(paths[1], bbox_inches="tight")
    return paths

"""Figures 1 and 4: the top-k ratio of gradient and moment spectra over training."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import pandas as pd

from mlorc_lab.figures.style import QUANTITY_LABELS, apply_style
from mlorc_lab.spectral import top_k_ratio

__all__ = ["plot_top_k_ratio", "spectra_figure", "top_k_summary"]

QUANTITY_ORDER = ("grad", "exp_avg", "exp_avg_sq")


def top_k_summary(spectra: pd.DataFrame, k: int = 8) -> pd.DataFrame:
    """Return the top-k ratio per (step, quantity), averaged over the recorded matrices.

    ``spectra`` holds ``spectrum`` records (columns step, matrix, quantity,
    singular_values). The ratio is recomputed from the singular values, so any k
    works, not only the one stored at recording time. Columns of the result: step,
    quantity, top_k_ratio (mean), top_k_ratio_std, matrices (count).
    """
    if spectra.empty:
        raise ValueError("No spectrum records to summarise; was the run recorded with record_spectra=True?")
    ratios = spectra.assign(top_k_ratio=[top_k_ratio(values, k) for values in spectra["singular_values"]])
    grouped = ratios.groupby(["step", "quantity"])["top_k_ratio"]
    summary = grouped.agg(top_k_ratio="mean", top_k_ratio_std="std", matrices="count").reset_index()
    return summary.sort_values(["quantity", "step"], ignore_index=True)


def plot_top_k_ratio(summary: pd.DataFrame, ax: plt.Axes, title: str, k: int = 8) -> None:
    """Draw one line per quantity of a :func:`top_k_summary` table on ``ax``."""
    for quantity in QUANTITY_ORDER:
        rows = summary[summary["quantity"] == quantity]
        if rows.empty:
            continue
        ax.plot(rows["step"], rows["top_k_ratio"], marker="o", markersize=2.5, label=QUANTITY_LABELS[quantity])
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(f"top-{k} singular value ratio")
    ax.set_ylim(0.0, 1.02)
    ax.legend(loc="lower right")


def spectra_figure(summaries: Mapping[str, pd.DataFrame], k: int = 8, columns: int = 2) -> plt.Figure:
    """Return a figure with one panel per task from ``{task title: summary}``."""
    apply_style()
    count = len(summaries)
    columns = min(columns, count)
    rows = -(-count // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.4 * rows), squeeze=False)
    for ax, (title, summary) in zip(axes.flat, summaries.items()):
        plot_top_k_ratio(summary, ax, title, k)
    for ax in list(axes.flat)[count:]:
        ax.set_visible(False)
    figure.tight_layout()
    return figure

"""Figures of the low-rank diagnostics: RSVD error against its bound, drift, rho.

Each function takes record DataFrames (from :func:`mlorc_lab.records.read_records`)
and returns the figure plus the summary table it draws, so a notebook can show both.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from mlorc_lab.figures.style import apply_style, save_figure

__all__ = [
    "drift_summary",
    "plot_low_rank_overview",
    "plot_projection_drift",
    "plot_rsvd_bound",
    "rsvd_bound_summary",
]

_METHOD_COLORS = {"galore": "tab:red", "mlorc": "tab:blue"}


def rsvd_bound_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Return, per (source, oversampling, power iterations), mean ratios to the tail and exceedance counts.

    ``frame`` contains rows of :meth:`mlorc_lab.diagnostics.RsvdErrorStudy.as_record` with
    a ``source`` column (one row per matrix, and step for real momenta). The counts are
    of rows whose mean over draws lies above the bound beyond 3 standard errors.
    """
    rows = []
    for (source, p, q), group in frame.groupby(["source", "oversampling", "power_iterations"], sort=True):
        defined = group[group["bound_defined"].astype(bool)]
        rows.append(
            dict(
                source=source,
                oversampling=int(p),
                power_iterations=int(q),
                matrices=len(group),
                error_over_tail=float(group["error_over_tail"].astype(float).mean()),
                range_error_over_tail=float(group["range_error_over_tail"].astype(float).mean()),
                bound_over_tail=float(defined["bound_over_tail"].astype(float).mean()) if len(defined) else None,
                bound_defined=len(defined) == len(group),
                range_exceeds=int(defined["range_exceeds_bound"].astype(bool).sum()) if len(defined) else None,
                truncated_exceeds=int(defined["truncated_exceeds_bound"].astype(bool).sum()) if len(defined) else None,
            )
        )
    summary = pd.DataFrame(rows)
    # Keep None (bound undefined) rather than the NaN pandas would put in float columns.
    for column in ("bound_over_tail", "range_exceeds", "truncated_exceeds"):
        summary[column] = pd.Series([row[column] for row in rows], dtype=object)
    return summary


def _exceedance_text(summary: pd.DataFrame) -> str:
    defined = summary[summary["bound_defined"]]
    cases = int(defined["matrices"].sum())
    return (
        f"mean above bound (3 s.e.): range {int(defined['range_exceeds'].sum())}/{cases}, "
        f"rank-r factors {int(defined['truncated_exceeds'].sum())}/{cases}"
    )


def plot_rsvd_bound(frame: pd.DataFrame, path_without_suffix: str | os.PathLike | None = None):
    """Draw measured error / tail against oversampling p, with the bound and the exact-SVD floor.

    One panel per ``source``, one colour per number of power iterations. Solid lines
    show the error of the rank-r factors. Dashed lines show the error of the
    projection onto the whole sketch, the quantity Theorem 10.5 bounds. The black curve is the bound
    (1 + r / (p - 1))^(1/2) for p >= 2 (undefined, so not drawn, at p = 0 and 1); the
    grey line at 1 is the exact SVD. Returns (figure, summary table).
    """
    apply_style()
    summary = rsvd_bound_summary(frame)
    sources = list(dict.fromkeys(frame["source"]))
    figure, axes = plt.subplots(1, len(sources), figsize=(4.2 * len(sources), 3.6), squeeze=False)
    rank = int(frame["rank"].iloc[0])
    for axis, source in zip(axes[0], sources):
        part = summary[summary["source"] == source]
        for q, group in part.groupby("power_iterations"):
            color = f"C{int(q)}"
            axis.plot(group["oversampling"], group["error_over_tail"], "o-", color=color, label=f"rank-r factors, q={q}")
            axis.plot(group["oversampling"], group["range_error_over_tail"], "s--", color=color, alpha=0.7, label=f"range Q Q^T A, q={q}")
        p_max = max(int(part["oversampling"].max()), 2)
        p_values = np.linspace(2, p_max, 100)
        axis.plot(p_values, np.sqrt(1 + rank / (p_values - 1)), color="black", label="bound (Thm 10.5), p >= 2")
        axis.axhline(1.0, color="grey", linestyle=":", label="exact SVD (tail)")
        axis.axvspan(-0.5, 1.5, color="grey", alpha=0.1)
        axis.text(0.5, 1.0, "bound\nundefined", transform=axis.get_xaxis_transform(), ha="center", va="top", fontsize=7)
        axis.set_xlim(-0.5, p_max + 0.5)
        axis.set_xlabel("oversampling p")
        axis.set_title(f"{source}\n{_exceedance_text(part)}", fontsize=8)
    axes[0][0].set_ylabel(f"Frobenius error / best rank-{rank} error")
    axes[0][-1].legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    if path_without_suffix is not None:
        save_figure(figure, path_without_suffix)
    return figure, summary


def drift_summary(drift: pd.DataFrame) -> pd.DataFrame:
    """Return per method the median principal angle (radians and degrees) and median errors."""
    rows = []
    for method, group in drift.groupby("method"):
        angles = np.concatenate([np.asarray(values, dtype=float) for values in group["angles"]])
        rows.append(
            dict(
                method=method,
                records=len(group),
                median_angle=float(np.median(angles)),
                median_angle_degrees=math.degrees(float(np.median(angles))),
                median_mean_angle_degrees=math.degrees(float(group["angle_mean"].median())),
                median_reconstruction_error=float(group["reconstruction_error"].median()),
                median_best_error=float(group["best_error"].median()),
            )
        )
    return pd.DataFrame(rows)


def plot_projection_drift(
    drift: pd.DataFrame,
    refresh_steps: Sequence[int],
    path_without_suffix: str | os.PathLike | None = None,
):
    """Draw drift against step for GaLore and MLorc, with GaLore's refresh steps marked.

    Left: mean principal angle (degrees) between each method's subspace and the top-r
    subspace of the true momentum, median over matrices with the 25-75 % band. Right:
    relative momentum reconstruction error, with the exact rank-r error as the floor.
    Returns (figure, summary table from :func:`drift_summary`).
    """
    apply_style()
    figure, (angle_axis, error_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    for method, group in drift.groupby("method"):
        color = _METHOD_COLORS.get(method)
        label = "GaLore projector" if method == "galore" else "MLorc factors"
        for axis, column, scale in ((angle_axis, "angle_mean", 180 / math.pi), (error_axis, "reconstruction_error", 1.0)):
            by_step = group.groupby("step")[column]
            median = by_step.median() * scale
            axis.plot(median.index, median.values, color=color, label=label)
            axis.fill_between(median.index, by_step.quantile(0.25) * scale, by_step.quantile(0.75) * scale, color=color, alpha=0.2)
    floor = drift[drift["method"] == drift["method"].iloc[0]].groupby("step")["best_error"].median()
    error_axis.plot(floor.index, floor.values, color="grey", linestyle=":", label="exact rank-r error")
    for axis in (angle_axis, error_axis):
        for index, step in enumerate(refresh_steps):
            axis.axvline(step, color="black", alpha=0.3, linewidth=0.8, label="GaLore refresh" if index == 0 else None)
        axis.set_xlabel("step")
    angle_axis.set_ylabel("mean principal angle to true top-r subspace (deg)")
    error_axis.set_ylabel("||approx - m||_F / ||m||_F")
    angle_axis.legend(fontsize=7)
    error_axis.legend(fontsize=7)
    figure.tight_layout()
    if path_without_suffix is not None:
        save_figure(figure, path_without_suffix)
    return figure, drift_summary(drift)


def plot_low_rank_overview(
    low_rank: pd.DataFrame,
    negative_v: pd.DataFrame | None = None,
    path_without_suffix: str | os.PathLike | None = None,
):
    """Draw rho, effective rank and the last recorded spectra per quantity, and the negative-v fraction.

    Medians over matrices per step. The spectra panel shows, for the last recorded
    step, each quantity's singular values divided by the largest, median over
    matrices. Returns (figure, per-quantity summary at the last step, including how
    many matrices meet the convergence condition).
    """
    apply_style()
    panels = 4 if negative_v is not None and len(negative_v) else 3
    figure, axes = plt.subplots(1, panels, figsize=(3.8 * panels, 3.4))
    last_step = int(low_rank["step"].max())
    rows = []
    for index, (quantity, group) in enumerate(low_rank.groupby("quantity")):
        color = f"C{index}"
        rho = group.groupby("step")["rho"].median()
        axes[0].plot(rho.index, rho.values, color=color, label=quantity)
        effective = group.groupby("step")["effective_rank"].median()
        axes[1].plot(effective.index, effective.values, color=color, label=quantity)
        last = group[group["step"] == last_step]
        spectra = [np.asarray(values, dtype=float) for values in last["singular_values"]]
        length = min(len(values) for values in spectra)
        normalised = np.median(np.stack([values[:length] / values[0] for values in spectra if values[0] > 0]), axis=0)
        axes[2].semilogy(np.arange(1, length + 1), normalised, color=color, label=quantity)
        applicable = last["condition_applicable"].astype(bool)
        rows.append(
            dict(
                quantity=quantity,
                step=last_step,
                matrices=len(last),
                median_rho=float(last["rho"].median()),
                median_effective_rank=float(last["effective_rank"].median()),
                condition_applicable=bool(applicable.all()),
                condition_holds=int(last.loc[applicable, "condition_holds"].astype(bool).sum()) if applicable.any() else None,
                condition_threshold=float(last["condition_threshold"].dropna().median()) if applicable.any() else None,
            )
        )
    rank = int(low_rank["rank"].iloc[0])
    axes[0].set_ylabel(f"rho = tail_{rank} / norm (median)")
    axes[1].set_ylabel("effective rank (median)")
    axes[2].set_ylabel(f"sigma_j / sigma_1 at step {last_step}")
    axes[2].axvline(rank, color="grey", linestyle=":")
    axes[2].set_xlabel("j")
    for axis in axes[:2]:
        axis.set_xlabel("step")
    axes[0].legend(fontsize=7)
    if panels == 4:
        fraction = negative_v.groupby("step")["negative_fraction"].median()
        axes[3].plot(fraction.index, fraction.values, color="tab:purple")
        axes[3].set_ylabel("negative entries of rebuilt v (median fraction)")
        axes[3].set_xlabel("step")
    figure.tight_layout()
    if path_without_suffix is not None:
        save_figure(figure, path_without_suffix)
    return figure, pd.DataFrame(rows)

"""Figures and tables of the method comparison: Figures 2 and 3, Tables 2 to 5.

Every function takes run folders or DataFrames and returns a DataFrame or a matplotlib
figure; writing files is left to :func:`write_table` and the shared ``save_figure``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are written to files; no display is needed

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from mlorc_lab.records import read_metadata, read_records  # noqa: E402

__all__ = [
    "DATASET_TITLES",
    "GLUE_TABLE_METRICS",
    "METHOD_LABELS",
    "PAPER_COST",
    "PAPER_GLUE",
    "cost_table",
    "final_losses",
    "glue_results",
    "glue_table",
    "plot_training_loss",
    "to_markdown",
    "training_losses",
    "write_table",
]

METHOD_LABELS = {
    "full-adamw": "Full (AdamW)",
    "mlorc-adamw": "MLorc-AdamW",
    "mlorc-adamw-per-layer": "MLorc-AdamW (per-layer)",
    "lora": "LoRA",
    "lora-full": "LoRA (Full)",
    "galore": "GaLore",
    "full-lion": "Full (Lion)",
    "mlorc-lion": "MLorc-Lion",
}
DATASET_TITLES = {"math": "(a) math", "code": "(b) code"}

# The metric reported per GLUE task: Matthews correlation for CoLA, Pearson
# correlation for STS-B, accuracy for MRPC and RTE.
# NOTE: unverified whether the MLorc paper's Table 4 reports accuracy or F1 for MRPC.
GLUE_TABLE_METRICS = {"cola": "matthews_correlation", "mrpc": "accuracy", "rte": "accuracy", "stsb": "pearson"}

# The MLorc paper's Table 4 (arXiv 2506.01897, metrics x 100), method -> task -> value.
# NOTE: empty, because the table could not be read offline. Values filled in here
# appear beside ours in the table.
PAPER_GLUE: dict[str, dict[str, float]] = {}


def training_losses(run_dirs: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Return the train records of causal-LM runs: ``dataset``, ``method``, ``step``, ``loss``."""
    frames = []
    for run_dir in run_dirs:
        metadata = read_metadata(run_dir)
        train = read_records(run_dir, "train")
        if train.empty:
            raise ValueError(f"Run {run_dir} has no train records; was it interrupted before its first step?")
        frames.append(
            train[["step", "loss"]].assign(dataset=metadata["dataset"], method=metadata["method"])
        )
    if not frames:
        raise ValueError("No run folders given; pass the folders returned by run_causal_lm")
    return pd.concat(frames, ignore_index=True)[["dataset", "method", "step", "loss"]]


def final_losses(losses: pd.DataFrame, last: int = 10) -> pd.DataFrame:
    """Return the mean loss of the ``last`` steps of each run, lowest first per dataset.

    Columns ``dataset``, ``method``, ``final_loss`` and ``rank`` (1 = lowest loss in
    its dataset). A mean over several steps, because one step's loss depends on its
    batch.
    """
    if last < 1:
        raise ValueError(f"last must be a positive number of steps, got {last}")
    tails = losses.sort_values("step").groupby(["dataset", "method"]).tail(last)
    table = tails.groupby(["dataset", "method"], as_index=False)["loss"].mean()
    table = table.rename(columns={"loss": "final_loss"}).sort_values(["dataset", "final_loss"])
    table["rank"] = table.groupby("dataset")["final_loss"].rank(method="min").astype(int)
    return table.reset_index(drop=True)


def plot_training_loss(
    losses: pd.DataFrame,
    methods: Sequence[str],
    *,
    datasets: Sequence[str] = ("math", "code"),
    window: int = 5,
) -> plt.Figure:
    """Draw training loss against step, one panel per dataset and one line per method.

    Each line is the moving average over ``window`` steps (the raw loss is drawn
    faintly behind it), because batch-to-batch noise hides the differences otherwise.
    """
    if window < 1:
        raise ValueError(f"window must be a positive number of steps, got {window}")
    figure, axes = plt.subplots(1, len(datasets), figsize=(5.0 * len(datasets), 3.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, dataset in zip(axes[0], datasets):
        for index, method in enumerate(methods):
            run = losses[(losses["dataset"] == dataset) & (losses["method"] == method)].sort_values("step")
            if run.empty:
                raise ValueError(f"No training loss for method {method!r} on {dataset!r}; run it first")
            color = colors[index % len(colors)]
            axis.plot(run["step"], run["loss"], color=color, alpha=0.25, linewidth=0.8)
            smooth = run["loss"].rolling(window, min_periods=1).mean()
            axis.plot(run["step"], smooth, color=color, linewidth=1.6, label=METHOD_LABELS.get(method, method))
        axis.set_title(DATASET_TITLES.get(dataset, dataset))
        axis.set_xlabel("step")
        axis.set_ylabel("training loss")
        axis.legend(frameon=False)
    figure.tight_layout()
    return figure


def glue_results(run_dirs: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Return the final GLUE metric of each run: ``task``, ``method``, ``metric``, ``value`` (x 100)."""
    rows = []
    for run_dir in run_dirs:
        metadata = read_metadata(run_dir)
        task = metadata["task"]
        metric = GLUE_TABLE_METRICS[task]
        value = metadata["eval"][metric]
        rows.append(dict(task=task, method=metadata["method"], metric=metric, value=100.0 * value))
    return pd.DataFrame(rows, columns=["task", "method", "metric", "value"])


def glue_table(results: pd.DataFrame, paper: Mapping[str, Mapping[str, float]] = PAPER_GLUE) -> pd.DataFrame:
    """Return Table 4: one row per method, our value per task and the paper's beside it.

    Columns are ``<task>`` (ours) and ``<task> (paper)``, plus ``avg`` and
    ``avg (paper)``; a value the paper does not give is NaN.
    """
    ours = results.pivot(index="method", columns="task", values="value")
    tasks = list(ours.columns)
    methods = list(dict.fromkeys(results["method"]))
    table = pd.DataFrame(index=methods)
    for task in tasks:
        table[task] = ours.loc[methods, task]
        table[f"{task} (paper)"] = [paper.get(method, {}).get(task, math.nan) for method in methods]
    table["avg"] = table[tasks].mean(axis=1)
    table["avg (paper)"] = table[[f"{task} (paper)" for task in tasks]].mean(axis=1, skipna=False)
    table.index = [METHOD_LABELS.get(method, method) for method in methods]
    table.index.name = "method"
    return table


def to_markdown(table: pd.DataFrame, digits: int = 2) -> str:
    """Return ``table`` as a GitHub Markdown table; NaN is written as "n/a"."""

    def cell(value) -> str:
        if isinstance(value, float):
            return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
        return str(value)

    frame = table.reset_index() if table.index.name is not None else table
    header = "| " + " | ".join(str(column) for column in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    lines = [header, rule]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(cell(value) for value in row) + " |")
    return "\n".join(lines) + "\n"


def write_table(table: pd.DataFrame, path_without_suffix: str | os.PathLike, digits: int = 2) -> list[Path]:
    """Write ``table`` as CSV and Markdown next to each other; return both paths."""
    base = Path(path_without_suffix)
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = [base.with_suffix(".csv"), base.with_suffix(".md")]
    table.to_csv(paths[0], index=table.index.name is not None)
    paths[1].write_text(to_markdown(table, digits), encoding="utf-8")
    return paths


# The paper's Tables 2, 3 and 5 (peak GPU memory in GiB and time, LLaMA2-7B),
# method -> column -> value.
# NOTE: empty, because the tables could not be read offline. Values filled in here
# appear beside ours in the cost table.
PAPER_COST: dict[str, dict[str, float]] = {}

_GIB = 1024.0**3
_MIB = 1024.0**2


def cost_table(results: Sequence[Mapping], paper: Mapping[str, Mapping[str, float]] = PAPER_COST) -> pd.DataFrame:
    """Return Tables 2, 3 and 5 from :func:`mlorc_lab.train.cost.measure_costs` results.

    One row per method: seconds per step, peak memory and its increase over the
    loaded model (GiB), optimizer-state size (MiB), trainable parameters (millions),
    and the paper's ``peak memory (paper)`` and ``time (paper)`` where it has them.
    """
    rows = []
    for result in results:
        method = result["method"]
        reported = paper.get(method, {})
        rows.append(
            {
                "method": METHOD_LABELS.get(method, method),
                "seconds/step": result["seconds_per_step"],
                "peak memory (GiB)": result["peak_memory_bytes"] / _GIB,
                "over loaded model (GiB)": (result["peak_memory_bytes"] - result["loaded_memory_bytes"]) / _GIB,
                "optimizer state (MiB)": result["optimizer_state_bytes"] / _MIB,
                "trainable (M)": result["trainable_parameters"] / 1e6,
                "memory kind": result["memory_kind"],
                "peak memory (paper)": reported.get("peak_memory_gib", math.nan),
                "time (paper)": reported.get("time", math.nan),
            }
        )
    return pd.DataFrame(rows).set_index("method")

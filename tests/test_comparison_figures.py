"""Figure and table functions of the comparison on hand-made run folders."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from mlorc_lab.figures.comparison import (
    cost_table,
    final_losses,
    glue_results,
    glue_table,
    plot_training_loss,
    to_markdown,
    training_losses,
    write_table,
)
from mlorc_lab.records import RunWriter


def _causal_run(root, dataset, method, losses):
    run_dir = root / f"{dataset}-{method}"
    with RunWriter(run_dir, dict(dataset=dataset, method=method)) as writer:
        for step, loss in enumerate(losses, start=1):
            writer.write(dict(kind="train", step=step, loss=loss))
    return run_dir


def _glue_run(root, task, method, metrics):
    run_dir = root / f"glue-{task}-{method}"
    with RunWriter(run_dir, dict(task=task, method=method)) as writer:
        writer.write(dict(kind="eval", step=1, **metrics))
        writer.update_metadata(eval=metrics)
    return run_dir


@pytest.fixture()
def losses(tmp_path):
    runs = [
        _causal_run(tmp_path, "math", "full-adamw", [2.0, 1.0, 0.5, 0.3]),
        _causal_run(tmp_path, "math", "lora", [2.0, 1.5, 1.2, 1.0]),
        _causal_run(tmp_path, "code", "full-adamw", [1.0, 0.9, 0.8, 0.7]),
        _causal_run(tmp_path, "code", "lora", [1.0, 0.8, 0.6, 0.4]),
    ]
    return training_losses(runs)


def test_training_losses_columns(losses):
    assert list(losses.columns) == ["dataset", "method", "step", "loss"]
    assert len(losses) == 16


def test_final_losses_by_hand(losses):
    final = final_losses(losses, last=2)
    by_key = {(row.dataset, row.method): (row.final_loss, row.rank) for row in final.itertuples()}
    # Mean of the last two steps, exact in binary up to 1e-12.
    assert by_key[("math", "full-adamw")][0] == pytest.approx(0.4, abs=1e-12)
    assert by_key[("math", "lora")][0] == pytest.approx(1.1, abs=1e-12)
    assert by_key[("code", "lora")][0] == pytest.approx(0.5, abs=1e-12)
    assert by_key[("math", "full-adamw")][1] == 1
    assert by_key[("code", "full-adamw")][1] == 2


def test_final_losses_rejects_zero(losses):
    with pytest.raises(ValueError, match="last must be a positive number of steps, got 0"):
        final_losses(losses, last=0)


def test_plot_training_loss_panels(losses):
    figure = plot_training_loss(losses, ["full-adamw", "lora"], window=2)
    axes = figure.axes
    assert [axis.get_title() for axis in axes] == ["(a) math", "(b) code"]
    # A faint raw line and a smoothed line per method.
    assert len(axes[0].lines) == 4
    smoothed = axes[0].lines[1].get_ydata()
    assert list(smoothed) == pytest.approx([2.0, 1.5, 0.75, 0.4])


def test_plot_missing_method_rejected(losses):
    with pytest.raises(ValueError, match="No training loss for method 'galore' on 'math'"):
        plot_training_loss(losses, ["galore"])


def test_glue_table_with_paper(tmp_path):
    runs = [
        _glue_run(tmp_path, "cola", "full-adamw", {"matthews_correlation": 0.5}),
        _glue_run(tmp_path, "rte", "full-adamw", {"accuracy": 0.7}),
        _glue_run(tmp_path, "cola", "lora", {"matthews_correlation": 0.4}),
        _glue_run(tmp_path, "rte", "lora", {"accuracy": 0.6}),
    ]
    results = glue_results(runs)
    table = glue_table(results, paper={"full-adamw": {"cola": 60.0, "rte": 80.0}})
    assert table.loc["Full (AdamW)", "cola"] == pytest.approx(50.0)
    assert table.loc["Full (AdamW)", "avg"] == pytest.approx(60.0)
    assert table.loc["Full (AdamW)", "avg (paper)"] == pytest.approx(70.0)
    assert math.isnan(table.loc["LoRA", "cola (paper)"])
    assert table.loc["LoRA", "avg"] == pytest.approx(50.0)


def test_write_table_markdown(tmp_path):
    table = pd.DataFrame({"a": [1.0, math.nan]}, index=pd.Index(["x", "y"], name="method"))
    csv_path, markdown_path = write_table(table, tmp_path / "t", digits=1)
    assert markdown_path.read_text() == "| method | a |\n|---|---|\n| x | 1.0 |\n| y | n/a |\n"
    assert csv_path.read_text().splitlines()[0] == "method,a"
    assert to_markdown(table, digits=3).splitlines()[2] == "| x | 1.000 |"


def test_cost_table_units():
    result = dict(
        method="mlorc-adamw",
        seconds_per_step=2.5,
        peak_memory_bytes=3 * 1024**3,
        loaded_memory_bytes=1 * 1024**3,
        optimizer_state_bytes=512 * 1024**2,
        trainable_parameters=134_515_008,
        memory_kind="cpu_rss",
    )
    table = cost_table([result], paper={"mlorc-adamw": {"peak_memory_gib": 20.0}})
    row = table.loc["MLorc-AdamW"]
    assert row["peak memory (GiB)"] == 3.0
    assert row["over loaded model (GiB)"] == 2.0
    assert row["optimizer state (MiB)"] == 512.0
    assert row["trainable (M)"] == pytest.approx(134.515008)
    assert row["peak memory (paper)"] == 20.0
    assert math.isnan(row["time (paper)"])

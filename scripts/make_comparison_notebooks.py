"""Write the comparison notebooks (Figures 2 and 3, Tables 2 to 5) with nbformat.

Usage: python scripts/make_comparison_notebooks.py [NOTEBOOKS_DIR]

Each notebook is a thin driver: a first code cell tagged ``parameters`` that
papermill overrides, then calls into the package. Outputs are empty.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

PARAMETERS = '''profile = "cpu"
data_dir = None
output_dir = "runs"
figures_dir = "figures"'''

LOSS_CELLS = '''from pathlib import Path

from mlorc_lab.figures.comparison import final_losses, plot_training_loss, training_losses, write_table
from mlorc_lab.figures.style import apply_style, save_figure
from mlorc_lab.profiles import CAUSAL_DATASETS, {methods}, get_profile
from mlorc_lab.train.causal_lm import run_causal_lm

settings = get_profile(profile).causal_lm
runs = [
    run_causal_lm(dataset, method, settings, Path(output_dir) / "causal_lm", data_dir=data_dir)
    for dataset in CAUSAL_DATASETS
    for method in {methods}
]
# %%
losses = training_losses(runs)
apply_style()
figure = plot_training_loss(losses, {methods}, datasets=CAUSAL_DATASETS)
save_figure(figure, Path(figures_dir) / "{name}")
# %%
final = final_losses(losses, last=min(10, int(losses["step"].max())))
write_table(final.set_index("dataset"), Path(figures_dir) / "{name}_final", digits=4)
final'''

GLUE_CELLS = '''from pathlib import Path

from mlorc_lab.figures.comparison import glue_results, glue_table, write_table
from mlorc_lab.profiles import get_profile
from mlorc_lab.train.glue_comparison import run_glue_comparison

settings = get_profile(profile).glue_comparison
runs = [
    run_glue_comparison(task, method, settings, Path(output_dir) / "glue_comparison", data_dir=data_dir)
    for task in settings.tasks
    for method in settings.methods
]
# %%
table = glue_table(glue_results(runs))
write_table(table, Path(figures_dir) / "table4_glue")
table'''

COST_CELLS = '''from pathlib import Path

from mlorc_lab.figures.comparison import cost_table, write_table
from mlorc_lab.train.cost import measure_costs

# Each method runs in a subprocess of its own, so each peak memory is its own.
results = measure_costs(profile, Path(output_dir) / "cost", data_dir=data_dir)
# %%
table = cost_table(results)
write_table(table, Path(figures_dir) / "table_cost")
table'''

NOTEBOOKS = {
    "fig2_adamw_loss.ipynb": (
        "# Figure 2: training loss of Full AdamW, MLorc-AdamW, LoRA and GaLore\n\n(a) math, (b) code.",
        LOSS_CELLS.format(methods="ADAMW_METHODS", name="fig2_adamw_loss"),
    ),
    "fig3_lion_loss.ipynb": (
        "# Figure 3: training loss of Full Lion and MLorc-Lion\n\n(a) math, (b) code.",
        LOSS_CELLS.format(methods="LION_METHODS", name="fig3_lion_loss"),
    ),
    "table_glue.ipynb": (
        "# Table 4: Full, MLorc, LoRA and GaLore on CoLA, MRPC, RTE and STS-B",
        GLUE_CELLS,
    ),
    "table_cost.ipynb": (
        "# Tables 2, 3 and 5: peak memory and time per step of each method",
        COST_CELLS,
    ),
}


def build(title: str, body: str) -> nbformat.NotebookNode:
    """Return a notebook: a title, the tagged parameters cell, then the body's cells."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    parameters = nbformat.v4.new_code_cell(PARAMETERS)
    parameters.metadata["tags"] = ["parameters"]
    cells = [nbformat.v4.new_markdown_cell(title), parameters]
    cells += [nbformat.v4.new_code_cell(chunk.strip("\n")) for chunk in body.split("# %%\n")]
    notebook.cells = cells
    return notebook


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "notebooks")
    folder.mkdir(parents=True, exist_ok=True)
    for filename, (title, body) in NOTEBOOKS.items():
        nbformat.write(build(title, body), folder / filename)


if __name__ == "__main__":
    main()

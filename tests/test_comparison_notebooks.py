"""Run the comparison notebooks with papermill at the smoke profile and check their files."""

from __future__ import annotations

import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"

# Notebook -> files it must write under figures_dir.
EXPECTED = {
    "fig2_adamw_loss.ipynb": ("fig2_adamw_loss.png", "fig2_adamw_loss.pdf", "fig2_adamw_loss_final.csv"),
    "fig3_lion_loss.ipynb": ("fig3_lion_loss.png", "fig3_lion_loss.pdf", "fig3_lion_loss_final.md"),
    "table_glue.ipynb": ("table4_glue.csv", "table4_glue.md"),
    "table_cost.ipynb": ("table_cost.csv", "table_cost.md"),
}


@pytest.mark.slow
@pytest.mark.parametrize("notebook", sorted(EXPECTED))
def test_notebook_smoke(notebook, tmp_path, data_dir, monkeypatch):
    import papermill

    # The kernel is a separate process: put this checkout first on its import path.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    figures_dir = tmp_path / "figures"
    papermill.execute_notebook(
        str(NOTEBOOKS_DIR / notebook),
        str(tmp_path / notebook),
        parameters=dict(
            profile="smoke", data_dir=str(data_dir), output_dir=str(tmp_path / "runs"), figures_dir=str(figures_dir)
        ),
        kernel_name="python3",
        progress_bar=False,
        cwd=str(NOTEBOOKS_DIR),
    )
    for name in EXPECTED[notebook]:
        path = figures_dir / name
        assert path.is_file(), f"{notebook} did not write {name}"
        assert path.stat().st_size > 100, f"{name} is nearly empty ({path.stat().st_size} bytes)"


def test_notebooks_have_parameters_cell():
    import nbformat

    for notebook in EXPECTED:
        cells = nbformat.read(NOTEBOOKS_DIR / notebook, as_version=4).cells
        code = [cell for cell in cells if cell.cell_type == "code"]
        assert code[0].metadata.get("tags") == ["parameters"], notebook
        for name in ('profile = "cpu"', "data_dir = None", 'output_dir = "runs"', 'figures_dir = "figures"'):
            assert name in code[0].source, (notebook, name)
        assert all(not cell.get("outputs") for cell in code), f"{notebook} has stored outputs"

"""The comparison notebooks executed by papermill at the smoke profile."""

from __future__ import annotations

import nbformat
import pytest

from mlorc_lab.notebooks import NOTEBOOKS, run_notebooks
from tests.conftest import REPO_ROOT

COMPARISON = ("fig2", "fig3", "table4", "cost")


@pytest.mark.slow
@pytest.mark.parametrize("name", COMPARISON)
def test_notebook_smoke(name, tmp_path, data_dir):
    figures_dir = tmp_path / "figures"
    run_notebooks(
        [name],
        profile="smoke",
        output_dir=tmp_path / "runs",
        figures_dir=figures_dir,
        data_dir=data_dir,
        notebooks_dir=REPO_ROOT / "notebooks",
    )
    for output in NOTEBOOKS[name].outputs:
        path = figures_dir / output
        assert path.is_file(), f"{name} did not write {output}"
        # The smallest output, a two-row Markdown table, has about 150 bytes.
        assert path.stat().st_size > 100, f"{output} is nearly empty ({path.stat().st_size} bytes)"


def test_notebooks_have_parameters_cell():
    for name in COMPARISON:
        path = REPO_ROOT / "notebooks" / NOTEBOOKS[name].filename
        code = [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]
        assert code[0].metadata.get("tags") == ["parameters"], name
        for line in ('profile = "cpu"', "data_dir = None", 'output_dir = "runs"', 'figures_dir = "figures"'):
            assert line in code[0].source, (name, line)
        for cell in code:
            assert not cell.get("outputs"), f"{name} has stored outputs"

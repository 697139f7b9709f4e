"""Figures 1 and 4 notebooks executed by papermill at the smoke profile."""

import json

import pytest
from PIL import Image

from mlorc_lab.notebooks import NOTEBOOKS, run_notebooks
from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_spectra_notebooks_write_figures(tmp_path, data_dir):
    figures_dir = tmp_path / "figures"
    executed = run_notebooks(
        ["fig1", "fig4"],
        profile="smoke",
        output_dir=tmp_path / "runs",
        figures_dir=figures_dir,
        data_dir=data_dir,
        notebooks_dir=REPO_ROOT / "notebooks",
    )
    for name in ("fig1", "fig4"):
        for output in NOTEBOOKS[name].outputs:
            assert (figures_dir / output).stat().st_size > 1000, output
    width, height = Image.open(figures_dir / "fig4_spectra_glue.png").size
    assert width > 1000 and height > 600  # four panels at 200 dpi
    # The executed notebooks are kept beside the runs, with the smoke profile injected.
    notebook = json.loads(executed[0].read_text())
    injected = [cell for cell in notebook["cells"] if "injected-parameters" in cell["metadata"].get("tags", [])]
    assert "profile = \"smoke\"" in "".join(injected[0]["source"])
    # Figure 4 reused the STS-B run of Figure 1 instead of training it again.
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "glue-cola-full-adamw",
        "glue-mrpc-full-adamw",
        "glue-rte-full-adamw",
        "glue-stsb-full-adamw",
        "notebooks",
    ]

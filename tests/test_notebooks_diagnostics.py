"""The diagnostics notebooks run end to end at the smoke profile and write their figures."""

import pathlib

import papermill
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

NOTEBOOKS = {
    "fig5_rsvd_bound.ipynb": ["fig5_rsvd_bound"],
    "fig6_projection_drift.ipynb": ["fig6_projection_drift"],
    "explore_low_rank.ipynb": [
        "explore_low_rank_overview",
        "explore_low_rank_rsvd_bound",
        "explore_low_rank_drift",
    ],
}


@pytest.fixture(scope="module")
def shared_runs(tmp_path_factory) -> pathlib.Path:
    # One run folder for the three notebooks: the first one trains, the others reuse
    # its completed run, which keeps the module to a few minutes.
    return tmp_path_factory.mktemp("runs")


@pytest.mark.slow
@pytest.mark.parametrize("notebook", list(NOTEBOOKS))
def test_notebook_writes_figures(notebook, shared_runs, tmp_path, data_dir):
    figures = tmp_path / "figures"
    papermill.execute_notebook(
        str(REPO_ROOT / "notebooks" / notebook),
        str(tmp_path / notebook),
        parameters=dict(profile="smoke", data_dir=str(data_dir), output_dir=str(shared_runs), figures_dir=str(figures)),
        kernel_name="python3",
        cwd=str(REPO_ROOT),
        progress_bar=False,
    )
    for stem in NOTEBOOKS[notebook]:
        for suffix in (".png", ".pdf"):
            path = figures / f"{stem}{suffix}"
            assert path.is_file(), f"{notebook} did not write {path}"
            assert path.stat().st_size > 1000

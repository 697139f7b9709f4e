"""The notebooks that ``make figures`` runs, and running them with papermill.

Each notebook is a thin driver: a cell tagged ``parameters`` (``profile``,
``data_dir``, ``output_dir``, ``figures_dir``) and calls into the package. The
executed copies are kept in ``<output_dir>/notebooks`` beside the run folders.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NOTEBOOKS", "NotebookEntry", "run_notebooks", "select_notebooks"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NotebookEntry:
    """A notebook of ``notebooks/`` and the figure or table files it writes."""

    filename: str
    outputs: tuple[str, ...]
    description: str


NOTEBOOKS: dict[str, NotebookEntry] = {
    "fig1": NotebookEntry(
        "fig1_spectra_stsb.ipynb",
        ("fig1_spectra_stsb.png", "fig1_spectra_stsb.pdf"),
        "Figure 1: top-8 ratio of gradient and moments, AdamW on STS-B",
    ),
    "fig4": NotebookEntry(
        "fig4_spectra_glue.ipynb",
        ("fig4_spectra_glue.png", "fig4_spectra_glue.pdf"),
        "Figure 4: the same on CoLA, MRPC, RTE and STS-B",
    ),
    "fig2": NotebookEntry(
        "fig2_adamw_loss.ipynb",
        ("fig2_adamw_loss.png", "fig2_adamw_loss.pdf", "fig2_adamw_loss_final.csv", "fig2_adamw_loss_final.md"),
        "Figure 2: training loss of Full AdamW, MLorc-AdamW, LoRA and GaLore on math and code",
    ),
    "fig3": NotebookEntry(
        "fig3_lion_loss.ipynb",
        ("fig3_lion_loss.png", "fig3_lion_loss.pdf", "fig3_lion_loss_final.csv", "fig3_lion_loss_final.md"),
        "Figure 3: training loss of Full Lion and MLorc-Lion on math and code",
    ),
    "table4": NotebookEntry(
        "table_glue.ipynb",
        ("table4_glue.csv", "table4_glue.md"),
        "Table 4: Full, MLorc, LoRA and GaLore on CoLA, MRPC, RTE and STS-B",
    ),
    "cost": NotebookEntry(
        "table_cost.ipynb",
        ("table_cost.csv", "table_cost.md"),
        "Tables 2, 3 and 5: peak memory, time per step and optimizer state per method",
    ),
    "fig5": NotebookEntry(
        "fig5_rsvd_bound.ipynb",
        ("fig5_rsvd_bound.png", "fig5_rsvd_bound.pdf"),
        "Figure 5: randomized SVD error over the best rank-r error against oversampling, with the Halko et al. bound",
    ),
    "fig6": NotebookEntry(
        "fig6_projection_drift.ipynb",
        ("fig6_projection_drift.png", "fig6_projection_drift.pdf"),
        "Figure 6: GaLore projector and MLorc factors against the true momentum's subspace during fine-tuning",
    ),
    "explore": NotebookEntry(
        "explore_low_rank.ipynb",
        tuple(
            f"explore_low_rank_{part}.{suffix}"
            for part in ("overview", "rsvd_bound", "drift")
            for suffix in ("png", "pdf")
        ),
        "Spectra, rho, the bound check and drift for any model and data (default: MiniLM on STS-B)",
    ),
}


def select_notebooks(only: str | None) -> list[str]:
    """Return the notebook names chosen by a comma-separated list, or all for None/'all'."""
    if only is None or only.strip() in ("", "all"):
        return list(NOTEBOOKS)
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in names if name not in NOTEBOOKS]
    if unknown:
        raise ValueError(f"Unknown figure {unknown[0]!r}; choose from {', '.join(NOTEBOOKS)} or 'all'")
    return names


def run_notebooks(
    names: list[str],
    *,
    profile: str,
    output_dir: str | os.PathLike,
    figures_dir: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    notebooks_dir: str | os.PathLike = "notebooks",
    kernel_name: str = "python3",
) -> list[Path]:
    """Execute the named notebooks with papermill and return the executed copies.

    Parameters
    ----------
    names : list of str
        Keys of :data:`NOTEBOOKS`.
    profile : str
        "smoke", "cpu" or "paper", passed to each notebook.
    output_dir : path
        Run folders go here; executed notebooks go to ``output_dir/notebooks``.
    figures_dir : path
        Figures and tables are written here.
    data_dir : path, optional
        Passed to the notebooks; None lets the loaders read ``MLORC_LAB_DATA_DIR``.
    notebooks_dir : path, default "notebooks"
        Folder holding the source notebooks (the repository's ``notebooks/``).
    """
    import papermill

    from mlorc_lab.profiles import get_profile

    get_profile(profile)  # rejects an unknown profile before any notebook starts
    source_dir = Path(notebooks_dir)
    executed_dir = Path(output_dir) / "notebooks"
    executed_dir.mkdir(parents=True, exist_ok=True)
    parameters = dict(
        profile=profile,
        data_dir=None if data_dir is None else str(Path(data_dir).resolve()),
        output_dir=str(Path(output_dir).resolve()),
        figures_dir=str(Path(figures_dir).resolve()),
    )
    executed = []
    for name in names:
        entry = NOTEBOOKS[name]
        source = source_dir / entry.filename
        if not source.is_file():
            raise FileNotFoundError(f"Notebook not found: {source}; run from the repository root or pass --notebooks-dir (notebooks_dir)")
        target = executed_dir / entry.filename
        logger.info("Running %s (%s) at profile %s", source, entry.description, profile)
        papermill.execute_notebook(
            str(source), str(target), parameters=parameters, kernel_name=kernel_name, progress_bar=False, cwd=str(source_dir)
        )
        executed.append(target)
    return executed

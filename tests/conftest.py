"""Shared fixtures: the local data folder, and the import path of notebook kernels."""

from __future__ import annotations

import os
import pathlib

import pytest

from mlorc_lab.data.paths import DATA_DIR_ENV

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

# Notebook kernels started by papermill are separate processes: put this checkout
# first on their path, so they import the package under test rather than another copy.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
    """Absolute path of the local data folder.

    Read from ``MLORC_LAB_DATA_DIR``, else ``<repo>/../shared/data``. A missing folder
    fails the test instead of skipping it, because every data test needs real files.
    """
    from_env = os.environ.get(DATA_DIR_ENV, "").strip()
    if from_env:
        path = pathlib.Path(from_env).expanduser().resolve()
        origin = f"{DATA_DIR_ENV}={from_env}"
    else:
        path = (REPO_ROOT.parent / "shared" / "data").resolve()
        origin = f"the default <repo>/../shared/data ({DATA_DIR_ENV} is unset)"
    if not path.is_dir():
        pytest.fail(
            f"Data folder not found: {path}, from {origin}. Set {DATA_DIR_ENV} to the folder "
            "that contains glue/, gsm8k/ and codealpaca/.",
            pytrace=False,
        )
    return path

"""Resolve where the data loaders read from: a local folder or the Hugging Face hub."""

from __future__ import annotations

import os
import pathlib

DATA_DIR_ENV = "MLORC_LAB_DATA_DIR"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> pathlib.Path | None:
    """Return the local data folder, or None to load from the Hugging Face hub.

    Parameters
    ----------
    data_dir : str or path-like, optional
        Folder that contains ``glue/``, ``gsm8k/`` and ``codealpaca/``. It takes
        precedence over the environment variable.

    Returns
    -------
    pathlib.Path or None
        ``data_dir`` if given, else the value of ``MLORC_LAB_DATA_DIR`` if set and
        non-empty, else None, in which case the loaders read the hub. The path is
        expanded (``~``) and made absolute but not checked for existence here, so
        that the loader reports the exact file it could not find.
    """
    if data_dir is None:
        from_env = os.environ.get(DATA_DIR_ENV, "").strip()
        if not from_env:
            return None
        data_dir = from_env
    return pathlib.Path(data_dir).expanduser().resolve()

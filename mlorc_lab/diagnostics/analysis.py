"""Readers that turn a diagnostics run folder into the DataFrames the figures draw."""

from __future__ import annotations

import os

import pandas as pd

from mlorc_lab.records import read_metadata, read_records

__all__ = ["read_drift", "read_low_rank", "read_rsvd_errors"]


def _records_of_kind(run_dir: str | os.PathLike, kind: str) -> pd.DataFrame:
    frame = read_records(run_dir, kind)
    if frame.empty:
        raise ValueError(f"Run {run_dir} has no {kind!r} records; was the matching recorder attached?")
    return frame


def read_rsvd_errors(run_dir: str | os.PathLike, source: str | None = None) -> pd.DataFrame:
    """Return the ``rsvd_error`` records with a ``source`` column (default: "real momenta, <model>")."""
    frame = _records_of_kind(run_dir, "rsvd_error")
    if source is None:
        settings = read_metadata(run_dir)["config"]["settings"]
        source = f"real momenta, {settings['model']} {settings['task']} {settings['method']}"
    frame.insert(0, "source", source)
    return frame


def read_drift(run_dir: str | os.PathLike) -> tuple[pd.DataFrame, list[int]]:
    """Return the ``drift`` records and GaLore's refresh steps."""
    frame = _records_of_kind(run_dir, "drift")
    return frame, list(read_metadata(run_dir).get("refresh_steps", []))


def read_low_rank(run_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return the ``low_rank`` records and the ``negative_v`` records (empty for AdamW runs)."""
    return _records_of_kind(run_dir, "low_rank"), read_records(run_dir, "negative_v")

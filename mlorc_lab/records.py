"""Run folders: metadata plus append-only records, and readers that return DataFrames.

A run folder contains

- ``metadata.json``: model, task, method, hyperparameters, seed, package versions and
  the run's ``status`` ("running", "completed" or "failed"), rewritten atomically;
- ``records.jsonl``: one JSON object a line, appended and flushed as it is written.
  Every record has ``kind`` (for example "train", "eval", "spectrum") and ``step``.

Because each line is flushed when written, a run that crashes (or is killed) leaves
every earlier record readable; a torn last line is skipped by the reader with a warning.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import tempfile
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "METADATA_FILE",
    "RECORDS_FILE",
    "RunWriter",
    "package_versions",
    "read_metadata",
    "read_records",
]

logger = logging.getLogger(__name__)

METADATA_FILE = "metadata.json"
RECORDS_FILE = "records.jsonl"

_VERSIONED_PACKAGES = (
    "mlorc-lab",
    "torch",
    "transformers",
    "datasets",
    "peft",
    "galore-torch",
    "numpy",
    "pandas",
)


def package_versions() -> dict[str, str | None]:
    """Return the installed versions of the packages a run depends on, and Python's."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"Record value of type {type(value).__name__} is not JSON serialisable: {value!r}")


def _sanitise(value: Any) -> Any:
    # JSON has no inf or NaN; write them as null so every line stays valid JSON.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_json_atomic(path: Path, payload: Mapping[str, Any]) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        json.dump(payload, stream, indent=2, sort_keys=True, default=_json_default)
        stream.write("\n")
    os.replace(temporary, path)


class RunWriter:
    """Writer of one run folder; use it as a context manager.

    Parameters
    ----------
    run_dir : path
        Folder of the run; created if missing.
    metadata : mapping
        JSON-serialisable description of the run. Package versions, the start time and
        ``status`` are added.
    overwrite : bool, default False
        Replace the records of an existing run. Without it, a folder that already contains
        records raises ``FileExistsError`` so no data is lost by accident.

    On leaving the ``with`` block the status becomes "completed", or "failed" with the
    error text when an exception escapes it.
    """

    def __init__(self, run_dir: str | os.PathLike, metadata: Mapping[str, Any], *, overwrite: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        records_path = self.run_dir / RECORDS_FILE
        if records_path.exists() and not overwrite:
            raise FileExistsError(
                f"Run folder {self.run_dir} already contains records; choose another folder or pass overwrite=True"
            )
        self.metadata = dict(metadata)
        self.metadata.update(
            status="running",
            started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            versions=package_versions(),
        )
        _write_json_atomic(self.run_dir / METADATA_FILE, self.metadata)
        self._stream = open(records_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record and flush it to the operating system."""
        self.write_many([record])

    def write_many(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append several records with one flush."""
        lines = []
        for record in records:
            if "kind" not in record or "step" not in record:
                raise ValueError(f"A record needs 'kind' and 'step' fields, got keys {sorted(record)}")
            clean = {key: _sanitise(value) for key, value in record.items()}
            lines.append(json.dumps(clean, default=_json_default, allow_nan=False) + "\n")
        self._stream.write("".join(lines))
        self._stream.flush()

    def update_metadata(self, **fields: Any) -> None:
        """Add fields to metadata.json (for example final metrics) and rewrite it."""
        self.metadata.update(fields)
        _write_json_atomic(self.run_dir / METADATA_FILE, self.metadata)

    def close(self, status: str = "completed", error: str | None = None) -> None:
        """Close the records file and set the run's final status."""
        if self._stream.closed:
            return
        self._stream.close()
        fields: dict[str, Any] = dict(status=status, finished=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        if error is not None:
            fields["error"] = error
        self.update_metadata(**fields)

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc is None:
            self.close("completed")
        else:
            self.close("failed", error=f"{exc_type.__name__}: {exc}")


def read_metadata(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Return the metadata of a run folder."""
    path = Path(run_dir) / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"Run metadata not found: {path}; is {run_dir} a run folder?")
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


def read_records(run_dir: str | os.PathLike, kind: str | None = None) -> pd.DataFrame:
    """Return the records of a run as a DataFrame, optionally only those of one ``kind``.

    A torn last line, left by a run killed while writing, is skipped with a warning;
    a malformed line elsewhere raises ``ValueError`` naming the file and line.
    """
    path = Path(run_dir) / RECORDS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"Run records not found: {path}; is {run_dir} a run folder?")
    with open(path, encoding="utf-8") as stream:
        lines = stream.read().split("\n")
    rows = []
    last = len(lines) - 1
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            if number - 1 == last:
                logger.warning("Skipping the torn last line %d of %s (the run stopped while writing)", number, path)
                continue
            raise ValueError(f"Malformed record at {path}, line {number}: {error}") from error
        if kind is None or row.get("kind") == kind:
            rows.append(row)
    return pd.DataFrame(rows)

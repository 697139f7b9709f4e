"""Run folders: append-only records that survive a crash, and their readers."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mlorc_lab.records import RECORDS_FILE, RunWriter, read_metadata, read_records
from tests.conftest import REPO_ROOT


def test_records_round_trip(tmp_path):
    with RunWriter(tmp_path / "run", dict(method="full-adamw", seed=3)) as writer:
        writer.write(dict(kind="train", step=1, loss=0.5))
        writer.write_many([dict(kind="spectrum", step=1, matrix="w", singular_values=[2.0, 1.0])])
    frame = read_records(tmp_path / "run")
    assert list(frame["kind"]) == ["train", "spectrum"]
    assert frame.loc[0, "loss"] == 0.5
    assert read_records(tmp_path / "run", "spectrum").loc[0, "singular_values"] == [2.0, 1.0]
    metadata = read_metadata(tmp_path / "run")
    assert metadata["status"] == "completed"
    assert metadata["seed"] == 3
    assert metadata["versions"]["torch"]


def test_failed_run_keeps_records_and_error(tmp_path):
    with pytest.raises(RuntimeError):
        with RunWriter(tmp_path / "run", {}) as writer:
            writer.write(dict(kind="train", step=1, loss=1.0))
            raise RuntimeError("diverged")
    assert read_metadata(tmp_path / "run")["status"] == "failed"
    assert "RuntimeError: diverged" in read_metadata(tmp_path / "run")["error"]
    assert len(read_records(tmp_path / "run")) == 1


def test_torn_last_line_is_skipped(tmp_path):
    writer = RunWriter(tmp_path / "run", {})
    writer.write(dict(kind="train", step=1, loss=1.0))
    writer.write(dict(kind="train", step=2, loss=0.9))
    with open(tmp_path / "run" / RECORDS_FILE, "a", encoding="utf-8") as stream:
        stream.write('{"kind": "train", "st')
    frame = read_records(tmp_path / "run")
    assert list(frame["step"]) == [1, 2]


def test_malformed_middle_line_raises(tmp_path):
    (tmp_path / RECORDS_FILE).write_text('{"kind": "a", "step": 1}\nnot json\n{"kind": "a", "step": 2}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_records(tmp_path)


def test_existing_records_are_not_overwritten(tmp_path):
    RunWriter(tmp_path / "run", {}).close()
    with pytest.raises(FileExistsError, match="already contains records"):
        RunWriter(tmp_path / "run", {})


def test_non_finite_values_become_null(tmp_path):
    with RunWriter(tmp_path / "run", {}) as writer:
        writer.write(dict(kind="train", step=1, loss=float("nan")))
    line = (tmp_path / "run" / RECORDS_FILE).read_text().strip()
    assert json.loads(line)["loss"] is None


def test_record_without_step_raises(tmp_path):
    with RunWriter(tmp_path / "run", {}) as writer:
        with pytest.raises(ValueError, match="'kind' and 'step'"):
            writer.write(dict(kind="train", loss=1.0))


KILLED_RUN = """
import sys
from mlorc_lab.profiles import get_profile
from mlorc_lab.train.encoder import run_glue
# Enough epochs that the run is still training when it is killed; spectra at step 1 only.
settings = get_profile("smoke").glue_spectra.replace(epochs=1000.0, max_steps=None, record_every=100_000)
run_glue("stsb", "full-adamw", settings, sys.argv[1], data_dir=sys.argv[2], reuse=False, progress=False)
"""


@pytest.mark.slow
def test_records_readable_after_run_killed_midway(tmp_path, data_dir):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, str(tmp_path), str(data_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    records_path = tmp_path / "glue-stsb-full-adamw" / RECORDS_FILE
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if records_path.is_file() and records_path.read_text().count('"kind": "train"') >= 3:
                break
            assert process.poll() is None, "the training process ended before it was killed"
            time.sleep(0.2)
        else:
            pytest.fail("no 3 training records within 240 s")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    frame = read_records(records_path.parent)
    train = frame[frame["kind"] == "train"]
    assert len(train) >= 3
    assert list(train["step"]) == list(range(1, len(train) + 1))
    assert train["loss"].notna().all()
    assert not read_records(records_path.parent, "spectrum").empty
    assert read_metadata(records_path.parent)["status"] == "running"

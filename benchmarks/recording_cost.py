"""Measure what recording costs: seconds per training step with and without recorders.

Fine-tunes MiniLM (the cpu profile's encoder) on STS-B at batch 16 and max length 128,
twice or three times from the same seed and for the same number of steps:

- ``none``: no recorder;
- ``spectra``: a SpectrumRecorder every ``--every`` steps on the 36 query, key, value,
  attention-output and feed-forward matrices (three exact SVDs each per recorded step);
- ``diagnostics`` (with ``--diagnostics``): LowRankRecorder and DriftRecorder at the
  same interval, as the diagnostics runner attaches them (without the RSVD sweep).

Usage (from the repository root, with MLORC_LAB_DATA_DIR set or ../shared/data present):

    python benchmarks/recording_cost.py --steps 40 --every 10 [--threads 1] [--diagnostics]

Prints one JSON object per variant with wall seconds per step (mean, median), the mean
over recorded and unrecorded steps, and the 1-minute load average before and after,
because the timings mean little on a machine shared with other jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from mlorc_lab.data.glue import GlueCollator, encode_glue, load_glue_split  # noqa: E402
from mlorc_lab.instrument.drift import DriftRecorder  # noqa: E402
from mlorc_lab.instrument.low_rank import LowRankRecorder  # noqa: E402
from mlorc_lab.instrument.spectra import ENCODER_MATRIX_PATTERNS, SpectrumRecorder  # noqa: E402
from mlorc_lab.methods import MethodOptions, build_method  # noqa: E402
from mlorc_lab.models import load_encoder  # noqa: E402


class NullWriter:
    """Writer that keeps only a count, so disk speed does not enter the timing."""

    def __init__(self) -> None:
        self.records = 0

    def write_many(self, records) -> None:
        self.records += len(list(records))


def time_run(variant: str, batches, args) -> dict:
    model, _ = load_encoder("all-minilm-l6-v2", 1, seed=0)
    model, optimizer = build_method(args.method, model, MethodOptions(learning_rate=1e-4, rank=4, seed=0))
    writer = NullWriter()
    recorders = []
    if variant == "spectra":
        recorders.append(SpectrumRecorder(model.named_parameters(), optimizer, writer, every=args.every))
    elif variant == "diagnostics":
        options = dict(every=args.every, patterns=ENCODER_MATRIX_PATTERNS)
        recorders.append(LowRankRecorder(model.named_parameters(), optimizer, writer, rank=4, oversampling=0, **options))
        recorders.append(DriftRecorder(model.named_parameters(), optimizer, writer, rank=4, refresh_every=50, **options))

    torch.manual_seed(0)
    model.train()
    load_before = os.getloadavg()[0]
    durations = []
    for batch in batches[: args.steps]:
        start = time.perf_counter()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        durations.append(time.perf_counter() - start)

    for recorder in recorders:
        recorder.remove()

    recorded = [d for step, d in enumerate(durations, start=1) if step == 1 or step % args.every == 0]
    unrecorded = [d for step, d in enumerate(durations, start=1) if not (step == 1 or step % args.every == 0)]
    return dict(
        variant=variant,
        method=args.method,
        steps=len(durations),
        every=args.every,
        threads=torch.get_num_threads(),
        seconds_per_step_mean=statistics.fmean(durations),
        seconds_per_step_median=statistics.median(durations),
        recorded_step_mean=statistics.fmean(recorded),
        unrecorded_step_mean=statistics.fmean(unrecorded),
        records=writer.records,
        load_before=load_before,
        load_after=os.getloadavg()[0],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="training steps per variant")
    parser.add_argument("--every", type=int, default=10, help="recording interval in steps")
    parser.add_argument("--method", default="full-adamw", help="method of mlorc_lab.methods (default full-adamw)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--diagnostics", action="store_true", help="also time the low-rank and drift recorders")
    parser.add_argument("--data-dir", default=None, help="data folder (default MLORC_LAB_DATA_DIR or ../shared/data)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    data_dir = args.data_dir or os.environ.get("MLORC_LAB_DATA_DIR") or str(
        pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    )
    _, tokenizer = load_encoder("all-minilm-l6-v2", 1)
    frame = load_glue_split("stsb", "train", data_dir, max_examples=16 * args.steps)
    loader = DataLoader(encode_glue(frame, tokenizer, 128), batch_size=16, collate_fn=GlueCollator(tokenizer))
    batches = list(loader)
    variants = ["none", "spectra"] + (["diagnostics"] if args.diagnostics else [])
    for variant in variants:
        print(json.dumps(time_run(variant, batches, args)), flush=True)


if __name__ == "__main__":
    main()

"""Recorders on a real MiniLM fine-tune on STS-B rows: finite angles, no effect on training."""

import math
import re

import pytest
import torch
from torch.utils.data import DataLoader

from mlorc_lab.data.glue import GlueCollator, encode_glue, load_glue_split
from mlorc_lab.instrument.callbacks import RecorderCallback
from mlorc_lab.instrument.drift import DriftRecorder
from mlorc_lab.instrument.low_rank import LowRankRecorder
from mlorc_lab.models import load_encoder
from mlorc_lab.optim import MLorcAdamW

# The first layer's attention matrices: four 384 x 384 exact SVDs per recorded step.
FIRST_LAYER = re.compile(r"\.layer\.0\.attention\.")


class ListWriter:
    def __init__(self):
        self.rows = []

    def write_many(self, records):
        self.rows.extend(records)


def first_layer(model):
    return [(name, param) for name, param in model.named_parameters() if FIRST_LAYER.search(name)]


@pytest.fixture(scope="module")
def stsb_batches(data_dir):
    _, tokenizer = load_encoder("all-minilm-l6-v2", 1)
    frame = load_glue_split("stsb", "train", data_dir, max_examples=24)
    loader = DataLoader(encode_glue(frame, tokenizer, 48), batch_size=8, collate_fn=GlueCollator(tokenizer))
    return list(loader)


def fine_tune(batches, attach=None, detach_after=None):
    """Run MLorc-AdamW over ``batches``; return final weights and the recorder's rows.

    Only the recorded matrices are compressed (the rest keep dense AdamW state), which
    keeps the randomized SVDs of a step to four.
    """
    model, _ = load_encoder("all-minilm-l6-v2", 1, seed=0)
    recorded = {name for name, _ in first_layer(model)}
    groups = [
        {"params": [param for name, param in model.named_parameters() if name in recorded]},
        {"params": [param for name, param in model.named_parameters() if name not in recorded], "compress": False},
    ]
    optimizer = MLorcAdamW(groups, lr=1e-3, betas=(0.8, 0.999), rank=4, seed=0)
    writer = ListWriter()
    recorder = attach(model, optimizer, writer) if attach else None
    torch.manual_seed(0)  # dropout masks
    model.train()
    for step, batch in enumerate(batches, start=1):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if recorder is not None and step == detach_after:
            recorder.remove()
    if recorder is not None:
        recorder.remove()
    return [param.detach().clone() for param in model.parameters()], writer.rows


def drift_recorder(model, optimizer, writer):
    return DriftRecorder(first_layer(model), optimizer, writer, every=1, patterns=None, refresh_every=1)


@pytest.mark.slow
def test_drift_on_minilm_and_detach_bit_for_bit(stsb_batches):
    # Three steps; the recorder is attached for the first two and removed after them.
    plain, _ = fine_tune(stsb_batches)
    detached, rows = fine_tune(stsb_batches, attach=drift_recorder, detach_after=2)

    drift = [row for row in rows if row["kind"] == "drift"]
    assert len(drift) == 2 * 4 * 2  # steps x matrices x methods
    assert {row["source"] for row in drift if row["method"] == "mlorc"} == {"stored"}
    for row in drift:
        assert len(row["angles"]) == 4
        assert all(math.isfinite(angle) and 0.0 <= angle <= math.pi / 2 for angle in row["angles"])
        assert math.isfinite(row["reconstruction_error"])
    # A refresh every step: step 2 compares the projectors of g_1 and g_2.
    refreshes = [row for row in rows if row["kind"] == "projector_refresh"]
    assert [row["step"] for row in refreshes] == [2] * 4
    assert all(0.0 <= angle <= math.pi / 2 for row in refreshes for angle in row["angles"])

    for expected, after_detach in zip(plain, detached):
        assert torch.equal(expected, after_detach)


@pytest.mark.slow
def test_trainer_callback_attaches_and_removes(stsb_batches, tmp_path):
    from transformers import Trainer, TrainingArguments

    model, tokenizer = load_encoder("all-minilm-l6-v2", 1, seed=0)
    features = [
        {key: value[index] for key, value in batch.items()} for batch in stsb_batches for index in range(len(batch["labels"]))
    ]
    writer = ListWriter()
    callback = RecorderCallback(
        lambda model, optimizer: LowRankRecorder(
            first_layer(model), optimizer, writer, every=1, patterns=None, rank=4, oversampling=0
        )
    )
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=8,
        learning_rate=1e-4,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        seed=0,
    )
    collate = GlueCollator(tokenizer)

    def collate_unpadded(rows):
        # Rows come from padded batches; drop padding so the collator re-pads them.
        trimmed = []
        for row in rows:
            length = int(row["attention_mask"].sum())
            trimmed.append({key: (value[:length] if value.dim() else value) for key, value in row.items()})
        return collate(trimmed)

    trainer = Trainer(model=model, args=args, train_dataset=features, data_collator=collate_unpadded, callbacks=[callback])
    trainer.train()
    rows = [row for row in writer.rows if row["kind"] == "low_rank"]
    assert sorted({row["step"] for row in rows}) == [1, 2]
    assert len(rows) == 2 * 4 * 3  # steps x matrices x quantities
    assert callback.recorder is None
    inner = trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer
    assert len(inner._optimizer_step_pre_hooks) == 0
    assert len(inner._optimizer_step_post_hooks) == 0

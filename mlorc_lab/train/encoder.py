"""Encoder fine-tuning on GLUE with records written to a run folder."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from mlorc_lab.data.glue import GlueCollator, encode_glue, get_glue_task, glue_metrics, load_glue_split
from mlorc_lab.instrument.spectra import ENCODER_MATRIX_PATTERNS, SpectrumRecorder
from mlorc_lab.methods import MethodOptions, build_method, check_method
from mlorc_lab.models import load_encoder
from mlorc_lab.profiles import GlueSpectraSettings
from mlorc_lab.records import METADATA_FILE, RunWriter, read_metadata

__all__ = ["evaluate_glue", "run_glue"]

logger = logging.getLogger(__name__)


def _run_config(task: str, method: str, settings: GlueSpectraSettings, data_dir: Path | None) -> dict[str, Any]:
    return dict(
        experiment="glue",
        task=get_glue_task(task).name,
        method=method,
        settings=dataclasses.asdict(settings),
        data_dir=str(data_dir) if data_dir is not None else None,
    )


def _completed_with(run_dir: Path, config: dict[str, Any]) -> bool:
    if not (run_dir / METADATA_FILE).is_file():
        return False
    metadata = read_metadata(run_dir)
    same = all(_jsonable(metadata.get(key)) == _jsonable(value) for key, value in config.items())
    return metadata.get("status") == "completed" and same


def _jsonable(value: Any) -> Any:
    # Tuples come back from JSON as lists; compare in the JSON form.
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value


@torch.no_grad()
def evaluate_glue(model: torch.nn.Module, loader: DataLoader, task: str) -> dict[str, float]:
    """Return the GLUE metrics of ``model`` on the batches of ``loader``."""
    glue_task = get_glue_task(task)
    model.eval()
    predictions, labels = [], []
    for batch in loader:
        logits = model(**{key: value for key, value in batch.items() if key != "labels"}).logits
        if glue_task.is_regression:
            predictions.append(logits.squeeze(-1).float().cpu().numpy())
        else:
            predictions.append(logits.argmax(-1).cpu().numpy())
        labels.append(batch["labels"].cpu().numpy())
    model.train()
    return glue_metrics(glue_task, np.concatenate(predictions), np.concatenate(labels))


def run_glue(
    task: str,
    method: str,
    settings: GlueSpectraSettings,
    output_dir: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    record_spectra: bool = True,
    reuse: bool = True,
    progress: bool = True,
    method_options: MethodOptions | None = None,
) -> Path:
    """Fine-tune an encoder on a GLUE task and write a run folder.

    Parameters
    ----------
    task : str
        "cola", "mrpc", "rte" or "stsb".
    method : str
        A method of :mod:`mlorc_lab.methods`, for example "full-adamw".
    settings : GlueSpectraSettings
        Model, batch size, learning rate, steps and recording interval.
    output_dir : path
        Parent folder; the run goes to ``output_dir/glue-<task>-<method>``.
    data_dir : path, optional
        Folder with ``glue/<TASK>/train.tsv`` and ``dev.tsv``; None reads
        ``MLORC_LAB_DATA_DIR`` and, when that is unset, the Hugging Face hub.
    record_spectra : bool, default True
        Attach a :class:`SpectrumRecorder` for the appendix C.1 matrices.
    reuse : bool, default True
        Return an existing completed run with the same configuration instead of
        training again.
    method_options : MethodOptions, optional
        Options of the method (LoRA rank, GaLore gap, ...). None uses the registry
        defaults with the learning rate, weight decay and seed of ``settings``.

    Returns
    -------
    Path
        The run folder, with ``metadata.json`` (final metrics under ``eval``) and
        ``records.jsonl`` (``train`` loss per step, ``spectrum`` rows, ``eval``).
    """
    from mlorc_lab.data.paths import resolve_data_dir

    glue_task = get_glue_task(task)
    check_method(method)  # before the data and the model are loaded
    resolved_data = resolve_data_dir(data_dir)
    run_dir = Path(output_dir) / f"glue-{glue_task.name}-{method}"
    config = _run_config(glue_task.name, method, settings, resolved_data)
    if method_options is not None:
        config["method_options"] = dataclasses.asdict(method_options)
    if reuse and _completed_with(run_dir, config):
        logger.info("Reusing the completed run %s", run_dir)
        return run_dir

    train_frame = load_glue_split(glue_task, "train", resolved_data, settings.max_train_examples)
    eval_frame = load_glue_split(glue_task, "validation", resolved_data, settings.max_eval_examples)
    model, tokenizer = load_encoder(settings.model, glue_task.num_labels, seed=settings.seed)
    collate = GlueCollator(tokenizer)
    shuffle = torch.Generator().manual_seed(settings.seed)
    train_loader = DataLoader(
        encode_glue(train_frame, tokenizer, settings.max_length),
        batch_size=settings.batch_size,
        shuffle=True,
        generator=shuffle,
        collate_fn=collate,
    )
    eval_loader = DataLoader(
        encode_glue(eval_frame, tokenizer, settings.max_length), batch_size=64, collate_fn=collate
    )
    total_steps = math.ceil(settings.epochs * len(train_loader))
    if settings.max_steps is not None:
        total_steps = min(total_steps, settings.max_steps)

    options = method_options or MethodOptions(
        learning_rate=settings.learning_rate, weight_decay=settings.weight_decay, seed=settings.seed
    )
    model, optimizer = build_method(method, model, options)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(settings.warmup_ratio * total_steps), total_steps
    )
    config["total_steps"] = total_steps
    config["model_parameters"] = sum(p.numel() for p in model.parameters())

    with RunWriter(run_dir, config, overwrite=True) as writer:
        recorder = None
        if record_spectra:
            recorder = SpectrumRecorder(
                model.named_parameters(),
                optimizer,
                writer,
                every=settings.record_every,
                patterns=ENCODER_MATRIX_PATTERNS,
                top_k=settings.top_k,
            )
        torch.manual_seed(settings.seed)  # dropout masks
        model.train()
        step = 0
        bar = tqdm(total=total_steps, desc=f"{glue_task.name} {method}", disable=not progress)
        while step < total_steps:
            for batch in train_loader:
                loss = model(**batch).loss
                loss.backward()
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                writer.write(dict(kind="train", step=step, loss=loss.item(), lr=scheduler.get_last_lr()[0]))
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}")
                if step >= total_steps:
                    break
        bar.close()
        if recorder is not None:
            recorder.remove()
        metrics = evaluate_glue(model, eval_loader, glue_task.name)
        writer.write(dict(kind="eval", step=step, split="validation", **metrics))
        writer.update_metadata(eval=metrics)
        logger.info("%s %s after %d steps: %s", glue_task.name, method, step, metrics)
    return run_dir

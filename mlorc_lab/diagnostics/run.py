"""A fine-tune with every diagnostics recorder attached, on GLUE or on a text file.

``run_diagnostics`` trains one model for a fixed number of steps and writes a run
folder whose records hold ``low_rank``, ``negative_v``, ``drift``,
``projector_refresh``, ``rsvd_error`` and ``train`` rows. It is the runner behind the
RSVD-bound and projection-drift figures and the exploration notebook (the
``spectrum`` rows come from the ``low_rank`` records, which carry singular values):

- a GLUE task name ("cola", "mrpc", "rte", "stsb") fine-tunes a sequence classifier
  (:func:`mlorc_lab.models.load_encoder`) on the task's train split;
- a ``.txt`` file (one document a line) or ``.jsonl`` file (a ``text`` field per line)
  fine-tunes a causal language model (:func:`mlorc_lab.models.load_causal_lm`) on
  next-token prediction.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mlorc_lab.instrument.drift import DriftRecorder
from mlorc_lab.instrument.low_rank import LowRankRecorder
from mlorc_lab.instrument.rsvd_error import RsvdErrorRecorder
from mlorc_lab.instrument.spectra import ENCODER_MATRIX_PATTERNS, select_matrices
from mlorc_lab.methods import MethodOptions, build_method
from mlorc_lab.profiles import DiagnosticsSettings
from mlorc_lab.records import METADATA_FILE, RunWriter, read_metadata

__all__ = ["DECODER_MATRIX_PATTERNS", "choose_patterns", "read_text_documents", "run_diagnostics"]

logger = logging.getLogger(__name__)

# Llama-style decoder names (SmolLM2, Llama, Qwen, Mistral): attention and MLP matrices.
DECODER_MATRIX_PATTERNS: dict[str, str] = {
    "query": r"self_attn\.q_proj\.weight$",
    "key": r"self_attn\.k_proj\.weight$",
    "value": r"self_attn\.v_proj\.weight$",
    "attention_output": r"self_attn\.o_proj\.weight$",
    "ffn_gate": r"mlp\.gate_proj\.weight$",
    "ffn_in": r"mlp\.up_proj\.weight$",
    "ffn_out": r"mlp\.down_proj\.weight$",
}

# The RSVD error sweep is the costliest recorder, so it runs only on these matrix types.
RSVD_MATRIX_TYPES = ("query", "ffn_in")

GLUE_NAMES = ("cola", "mrpc", "rte", "stsb", "sts-b")


def choose_patterns(model: torch.nn.Module) -> dict[str, str]:
    """Return the encoder (BERT/RoBERTa) or decoder (Llama-style) patterns that match ``model``."""
    for patterns in (ENCODER_MATRIX_PATTERNS, DECODER_MATRIX_PATTERNS):
        try:
            select_matrices(model.named_parameters(), patterns)
        except ValueError:
            continue
        return patterns
    raise ValueError(
        f"Neither the BERT nor the Llama matrix names match {type(model).__name__}; "
        "pass patterns={label: regex} naming the matrices to record"
    )


def read_text_documents(path: str | os.PathLike, text_field: str = "text") -> list[str]:
    """Read documents from a ``.txt`` file (one a line) or a ``.jsonl`` file (``text_field``)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Text data file not found: {path}; pass a .txt or .jsonl file or a GLUE task name")
    documents = []
    with path.open(encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            if path.suffix == ".jsonl":
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                    raise ValueError(f"{path}, line {number}: expected a JSON object with a string {text_field!r} field")
                documents.append(record[text_field])
            elif path.suffix == ".txt":
                documents.append(line.rstrip("\n"))
            else:
                raise ValueError(f"Unsupported text data file {path}; use a .txt or .jsonl file")
    if not documents:
        raise ValueError(f"{path} contains no documents; expected at least one non-empty line")
    return documents


def _glue_loader(settings: DiagnosticsSettings, task: str, data_dir: Path | None):
    from mlorc_lab.data.glue import GlueCollator, encode_glue, get_glue_task, load_glue_split
    from mlorc_lab.models import load_encoder

    glue_task = get_glue_task(task)
    frame = load_glue_split(glue_task, "train", data_dir, settings.max_train_examples)
    model, tokenizer = load_encoder(settings.model, glue_task.num_labels, seed=settings.seed)
    dataset = encode_glue(frame, tokenizer, settings.max_length)
    return model, dataset, GlueCollator(tokenizer)


def _text_loader(settings: DiagnosticsSettings, path: str):
    from transformers import DataCollatorForLanguageModeling

    from mlorc_lab.models import load_causal_lm

    documents = read_text_documents(path)
    if settings.max_train_examples is not None:
        documents = documents[: settings.max_train_examples]
    model, tokenizer = load_causal_lm(settings.model, seed=settings.seed)
    dataset = [
        {"input_ids": ids}
        for ids in tokenizer(documents, truncation=True, max_length=settings.max_length)["input_ids"]
    ]
    return model, dataset, DataCollatorForLanguageModeling(tokenizer, mlm=False)


def _batches(loader: DataLoader) -> Iterator[dict[str, torch.Tensor]]:
    while True:
        yield from loader


def _completed_with(run_dir: Path, config: dict[str, Any]) -> bool:
    if not (run_dir / METADATA_FILE).is_file():
        return False
    metadata = read_metadata(run_dir)
    return metadata.get("status") == "completed" and metadata.get("config") == json.loads(json.dumps(config))


def _recorded_parameters(model: torch.nn.Module, matrix_filter: str | None) -> list[tuple[str, Any]]:
    named = list(model.named_parameters())
    if matrix_filter is None:
        return named
    selected = [(name, param) for name, param in named if re.search(matrix_filter, name)]
    if not selected:
        raise ValueError(f"matrix_filter {matrix_filter!r} matches no parameter name; check the model's names")
    return selected


def _attach_recorders(model, optimizer, writer, settings: DiagnosticsSettings, patterns) -> list[Any]:
    # NOTE: no SpectrumRecorder here: the low-rank records carry the same spectra (of
    # the moments before compression), and a second exact SVD per matrix would double
    # the recording cost.
    named = _recorded_parameters(model, settings.matrix_filter)
    rsvd_patterns = {label: pattern for label, pattern in patterns.items() if label in RSVD_MATRIX_TYPES}
    rank_options = dict(rank=settings.rank, oversampling=settings.oversampling)
    return [
        LowRankRecorder(named, optimizer, writer, every=settings.record_every, patterns=patterns, **rank_options),
        DriftRecorder(
            named,
            optimizer,
            writer,
            every=settings.record_every,
            patterns=patterns,
            rank=settings.rank,
            oversampling=settings.oversampling,
            refresh_every=settings.refresh_every,
            seed=settings.seed,
        ),
        RsvdErrorRecorder(
            named,
            optimizer,
            writer,
            every=settings.rsvd_every,
            patterns=rsvd_patterns or patterns,
            rank=settings.rank,
            draws=settings.rsvd_draws,
            seed=settings.seed,
        ),
    ]


def run_diagnostics(
    settings: DiagnosticsSettings,
    output_dir: str | os.PathLike,
    *,
    data: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    patterns: dict[str, str] | None = None,
    run_name: str | None = None,
    reuse: bool = True,
    progress: bool = True,
) -> Path:
    """Fine-tune with all diagnostics recorders attached and return the run folder.

    Parameters
    ----------
    settings : DiagnosticsSettings
        Model, method, steps, rank, recording intervals.
    output_dir : path
        Parent folder; the run goes to ``output_dir/<run_name>``.
    data : str or path, optional
        A GLUE task name or a ``.txt``/``.jsonl`` file; None uses ``settings.task``.
    data_dir : path, optional
        Folder with ``glue/<TASK>/``; None reads ``MLORC_LAB_DATA_DIR``.
    patterns : dict, optional
        Matrices to record; None picks BERT or Llama-style names by what the model has.
    run_name : str, optional
        Default ``diagnostics-<data>-<method>``.
    reuse : bool, default True
        Return an existing completed run with the same configuration.
    """
    from mlorc_lab.data.paths import resolve_data_dir

    source = str(data if data is not None else settings.task)
    is_glue = source.strip().lower() in GLUE_NAMES
    resolved_data = resolve_data_dir(data_dir) if is_glue else None
    label = source.strip().lower() if is_glue else pathlib.Path(source).stem
    run_dir = Path(output_dir) / (run_name or f"diagnostics-{label}-{settings.method}")
    config = dict(
        experiment="diagnostics",
        data=source if is_glue else str(pathlib.Path(source).resolve()),
        settings=dataclasses.asdict(settings),
        data_dir=str(resolved_data) if resolved_data is not None else None,
        patterns=patterns,
    )
    if reuse and _completed_with(run_dir, config):
        logger.info("Reusing the completed run %s", run_dir)
        return run_dir

    if is_glue:
        model, dataset, collate = _glue_loader(settings, source, resolved_data)
    else:
        model, dataset, collate = _text_loader(settings, source)
    loader = DataLoader(
        dataset,
        batch_size=settings.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(settings.seed),
        collate_fn=collate,
    )
    options = MethodOptions(
        learning_rate=settings.learning_rate, rank=settings.rank, oversampling=settings.oversampling, seed=settings.seed
    )
    model, optimizer = build_method(settings.method, model, options)
    patterns = patterns or choose_patterns(model)

    with RunWriter(run_dir, dict(config=config), overwrite=True) as writer:
        recorders = _attach_recorders(model, optimizer, writer, settings, patterns)
        torch.manual_seed(settings.seed)  # dropout masks
        model.train()
        batches = _batches(loader)
        for step in tqdm(range(1, settings.steps + 1), desc=f"diagnostics {label}", disable=not progress):
            loss = model(**next(batches)).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            writer.write(dict(kind="train", step=step, loss=loss.item()))
        for recorder in recorders:
            recorder.remove()
        refresh_steps = recorders[1].refresh_steps
        writer.update_metadata(refresh_steps=refresh_steps, matrix_patterns=patterns)
    return run_dir

"""GLUE fine-tuning of Full, MLorc, LoRA and GaLore for Table 4, through :func:`run_glue`."""

from __future__ import annotations

import os
from pathlib import Path

from mlorc_lab.methods import MethodOptions, check_method
from mlorc_lab.profiles import GlueComparisonSettings, GlueSpectraSettings
from mlorc_lab.train.encoder import run_glue

__all__ = ["glue_method_options", "run_glue_comparison"]


def glue_method_options(settings: GlueComparisonSettings, task: str, method: str) -> MethodOptions:
    """Return the registry options of ``method`` on ``task`` under ``settings``."""
    check_method(method)
    rates = settings.learning_rates.get(task)
    if rates is None or method not in rates:
        raise ValueError(f"No learning rate for method {method!r} on task {task!r}; add it to learning_rates")
    return MethodOptions(
        learning_rate=rates[method],
        weight_decay=settings.weight_decay,
        rank=settings.rank,
        seed=settings.seed,
        lora_rank=settings.lora_rank,
        lora_alpha=settings.lora_alpha,
        galore_update_gap=settings.galore_update_gap,
        galore_scale=settings.galore_scale,
    )


def run_glue_comparison(
    task: str,
    method: str,
    settings: GlueComparisonSettings,
    output_dir: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    reuse: bool = True,
    progress: bool = True,
) -> Path:
    """Fine-tune ``settings.model`` on ``task`` with ``method`` and return the run folder.

    The run goes to ``output_dir/glue-<task>-<method>`` without spectra recording;
    see :func:`mlorc_lab.train.encoder.run_glue` for the folder's contents.
    """
    options = glue_method_options(settings, task, method)
    loop = GlueSpectraSettings(
        model=settings.model,
        tasks=(task,),
        batch_size=settings.batch_size,
        learning_rate=options.learning_rate,
        weight_decay=settings.weight_decay,
        warmup_ratio=settings.warmup_ratio,
        epochs=settings.epochs,
        max_steps=settings.max_steps,
        max_length=settings.max_length,
        max_train_examples=settings.max_train_examples,
        max_eval_examples=settings.max_eval_examples,
        seed=settings.seed,
    )
    return run_glue(
        task,
        method,
        loop,
        output_dir,
        data_dir=data_dir,
        record_spectra=False,
        reuse=reuse,
        progress=progress,
        method_options=options,
    )

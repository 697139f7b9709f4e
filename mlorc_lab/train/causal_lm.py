"""Causal-LM fine-tuning on math or code instructions, with records written to a run folder.

Data: "math" is GSM8K train from the local data folder, or MetaMathQA from the hub
when there is none; "code" is Code Alpaca 2k locally, or CodeFeedback from the hub.
Prompts use the Alpaca template of :mod:`mlorc_lab.data.instruct` and the loss
covers the response tokens (and the closing EOS) only. The held-out examples are
the ones right after the training examples in file order, so they never overlap.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from mlorc_lab.data import (
    IGNORE_INDEX,
    InstructCollator,
    encode_instruct,
    load_code_alpaca,
    load_codefeedback,
    load_gsm8k,
    load_metamathqa,
    resolve_data_dir,
)
from mlorc_lab.methods import MethodOptions, build_method, check_method
from mlorc_lab.models import load_causal_lm
from mlorc_lab.profiles import CAUSAL_DATASETS, CausalLMSettings
from mlorc_lab.records import METADATA_FILE, RunWriter, read_metadata

__all__ = [
    "heldout_loss",
    "load_instruction_data",
    "load_training_model",
    "method_options",
    "resolve_device",
    "run_causal_lm",
]

logger = logging.getLogger(__name__)


def load_instruction_data(
    dataset: str, data_dir: str | os.PathLike | None, max_examples: int | None
) -> list[dict[str, str]]:
    """Load the first ``max_examples`` prompt/response pairs of "math" or "code".

    With a data folder (argument or ``MLORC_LAB_DATA_DIR``) this reads GSM8K train or
    Code Alpaca 2k from it; without one, MetaMathQA or CodeFeedback from the hub.
    """
    root = resolve_data_dir(data_dir)
    if dataset == "math":
        return load_gsm8k("train", root, max_examples) if root is not None else load_metamathqa(max_examples)
    if dataset == "code":
        return load_code_alpaca(root, max_examples) if root is not None else load_codefeedback(max_examples)
    raise ValueError(f"Unknown dataset {dataset!r}; choose one of {', '.join(CAUSAL_DATASETS)}")


def resolve_device(device: str) -> torch.device:
    """Return the device for "auto" (CUDA when available, else CPU) or a device name."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def method_options(settings: CausalLMSettings, dataset: str, method: str) -> MethodOptions:
    """Return the registry options of ``method`` on ``dataset`` under ``settings``."""
    betas = (settings.mlorc_beta1, 0.999) if method == "mlorc-adamw" else None
    return MethodOptions(
        learning_rate=settings.learning_rate(dataset, method),
        weight_decay=settings.weight_decay,
        betas=betas,
        rank=settings.rank,
        oversampling=settings.oversampling,
        seed=settings.seed,
        lora_rank=settings.lora_rank,
        lora_alpha=settings.lora_alpha,
        galore_update_gap=settings.galore_update_gap,
        galore_scale=settings.galore_scale,
    )


@torch.no_grad()
def load_training_model(
    model_name: str, dtype: str, seed: int, device: torch.device, gradient_checkpointing: bool
) -> tuple[torch.nn.Module, Any]:
    """Load the causal LM and its tokenizer on ``device``, ready to train.

    ``dtype`` is a torch dtype name such as "float32". With ``gradient_checkpointing``
    the activations are recomputed in the backward pass and the KV cache is off.
    """
    model, tokenizer = load_causal_lm(model_name, dtype=getattr(torch, dtype), seed=seed)
    model.to(device)
    if gradient_checkpointing:
        # Non-reentrant checkpointing also works when the inputs need no gradient,
        # as with LoRA's frozen embeddings.
        # transformers 5.25 renamed gradient_checkpointing_enable to activation_checkpointing_enable.
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable({"use_reentrant": False})
        model.config.use_cache = False
    return model, tokenizer


def heldout_loss(model: torch.nn.Module, loader: DataLoader, device: torch.device) -> float:
    """Return the mean cross-entropy per response token over the batches of ``loader``."""
    model.eval()
    total, tokens = 0.0, 0
    for batch in loader:
        batch = {key: value.to(device) for key, value in batch.items()}
        # Labels are shifted by one inside the model, so the first position never counts.
        count = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        total += model(**batch).loss.float().item() * count
        tokens += count
    model.train()
    return total / tokens


def _completed_with(run_dir: Path, config: dict[str, Any]) -> bool:
    import json

    if not (run_dir / METADATA_FILE).is_file():
        return False
    metadata = read_metadata(run_dir)
    # Compare in JSON form, because tuples come back from JSON as lists.
    same = all(
        json.dumps(metadata.get(key), sort_keys=True) == json.dumps(value, sort_keys=True)
        for key, value in config.items()
    )
    return metadata.get("status") == "completed" and same


def _accumulation_steps(settings: CausalLMSettings) -> tuple[int, int]:
    micro = settings.micro_batch_size or settings.batch_size
    if micro < 1 or settings.batch_size % micro != 0:
        raise ValueError(
            f"micro_batch_size={settings.micro_batch_size} must be a positive divisor of "
            f"batch_size={settings.batch_size}"
        )
    return micro, settings.batch_size // micro


def run_causal_lm(
    dataset: str,
    method: str,
    settings: CausalLMSettings,
    output_dir: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    reuse: bool = True,
    *,
    progress: bool = True,
) -> Path:
    """Fine-tune a causal LM on "math" or "code" with one method and write a run folder.

    Parameters
    ----------
    dataset : {"math", "code"}
        See the module docstring for the data of each.
    method : str
        A method of :mod:`mlorc_lab.methods`, for example "mlorc-adamw".
    settings : CausalLMSettings
        Model, batch size, learning rates, steps and evaluation sizes.
    output_dir : path
        Parent folder; the run goes to ``output_dir/<dataset>-<method>``.
    data_dir : path, optional
        Local data folder; None reads ``MLORC_LAB_DATA_DIR`` and, when that is unset,
        the Hugging Face hub.
    reuse : bool, default True
        Return an existing completed run with the same configuration instead of
        training again.
    progress : bool, default True
        Show tqdm progress bars.

    Returns
    -------
    Path
        The run folder: ``metadata.json`` (``eval`` contains ``heldout_loss`` and, where
        the settings ask for them, ``gsm8k_accuracy`` or ``humaneval_pass_at_1``) and
        ``records.jsonl`` (one ``train`` record per optimizer step with ``loss``,
        ``lr`` and ``seconds``, then one ``eval`` record).
    """
    if dataset not in CAUSAL_DATASETS:
        raise ValueError(f"Unknown dataset {dataset!r}; choose one of {', '.join(CAUSAL_DATASETS)}")
    check_method(method)
    micro_batch, accumulation = _accumulation_steps(settings)
    resolved_data = resolve_data_dir(data_dir)
    run_dir = Path(output_dir) / f"{dataset}-{method}"
    config: dict[str, Any] = dict(
        experiment="causal_lm",
        dataset=dataset,
        method=method,
        settings=dataclasses.asdict(settings),
        data_dir=str(resolved_data) if resolved_data is not None else None,
    )
    if reuse and _completed_with(run_dir, config):
        logger.info("Reusing the completed run %s", run_dir)
        return run_dir

    options = method_options(settings, dataset, method)
    device = resolve_device(settings.device)
    requested = None if settings.max_train_examples is None else settings.max_train_examples + settings.heldout_examples
    examples = load_instruction_data(dataset, resolved_data, requested)
    train_count = len(examples) - settings.heldout_examples
    if train_count < 1:
        raise ValueError(
            f"{dataset!r} has {len(examples)} examples, not enough for {settings.heldout_examples} held-out ones"
        )
    train_examples, heldout_examples = examples[:train_count], examples[train_count:]

    model, tokenizer = load_training_model(
        settings.model, settings.dtype, settings.seed, device, settings.gradient_checkpointing
    )
    model, optimizer = build_method(method, model, options)

    max_length = settings.max_length[dataset]
    collate = InstructCollator(tokenizer.pad_token_id)
    train_features = encode_instruct(train_examples, tokenizer, max_length)
    train_loader = DataLoader(
        train_features,
        batch_size=micro_batch,
        shuffle=True,
        generator=torch.Generator().manual_seed(settings.seed),
        collate_fn=collate,
        drop_last=True,
    )
    steps_per_epoch = len(train_loader) // accumulation
    if steps_per_epoch < 1:
        raise ValueError(f"{len(train_features)} training examples do not fill one batch of {settings.batch_size}")
    total_steps = math.ceil(settings.epochs * steps_per_epoch)
    if settings.max_steps is not None:
        total_steps = min(total_steps, settings.max_steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(settings.warmup_ratio * total_steps), total_steps)

    config.update(
        total_steps=total_steps,
        learning_rate=options.learning_rate,
        train_examples=len(train_features),
        trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        model_parameters=sum(p.numel() for p in model.parameters()),
        device=str(device),
    )
    with RunWriter(run_dir, config, overwrite=True) as writer:
        _train(
            model,
            optimizer,
            scheduler,
            train_loader,
            accumulation,
            total_steps,
            writer,
            device,
            seed=settings.seed,
            progress=progress,
            description=f"{dataset} {method}",
        )
        metrics = _evaluate(model, tokenizer, dataset, settings, heldout_examples, resolved_data, device, progress)
        writer.write(dict(kind="eval", step=total_steps, **metrics))
        writer.update_metadata(eval=metrics)
        logger.info("%s %s after %d steps: %s", dataset, method, total_steps, metrics)
    return run_dir


def _train(
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    loader: DataLoader,
    accumulation: int,
    total_steps: int,
    writer: RunWriter,
    device: torch.device,
    *,
    seed: int,
    progress: bool,
    description: str,
) -> None:
    torch.manual_seed(seed)  # dropout masks (LoRA dropout), as the GLUE runner seeds them
    model.train()
    step = 0
    bar = tqdm(total=total_steps, desc=description, disable=not progress)
    batches = iter(loader)
    while step < total_steps:
        start = time.perf_counter()
        loss_sum = 0.0
        for _ in range(accumulation):
            try:
                batch = next(batches)
            except StopIteration:
                batches = iter(loader)
                batch = next(batches)
            batch = {key: value.to(device) for key, value in batch.items()}
            # Each micro-batch's mean token loss weighs 1 / accumulation.
            loss = model(**batch).loss / accumulation
            loss.backward()
            loss_sum += loss.item()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        seconds = time.perf_counter() - start
        writer.write(dict(kind="train", step=step, loss=loss_sum, lr=scheduler.get_last_lr()[0], seconds=seconds))
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum:.4f}")
    bar.close()


def _evaluate(
    model: Any,
    tokenizer: Any,
    dataset: str,
    settings: CausalLMSettings,
    heldout_examples: list[dict[str, str]],
    data_dir: Path | None,
    device: torch.device,
    progress: bool,
) -> dict[str, float]:
    if settings.gradient_checkpointing:
        disable = getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable
        disable()
    model.config.use_cache = True
    metrics: dict[str, float] = {}
    if heldout_examples:
        features = encode_instruct(heldout_examples, tokenizer, settings.max_length[dataset])
        loader = DataLoader(
            features, batch_size=settings.eval_batch_size, collate_fn=InstructCollator(tokenizer.pad_token_id)
        )
        metrics["heldout_loss"] = heldout_loss(model, loader, device)
        metrics["heldout_examples"] = len(features)
    if dataset == "math" and settings.gsm8k_test_examples > 0:
        from mlorc_lab.train.evaluate_math import gsm8k_accuracy

        tests = load_gsm8k("test", data_dir, settings.gsm8k_test_examples)
        # The loader already wraps each question in the training prompt template,
        # so the evaluator receives the prompt unchanged.
        rows = [{"question": example["prompt"], "answer": example["response"]} for example in tests]
        result = gsm8k_accuracy(
            model,
            tokenizer,
            rows,
            max_new_tokens=settings.max_new_tokens,
            batch_size=settings.eval_batch_size,
            format_prompt=_unchanged,
            show_progress=progress,
        )
        metrics["gsm8k_accuracy"] = result["accuracy"]
        metrics["gsm8k_examples"] = result["n_examples"]
    if dataset == "code" and settings.humaneval_problems > 0:
        from mlorc_lab.train.evaluate_code import generate_completions, load_humaneval, pass_at_1

        problems = load_humaneval(data_dir, settings.humaneval_problems)
        completions = generate_completions(
            model,
            tokenizer,
            problems,
            max_new_tokens=settings.max_new_tokens,
            batch_size=settings.eval_batch_size,
            show_progress=progress,
        )
        result = pass_at_1(problems, completions, show_progress=progress)
        metrics["humaneval_pass_at_1"] = result["pass_at_1"]
        metrics["humaneval_problems"] = result["n_problems"]
    return metrics


def _unchanged(prompt: str) -> str:
    return prompt

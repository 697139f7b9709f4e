"""Peak memory and time per step of one method, measured in a process of its own.

Peak memory is a process-wide high-water mark, so each method must run in a fresh
process: :func:`measure_costs` starts ``python -m mlorc_lab.train.cost`` once per
method and collects the JSON each writes.

On a GPU the peak is ``torch.cuda.max_memory_allocated``: tensors only, counted from
a reset right after loading, so it is the training peak including the weights. On the
CPU it is the peak resident set size (:func:`mlorc_lab.memory.peak_rss_bytes`). That includes the
Python interpreter and its libraries, so compare differences between methods rather
than totals.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mlorc_lab.data import InstructCollator, encode_instruct
from mlorc_lab.memory import peak_rss_bytes
from mlorc_lab.methods import MethodOptions, build_method
from mlorc_lab.profiles import CostSettings, get_profile

__all__ = ["PER_LAYER_SUFFIX", "measure_cost", "measure_costs", "optimizer_state_bytes"]

logger = logging.getLogger(__name__)

# A method name ending in this suffix runs the MLorc method in per-layer mode.
PER_LAYER_SUFFIX = "-per-layer"


def optimizer_state_bytes(optimizer: Any) -> int:
    """Return the bytes of the tensors an optimizer keeps in its state.

    MLorc optimizers report their moments through ``state_bytes()`` (factors and
    dense moments, without step counters and generator states). For any other
    optimizer every tensor in ``optimizer.state`` counts, plus the projection
    matrix GaLore keeps inside its ``GaLoreProjector`` objects.
    """
    if hasattr(optimizer, "state_bytes"):
        return sum(entry["compressed"] + entry["dense"] for entry in optimizer.state_bytes().values())
    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            total += _tensor_bytes(value)
            projection = getattr(value, "ortho_matrix", None)
            if projection is not None:
                total += _tensor_bytes(projection)
    return total


def _tensor_bytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(item) for item in value)
    return 0


def measure_cost(method: str, settings: CostSettings, data_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Train ``settings.steps`` steps of ``method`` on one fixed batch and measure the cost.

    Call this in a fresh process (see :func:`measure_costs`): the memory peak covers
    everything the process did before.

    Returns
    -------
    dict
        ``method``, ``device``, ``seconds_per_step`` (median over the steps after the
        first, which allocates the optimizer state), ``first_step_seconds``,
        ``peak_memory_bytes``, ``memory_kind`` ("cuda_allocated" or "cpu_rss"),
        ``loaded_memory_bytes`` (the same measure right after loading the model),
        ``optimizer_state_bytes``, ``trainable_parameters`` and ``final_loss``.
    """
    from mlorc_lab.train.causal_lm import load_instruction_data, load_training_model, resolve_device

    if settings.steps < 2:
        raise ValueError(f"steps must be at least 2 (the first step is not timed), got {settings.steps}")
    per_layer = method.endswith(PER_LAYER_SUFFIX)
    base_method = method.removesuffix(PER_LAYER_SUFFIX)
    device = resolve_device(settings.device)

    # Four candidates per row, because examples whose prompt fills max_length are dropped.
    examples = load_instruction_data(settings.dataset, data_dir, 4 * settings.batch_size)
    model, tokenizer = load_training_model(
        settings.model, settings.dtype, settings.seed, device, settings.gradient_checkpointing
    )
    features = encode_instruct(examples, tokenizer, settings.max_length)[: settings.batch_size]
    if len(features) < settings.batch_size:
        raise ValueError(
            f"Only {len(features)} of {len(examples)} examples fit max_length={settings.max_length}; "
            f"raise max_length to fill a batch of {settings.batch_size}"
        )
    batch = InstructCollator(tokenizer.pad_token_id)(features)
    batch = {key: value.to(device) for key, value in batch.items()}

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        loaded = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        loaded = peak_rss_bytes()

    options = MethodOptions(learning_rate=settings.learning_rate, rank=settings.rank, seed=settings.seed)
    model, optimizer = build_method(base_method, model, options)
    updater = None
    if per_layer:
        from mlorc_lab.optim import PerLayerUpdater

        updater = PerLayerUpdater(optimizer, model)
    model.train()
    durations, loss = [], None
    for _ in range(settings.steps):
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        durations.append(time.perf_counter() - start)

    if updater is not None:
        updater.remove()
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device), "cuda_allocated"
    else:
        peak, kind = peak_rss_bytes(), "cpu_rss"
    return dict(
        method=method,
        device=str(device),
        seconds_per_step=statistics.median(durations[1:]),
        first_step_seconds=durations[0],
        peak_memory_bytes=peak,
        memory_kind=kind,
        loaded_memory_bytes=loaded,
        optimizer_state_bytes=optimizer_state_bytes(optimizer),
        trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        final_loss=float(loss.item()),
    )


def measure_costs(
    profile: str,
    output_dir: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    methods: Sequence[str] | None = None,
    timeout_s: float = 1800.0,
) -> list[dict[str, Any]]:
    """Measure each method of ``profile``'s cost settings in a subprocess of its own.

    Each result is written to ``output_dir/cost-<method>.json`` and returned in order.
    A failing subprocess raises ``RuntimeError`` with the end of its output.
    """
    settings = get_profile(profile).cost
    methods = list(methods or settings.methods)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    results = []
    for method in methods:
        target = output / f"cost-{method}.json"
        command = [sys.executable, "-m", "mlorc_lab.train.cost", "--profile", profile, "--method", method]
        command += ["--output", str(target)]
        if data_dir is not None:
            command += ["--data-dir", str(data_dir)]
        logger.info("Measuring %s in a subprocess", method)
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        if completed.returncode != 0:
            raise RuntimeError(
                f"Cost measurement of {method!r} failed with exit code {completed.returncode}:\n"
                f"{completed.stderr[-3000:]}"
            )
        results.append(json.loads(target.read_text(encoding="utf-8")))
    return results


def main(argv: Sequence[str] | None = None) -> None:
    """Measure one method and write its JSON; the entry point of :func:`measure_costs`."""
    parser = argparse.ArgumentParser(description="Measure peak memory and time per step of one method.")
    parser.add_argument("--profile", required=True, help="smoke, cpu or paper: the cost settings to use")
    parser.add_argument("--method", required=True, help="registry method, or an MLorc method + '-per-layer'")
    parser.add_argument("--output", required=True, help="JSON file to write")
    parser.add_argument("--data-dir", default=None, help="local data folder (default: MLORC_LAB_DATA_DIR)")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = measure_cost(arguments.method, get_profile(arguments.profile).cost, arguments.data_dir)
    Path(arguments.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

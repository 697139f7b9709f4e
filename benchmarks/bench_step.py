"""Time one optimizer step of MLorc against AdamW, GaLore and Lion on single matrices.

For each matrix shape, every optimizer gets its own copy of one random weight and the
same fixed gradient, is warmed up, and is then stepped in turn, one step each per
round, so that load from other processes falls on every optimizer alike. The table
reports the median step time of each and its ratio to ``torch.optim.AdamW(foreach=True)``
and to dense Lion measured in the same rounds.

Memory: on CUDA the peak of ``torch.cuda.max_memory_allocated`` over one step, minus
what was allocated before it. On CPU, where torch allocations are invisible to
tracemalloc, ``--memory`` starts a fresh Python process per case and reports the growth
of its peak resident set size (``VmHWM`` on Linux) over a few steps: optimizer state plus
the largest transient of a step, rounded to pages, and only trustworthy to a few MiB.
The analytic state size is printed for every case.

Run ``python benchmarks/bench_step.py --help`` or ``mlorc-lab bench --help``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

# Matrix shapes (out_features, in_features) of the models the benchmark is about.
SHAPE_SETS = {
    # The shapes of the performance targets: an MLP projection of a 1B-scale model and
    # of a 7B-scale model at half width.
    "targets": [(1024, 2752), (2048, 5504)],
    # all-MiniLM-L6-v2: attention, MLP up and down, word embeddings.
    "minilm": [(384, 384), (1536, 384), (384, 1536), (30522, 384)],
    # SmolLM2-135M: attention q/o, k/v (3 key-value heads of 64), MLP, embeddings.
    "smollm2": [(576, 576), (192, 576), (1536, 576), (576, 1536), (49152, 576)],
    # LLaMA-7B attention and MLP; 128 MiB or more per fp32 copy, so GPU only.
    "llama7b": [(4096, 4096), (4096, 11008)],
}
GPU_ONLY_SETS = {"llama7b"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
RANK_FREE_CASES = ("adamw-foreach", "adamw-fused", "lion")
RANKED_CASES = (
    "mlorc-adamw",
    "mlorc-adamw-compiled",
    "mlorc-adamw-reference",
    "mlorc-lion",
    "mlorc-lion-compiled",
    "mlorc-lion-reference",
    "galore-steady",
    "galore-refresh",
)
ALL_CASES = RANK_FREE_CASES + RANKED_CASES
# A GaLore projection gap no benchmark reaches, so that only the first step refreshes.
_NEVER = 10**9


@dataclass
class Case:
    """One optimizer on one weight, ready to step."""

    name: str
    rank: int | None
    param: torch.nn.Parameter
    optimizer: torch.optim.Optimizer
    state_bytes: int


def build_optimizer(name: str, param: torch.nn.Parameter, rank: int | None) -> torch.optim.Optimizer:
    """Return the optimizer of case ``name`` for ``param`` (rank only for ranked cases)."""
    from mlorc_lab.optim import MLorcAdamW, MLorcLion

    if name == "adamw-foreach":
        return torch.optim.AdamW([param], lr=1e-3, foreach=True)
    if name == "adamw-fused":
        return torch.optim.AdamW([param], lr=1e-3, fused=True)
    if name == "lion":
        from lion_pytorch import Lion

        return Lion([param], lr=1e-4)
    if name.startswith("mlorc-adamw"):
        return MLorcAdamW([param], lr=1e-3, rank=rank, compress=True, implementation=_implementation(name))
    if name.startswith("mlorc-lion"):
        return MLorcLion([param], lr=1e-4, rank=rank, compress=True, implementation=_implementation(name))
    if name in ("galore-steady", "galore-refresh"):
        from galore_torch import GaLoreAdamW

        # update_proj_gap=1 recomputes the projector (a full SVD of the gradient) on
        # every step; the steady case never does after its first step.
        gap = 1 if name == "galore-refresh" else _NEVER
        return GaLoreAdamW(
            [dict(params=[param], rank=rank, update_proj_gap=gap, scale=0.25, proj_type="std")], lr=1e-3
        )
    raise ValueError(f"Unknown case {name!r}; use one of {ALL_CASES}")


def _implementation(name: str) -> str:
    """Return the MLorc implementation a case name ends with ("fast" when none)."""
    suffix = name.rsplit("-", 1)[1]
    return suffix if suffix in ("reference", "compiled") else "fast"


def analytic_state_bytes(name: str, shape: tuple[int, int], rank: int | None, element_size: int) -> int:
    """Return the bytes of optimizer state that case ``name`` keeps for one matrix.

    MLorc keeps fp32 factors whatever the weight dtype; AdamW, Lion and GaLore keep
    state in the weight's dtype. GaLore projects an (m, n) matrix on its smaller side,
    keeping two (r, n) or (m, r) moments and the (m, r) or (r, n) projector.
    """
    m, n = shape
    if name.startswith("adamw"):
        return 2 * m * n * element_size
    if name == "lion":
        return m * n * element_size
    if name.startswith("mlorc"):
        moments = 2 if name.startswith("mlorc-adamw") else 1
        return moments * rank * (m + n + 1) * 4
    if name.startswith("galore"):
        small, large = sorted((m, n))
        return (2 * rank * large + rank * small) * element_size
    raise ValueError(f"Unknown case {name!r}")


def _supported(name: str, device: torch.device, dtype: torch.dtype) -> str | None:
    """Return why case ``name`` cannot run on ``device`` in ``dtype``, or None."""
    if name == "adamw-fused":
        probe = torch.nn.Parameter(torch.zeros(2, 2, device=device, dtype=dtype))
        probe.grad = torch.zeros_like(probe)
        try:
            torch.optim.AdamW([probe], fused=True).step()
        except RuntimeError as error:
            return f"fused AdamW is not available here ({error})"
    if name.startswith("galore") and dtype != torch.float32:
        return "galore-torch's projector runs torch.linalg.svd, which has no half-precision kernel"
    return None


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_step(case: Case, device: torch.device) -> float:
    """Step ``case`` once and return the seconds it took (CUDA events on a GPU)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        case.optimizer.step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    begin = time.perf_counter()
    case.optimizer.step()
    return time.perf_counter() - begin


def _cuda_step_memory(case: Case, device: torch.device) -> int:
    """Return the peak bytes one step allocates above what exists before it (CUDA)."""
    _synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    case.optimizer.step()
    _synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def bench_shape(
    shape: tuple[int, int],
    cases: list[str],
    ranks: list[int],
    *,
    device: torch.device,
    dtype: torch.dtype,
    repeats: int,
    warmup: int,
    seed: int,
) -> list[dict]:
    """Time every case on one shape, interleaved, and return one row per case."""
    generator = torch.Generator().manual_seed(seed)
    initial = torch.randn(shape, generator=generator).to(device=device, dtype=dtype)
    # One gradient shared by every case: none of the optimizers writes to it.
    gradient = (torch.randn(shape, generator=generator) * 1e-2).to(device=device, dtype=dtype)
    element_size = initial.element_size()

    built: list[Case] = []
    rows: list[dict] = []
    for name in cases:
        for rank in ([None] if name in RANK_FREE_CASES else ranks):
            row = dict(shape=f"{shape[0]}x{shape[1]}", case=name, rank=rank)
            reason = _supported(name, device, dtype)
            if reason is not None:
                logger.info("Skipping %s: %s", name, reason)
                rows.append(dict(row, skipped=reason))
                continue
            param = torch.nn.Parameter(initial.clone())
            param.grad = gradient
            optimizer = build_optimizer(name, param, rank)
            state = analytic_state_bytes(name, shape, rank, element_size)
            built.append(Case(name, rank, param, optimizer, state))
            rows.append(row)

    for case in built:
        for _ in range(warmup):
            case.optimizer.step()
    _synchronize(device)
    times: dict[int, list[float]] = {id(case): [] for case in built}
    for round_index in range(repeats):
        for case in built:
            # The refresh step is a full SVD, tens to thousands of times an AdamW
            # step; a few samples are enough for its median.
            if case.name == "galore-refresh" and round_index >= max(3, repeats // 4):
                continue
            times[id(case)].append(_timed_step(case, device))

    by_key = {(case.name, case.rank): case for case in built}
    for row in rows:
        case = by_key.get((row["case"], row["rank"]))
        if case is None:
            continue
        row["ms"] = statistics.median(times[id(case)]) * 1e3
        row["samples"] = len(times[id(case)])
        row["state_bytes"] = case.state_bytes
        workspace = getattr(case.optimizer, "workspace_bytes", None)
        row["workspace_bytes"] = workspace() if workspace is not None else 0
        if device.type == "cuda":
            row["step_peak_bytes"] = _cuda_step_memory(case, device)
    del built, by_key
    return rows


def _rss_probe(shape: tuple[int, int], name: str, rank: int | None, dtype: str, steps: int = 3) -> int:
    """Return the growth in bytes of the peak resident set size over ``steps`` steps.

    Runs in a fresh process so that no other case's memory is counted. The weight and
    its gradient exist before the first reading, so the growth is state plus the
    largest transient of a step.
    """
    code = (
        "import json, sys, torch\n"
        "from mlorc_lab.memory import peak_rss_bytes\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import bench_step\n"
        "shape, name, rank, dtype = json.loads(sys.argv[2])\n"
        "param = torch.nn.Parameter(torch.randn(shape).to(bench_step.DTYPES[dtype]))\n"
        "param.grad = torch.randn(shape).to(bench_step.DTYPES[dtype]) * 1e-2\n"
        "probe = torch.nn.Parameter(torch.zeros(8, 8)); probe.grad = torch.ones(8, 8)\n"
        "bench_step.build_optimizer(name, probe, min(rank or 4, 8)).step()\n"
        "before = peak_rss_bytes()\n"
        "optimizer = bench_step.build_optimizer(name, param, rank)\n"
        f"for _ in range({steps}): optimizer.step()\n"
        "after = peak_rss_bytes()\n"
        "print(after - before)\n"
    )
    from pathlib import Path

    argument = json.dumps([list(shape), name, rank, dtype])
    result = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).resolve().parent), argument],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(result.stdout.strip().splitlines()[-1])


def _format_bytes(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value / 2**20:.1f}"


def format_table(rows: list[dict]) -> str:
    """Return the rows as a plain-text table with ratios to AdamW and Lion per shape."""
    header = (
        f"{'shape':>11} {'case':<22} {'r':>2} {'ms':>9} {'xAdamW':>7} {'xLion':>6} "
        f"{'state MiB':>9} {'wksp MiB':>8} {'peak MiB':>8}"
    )
    lines = [header, "-" * len(header)]
    for shape in dict.fromkeys(row["shape"] for row in rows):
        group = [row for row in rows if row["shape"] == shape]
        baseline = {row["case"]: row.get("ms") for row in group if row["rank"] is None}
        for row in group:
            rank = "" if row["rank"] is None else str(row["rank"])
            if "skipped" in row:
                lines.append(f"{shape:>11} {row['case']:<22} {rank:>2} skipped: {row['skipped']}")
                continue
            adamw = baseline.get("adamw-foreach")
            lion = baseline.get("lion")
            peak = row.get("step_peak_bytes", row.get("rss_growth_bytes"))
            lines.append(
                f"{shape:>11} {row['case']:<22} {rank:>2} {row['ms']:9.2f} "
                f"{row['ms'] / adamw if adamw else math.nan:7.2f} {row['ms'] / lion if lion else math.nan:6.2f} "
                f"{_format_bytes(row['state_bytes']):>9} {_format_bytes(row['workspace_bytes']):>8} "
                f"{_format_bytes(peak):>8}"
            )
    return "\n".join(lines)


def environment() -> dict:
    """Return the hardware, versions and load the numbers depend on."""
    info = dict(
        python=platform.python_version(),
        torch=torch.__version__,
        machine=platform.machine(),
        processor=platform.processor() or "unknown",
        threads=torch.get_num_threads(),
        blas=torch.backends.mkl.is_available() and "MKL" or "other",
    )
    try:
        import os

        info["load_average"] = tuple(round(x, 2) for x in os.getloadavg())
        info["cpu_count"] = os.cpu_count()
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """Return the argument parser shared by this script and ``mlorc-lab bench``."""
    parser = argparse.ArgumentParser(prog=prog, description="Time one optimizer step of MLorc against AdamW, GaLore and Lion.")
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's options to ``parser``."""
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="weight and gradient dtype")
    parser.add_argument(
        "--shapes",
        default="targets,minilm,smollm2,llama7b",
        help=f"comma-separated shape sets ({', '.join(SHAPE_SETS)}) or MxN shapes (default: all sets)",
    )
    parser.add_argument("--ranks", default="4,8", help="comma-separated ranks (default: 4,8)")
    parser.add_argument("--cases", default=",".join(ALL_CASES), help="comma-separated cases (default: all)")
    parser.add_argument("--repeats", type=int, default=21, help="timed steps per case (default: 21)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per case first (default: 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU (default: torch's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and gradients (default: 0)")
    parser.add_argument(
        "--memory", action="store_true", help="on CPU, also measure peak RSS growth in a fresh process per case"
    )
    parser.add_argument("--quick", action="store_true", help="target shapes, rank 4, 7 repeats")
    parser.add_argument("--json", default=None, help="also write the rows and environment to this JSON file")


def parse_shapes(text: str, device: torch.device) -> list[tuple[int, int]]:
    """Return the shapes named by ``text``; GPU-only sets are skipped on CPU with a log line."""
    shapes: list[tuple[int, int]] = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        if item in SHAPE_SETS:
            if item in GPU_ONLY_SETS and device.type != "cuda":
                logger.warning(
                    "Skipping shape set %s %s on %s: one fp32 copy is 64 to 172 MiB and a run takes "
                    "minutes per shape there; run it with --device cuda",
                    item,
                    SHAPE_SETS[item],
                    device,
                )
                continue
            shapes.extend(SHAPE_SETS[item])
            continue
        try:
            rows, cols = (int(side) for side in item.lower().split("x"))
        except ValueError:
            raise ValueError(f"Invalid shape {item!r}; use MxN such as 1024x2752 or one of {list(SHAPE_SETS)}") from None
        shapes.append((rows, cols))
    return list(dict.fromkeys(shapes))


def run(args: argparse.Namespace, report: Callable[[str], None] = print) -> list[dict]:
    """Run the benchmark described by parsed ``args``, report the table and return the rows."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("Invalid --device cuda: no CUDA device is available; use --device cpu")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    if args.quick:
        args.shapes, args.ranks, args.repeats = "targets", "4", min(args.repeats, 7)
    ranks = [int(rank) for rank in args.ranks.split(",")]
    cases = [case.strip() for case in args.cases.split(",") if case.strip()]
    unknown = [case for case in cases if case not in ALL_CASES]
    if unknown:
        raise ValueError(f"Unknown cases {unknown}; use some of {list(ALL_CASES)}")
    shapes = parse_shapes(args.shapes, device)

    rows: list[dict] = []
    for shape in shapes:
        logger.info("Timing %dx%d", *shape)
        shape_rows = bench_shape(
            shape,
            cases,
            ranks,
            device=device,
            dtype=dtype,
            repeats=args.repeats,
            warmup=args.warmup,
            seed=args.seed,
        )
        if args.memory and device.type == "cpu":
            for row in shape_rows:
                if "skipped" not in row:
                    row["rss_growth_bytes"] = _rss_probe(shape, row["case"], row["rank"], args.dtype)
        rows.extend(shape_rows)

    info = environment()
    report(f"environment: {json.dumps(info)}")
    report(f"dtype {args.dtype}, device {device}, seed {args.seed}, repeats {args.repeats}, warmup {args.warmup}")
    report(format_table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(dict(environment=info, arguments=vars(args), rows=rows), handle, indent=1)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run from the command line; return the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())

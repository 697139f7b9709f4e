"""The ``mlorc-lab`` command line: training runs, figures and benchmarks."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

__all__ = ["build_parser", "main"]

logger = logging.getLogger("mlorc_lab")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile", default="cpu", help="settings profile: smoke, cpu or paper (default: cpu)"
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder laid out like glue/<TASK>/train.tsv; default: $MLORC_LAB_DATA_DIR, else the Hugging Face hub",
    )
    parser.add_argument(
        "--output-dir", default="runs", help="parent folder of run folders; runs go to OUTPUT_DIR/<profile> (default: runs)"
    )


def _train_glue(args: argparse.Namespace) -> int:
    from mlorc_lab.profiles import get_profile
    from mlorc_lab.train.encoder import run_glue

    settings = get_profile(args.profile).glue_spectra
    if args.model is not None:
        settings = settings.replace(model=args.model)
    if args.max_steps is not None:
        settings = settings.replace(max_steps=args.max_steps)
    run_dir = run_glue(
        args.task,
        args.method,
        settings,
        Path(args.output_dir) / args.profile,
        data_dir=args.data_dir,
        record_spectra=not args.no_spectra,
        reuse=not args.force,
    )
    logger.info("Run folder: %s", run_dir)
    return 0


def _figures(args: argparse.Namespace) -> int:
    from mlorc_lab.notebooks import NOTEBOOKS, run_notebooks, select_notebooks

    names = select_notebooks(args.only)
    executed = run_notebooks(
        names,
        profile=args.profile,
        output_dir=Path(args.output_dir) / args.profile,
        figures_dir=args.figures_dir,
        data_dir=args.data_dir,
        notebooks_dir=args.notebooks_dir,
    )
    for name, notebook in zip(names, executed):
        outputs = ", ".join(str(Path(args.figures_dir) / output) for output in NOTEBOOKS[name].outputs)
        logger.info("%s: %s (executed notebook %s)", name, outputs, notebook)
    return 0


def _load_bench_step():
    """Import ``benchmarks/bench_step.py`` from the repository this package runs from."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_step.py"
    if not path.is_file():
        raise FileNotFoundError(
            f"Benchmark script not found at {path}; run mlorc-lab from a source checkout "
            "(pip install -e .), where benchmarks/ sits beside mlorc_lab/"
        )
    spec = importlib.util.spec_from_file_location("bench_step", path)
    module = importlib.util.module_from_spec(spec)
    # dataclasses look the module up in sys.modules while the class is created.
    sys.modules["bench_step"] = module
    spec.loader.exec_module(module)
    return module


def _bench(args: argparse.Namespace) -> int:
    # The script parses its own options, so that importing torch waits until needed.
    bench_step = _load_bench_step()
    # The table is the command's output, so it goes to stdout rather than the log.
    bench_step.run(bench_step.build_parser(prog="mlorc-lab bench").parse_args(args.bench_args), report=print)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``mlorc-lab`` command."""
    from mlorc_lab.methods import METHODS
    from mlorc_lab.notebooks import NOTEBOOKS

    parser = argparse.ArgumentParser(prog="mlorc-lab", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="run one training run")
    train_kinds = train.add_subparsers(dest="kind", required=True)
    glue = train_kinds.add_parser("glue", help="fine-tune an encoder on a GLUE task, recording spectra")
    _add_common(glue)
    glue.add_argument("--task", required=True, help="cola, mrpc, rte or stsb")
    glue.add_argument(
        "--method", default="full-adamw", help=f"one of {', '.join(sorted(METHODS))} (default: full-adamw)"
    )
    glue.add_argument("--model", default=None, help="override the profile's model: hub id, local folder or short name")
    glue.add_argument("--max-steps", type=int, default=None, help="override the profile's cap on optimizer steps")
    glue.add_argument("--no-spectra", action="store_true", help="do not record gradient and moment spectra")
    glue.add_argument("--force", action="store_true", help="train again even if a completed run exists")
    glue.set_defaults(handler=_train_glue)

    figures = commands.add_parser("figures", help="regenerate figures and tables by running the notebooks")
    _add_common(figures)
    figures.add_argument(
        "--only", default="all", help=f"comma-separated names among {', '.join(NOTEBOOKS)} (default: all)"
    )
    figures.add_argument("--figures-dir", default="figures", help="where figures and tables are written (default: figures)")
    figures.add_argument("--notebooks-dir", default="notebooks", help="folder of the source notebooks (default: notebooks)")
    figures.set_defaults(handler=_figures)

    bench = commands.add_parser(
        "bench",
        help="time one optimizer step of MLorc against AdamW, GaLore and Lion (mlorc-lab bench --help)",
        add_help=False,
    )
    # Its options, parsed by benchmarks/bench_step.py, reach main() as unknown arguments.
    bench.set_defaults(handler=_bench, bench_args=[])
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command == "bench":
        args.bench_args = unknown
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.handler(args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        logger.error("%s", error)
        return 2


if __name__ == "__main__":
    sys.exit(main())

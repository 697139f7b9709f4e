"""The ``mlorc-lab`` command line: training runs, figures and benchmarks."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

__all__ = ["build_parser", "main"]

logger = logging.getLogger("mlorc_lab")

# Third-party loggers whose warnings do not concern any run of this command.
_QUIET_LOGGERS = ("bitsandbytes", "kernels")


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


def _add_run_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="override the profile's model: hub id, local folder or short name")
    parser.add_argument("--max-steps", type=int, default=None, help="override the profile's cap on optimizer steps")
    parser.add_argument("--force", action="store_true", help="train again even if a completed run exists")


def _with_overrides(settings, args: argparse.Namespace):
    """Return ``settings`` with the ``--model`` and ``--max-steps`` given on the command line."""
    if args.model is not None:
        settings = settings.replace(model=args.model)
    if args.max_steps is not None:
        settings = settings.replace(max_steps=args.max_steps)
    return settings


def _train_glue(args: argparse.Namespace) -> int:
    from mlorc_lab.profiles import get_profile
    from mlorc_lab.train.encoder import run_glue

    run_dir = run_glue(
        args.task,
        args.method,
        _with_overrides(get_profile(args.profile).glue_spectra, args),
        Path(args.output_dir) / args.profile,
        data_dir=args.data_dir,
        record_spectra=not args.no_spectra,
        reuse=not args.force,
    )
    logger.info("Run folder: %s", run_dir)
    return 0


def _train_comparison(args: argparse.Namespace) -> int:
    from mlorc_lab.profiles import get_profile
    from mlorc_lab.train.causal_lm import run_causal_lm
    from mlorc_lab.train.glue_comparison import run_glue_comparison

    profile = get_profile(args.profile)
    # The folders the Figure 2 and 3 and Table 4 notebooks read, so that they reuse the run.
    if args.kind == "causal-lm":
        run, subject, settings, folder = run_causal_lm, args.dataset, profile.causal_lm, "causal_lm"
    else:
        run, subject, settings, folder = run_glue_comparison, args.task, profile.glue_comparison, "glue_comparison"
    run_dir = run(
        subject,
        args.method,
        _with_overrides(settings, args),
        Path(args.output_dir) / args.profile / folder,
        data_dir=args.data_dir,
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
    _add_run_overrides(glue)
    glue.add_argument("--no-spectra", action="store_true", help="do not record gradient and moment spectra")
    glue.set_defaults(handler=_train_glue)

    causal = train_kinds.add_parser(
        "causal-lm", help="fine-tune the causal LM on math or code with one method (a run of Figures 2 and 3)"
    )
    _add_common(causal)
    causal.add_argument("--dataset", required=True, help="math or code")
    causal.add_argument("--method", required=True, help=f"one of {', '.join(sorted(METHODS))}")
    _add_run_overrides(causal)
    causal.set_defaults(handler=_train_comparison)

    table = train_kinds.add_parser(
        "glue-table", help="fine-tune the encoder on a GLUE task with one method (a cell of Table 4)"
    )
    _add_common(table)
    table.add_argument("--task", required=True, help="cola, mrpc, rte or stsb")
    table.add_argument("--method", required=True, help="full-adamw, mlorc-adamw, lora or galore")
    _add_run_overrides(table)
    table.set_defaults(handler=_train_comparison)

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
    if not args.verbose:
        # peft and galore-torch import bitsandbytes, which warns on every import that
        # its optional CPU kernels cannot be fetched offline; no method here uses them.
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        return args.handler(args)
    except (ValueError, TypeError, OSError) as error:
        # OSError covers missing files and an unreachable hub, whose messages name the fix.
        logger.error("%s", error)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""HumanEval pass@1: load problems, generate completions, run them against the tests.

Execution happens in :mod:`mlorc_lab.train.sandbox`, one limited child process per
completion. Its ``ExecutionResult``, ``build_program`` and ``run_completion`` are
exported here too.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from mlorc_lab.train.generation import greedy_generate, truncate_at_stop_sequences
from mlorc_lab.train.sandbox import ExecutionResult, build_program, run_completion

logger = logging.getLogger(__name__)

__all__ = [
    "DATA_DIR_ENV",
    "HUMANEVAL_FIELDS",
    "HUMANEVAL_STOP_SEQUENCES",
    "ExecutionResult",
    "build_program",
    "generate_completions",
    "load_humaneval",
    "pass_at_1",
    "run_completion",
    "truncate_completion",
]

DATA_DIR_ENV = "MLORC_LAB_DATA_DIR"
HUMANEVAL_FILE = Path("humaneval") / "HumanEval.jsonl.gz"
HUMANEVAL_HUB_ID = "openai/openai_humaneval"
HUMANEVAL_FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")

# A HumanEval prompt ends inside the body of the function to complete, so the
# completion is over as soon as the model starts new top-level code: another
# function or class, a main guard, a top-level print or a top-level comment.
# Every string starts with "\n" and has no indentation, so lines inside the body
# (indented) never match.
HUMANEVAL_STOP_SEQUENCES = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")


def _resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    if data_dir is not None:
        return Path(data_dir)
    from_env = os.environ.get(DATA_DIR_ENV)
    if from_env:
        return Path(from_env)
    return None


def _validate_problem(problem: object, where: str) -> dict:
    if not isinstance(problem, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(problem).__name__}")
    for field in HUMANEVAL_FIELDS:
        if field not in problem:
            raise ValueError(f"{where}: missing field {field!r}; a HumanEval problem needs {HUMANEVAL_FIELDS}")
        if not isinstance(problem[field], str):
            raise ValueError(
                f"{where}: field {field!r} must be a string, got {type(problem[field]).__name__}"
            )
    return {field: problem[field] for field in HUMANEVAL_FIELDS}


def _read_humaneval_file(path: Path, max_problems: int | None) -> list[dict]:
    problems: list[dict] = []
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            if max_problems is not None and len(problems) == max_problems:
                break
            if not line.strip():
                continue
            where = f"{path}, line {line_number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from exc
            problems.append(_validate_problem(record, where))
    return problems


def load_humaneval(data_dir: str | os.PathLike | None = None, max_problems: int | None = None) -> list[dict]:
    """Load the HumanEval problems.

    Parameters
    ----------
    data_dir : path-like, optional
        Folder that contains ``humaneval/HumanEval.jsonl.gz`` (gzipped JSON lines,
        as published in the openai/human-eval repository). If omitted, the
        environment variable ``MLORC_LAB_DATA_DIR`` is used. If neither is set,
        the test split of the hub data set ``openai/openai_humaneval`` is loaded
        with :func:`datasets.load_dataset`.
    max_problems : int, optional
        Keep only the first ``max_problems`` problems.

    Returns
    -------
    list of dict
        One dict per problem with the string fields ``task_id``, ``prompt``,
        ``canonical_solution``, ``test`` and ``entry_point``, in file order.

    Raises
    ------
    FileNotFoundError
        If the data folder has no ``humaneval/HumanEval.jsonl.gz``.
    ValueError
        If a line is not valid JSON or a problem lacks a field; the message names
        the file and line number.
    """
    if max_problems is not None and (not isinstance(max_problems, int) or max_problems < 1):
        raise ValueError(f"max_problems must be a positive integer or None, got {max_problems!r}")

    root = _resolve_data_dir(data_dir)
    if root is not None:
        path = root / HUMANEVAL_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"HumanEval file not found: {path}; pass data_dir or set {DATA_DIR_ENV} to the folder "
                f"that contains {HUMANEVAL_FILE}"
            )
        problems = _read_humaneval_file(path, max_problems)
        logger.info("loaded %d HumanEval problems from %s", len(problems), path)
        return problems

    # NOTE: this hub path is not exercised by the tests, which run offline.
    from datasets import load_dataset

    dataset = load_dataset(HUMANEVAL_HUB_ID, split="test")
    problems = []
    for index, row in enumerate(dataset):
        if max_problems is not None and len(problems) == max_problems:
            break
        problems.append(_validate_problem(dict(row), f"{HUMANEVAL_HUB_ID} test row {index}"))
    logger.info("loaded %d HumanEval problems from the hub data set %s", len(problems), HUMANEVAL_HUB_ID)
    return problems



def truncate_completion(text: str, stop_sequences: Sequence[str] = HUMANEVAL_STOP_SEQUENCES) -> str:
    """Cut generated code at the first stop sequence.

    With the default :data:`HUMANEVAL_STOP_SEQUENCES` (``"\\ndef "``, ``"\\nclass "``,
    ``"\\nif __name__"``, ``"\\nprint("``, ``"\\n#"``), the completion ends where
    the model starts new top-level code after the function body.
    """
    return truncate_at_stop_sequences(text, stop_sequences)


def generate_completions(
    model,
    tokenizer,
    problems: Sequence[dict],
    max_new_tokens: int,
    *,
    batch_size: int = 1,
    stop_sequences: Sequence[str] = HUMANEVAL_STOP_SEQUENCES,
    show_progress: bool = True,
) -> list[str]:
    """Generate a greedy completion for each problem's prompt.

    Parameters
    ----------
    model, tokenizer
        A transformers causal LM and its tokenizer.
    problems : sequence of dict
        HumanEval problems as returned by :func:`load_humaneval`.
    max_new_tokens : int
        Maximum number of generated tokens per problem. Generation stops earlier
        only at the EOS token, and the stop sequences are applied afterwards.
    batch_size : int, default 1
        Prompts per ``generate`` call (left-padded).
    stop_sequences : sequence of str, default HUMANEVAL_STOP_SEQUENCES
        Each completion is cut at the first of these, see :func:`truncate_completion`.
    show_progress : bool, default True
        Show a tqdm progress bar.

    Returns
    -------
    list of str
        One completion per problem, to be appended to its prompt.
    """
    prompts = [_validate_problem(problem, f"problem {index}")["prompt"] for index, problem in enumerate(problems)]
    generated = greedy_generate(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        show_progress=show_progress,
    )
    return [truncate_completion(text, stop_sequences) for text in generated]


def pass_at_1(
    problems: Sequence[dict],
    completions: Sequence[str],
    timeout_s: float = 10.0,
    memory_limit_mb: int = 1024,
    *,
    show_progress: bool = True,
) -> dict:
    """Run one completion per problem and compute pass@1.

    With one greedy completion per problem, pass@1 is the fraction of problems
    whose completion passes all tests.

    Parameters
    ----------
    problems : sequence of dict
        HumanEval problems as returned by :func:`load_humaneval`.
    completions : sequence of str
        ``completions[i]`` continues ``problems[i]["prompt"]``.
    timeout_s, memory_limit_mb
        Limits per completion, see :func:`run_completion`.
    show_progress : bool, default True
        Show a tqdm progress bar.

    Returns
    -------
    dict
        ``pass_at_1`` (float in [0, 1]), ``n_passed``, ``n_problems`` and
        ``results``: one dict per problem with ``task_id``, ``passed``,
        ``status`` and ``detail``.
    """
    if isinstance(completions, str):
        raise TypeError("completions must be a sequence of strings, not a single string; wrap it in a list")
    if len(problems) != len(completions):
        raise ValueError(
            f"got {len(problems)} problems but {len(completions)} completions; pass one completion per problem"
        )
    if len(problems) == 0:
        raise ValueError("problems is empty; pass at least one HumanEval problem")

    results = []
    for problem, completion in tqdm(
        zip(problems, completions), total=len(problems), desc="HumanEval", disable=not show_progress
    ):
        outcome = run_completion(problem, completion, timeout_s=timeout_s, memory_limit_mb=memory_limit_mb)
        results.append(
            {
                "task_id": problem["task_id"],
                "passed": outcome.passed,
                "status": outcome.status,
                "detail": outcome.detail,
            }
        )
    n_passed = sum(result["passed"] for result in results)
    score = n_passed / len(results)
    logger.info("HumanEval pass@1 = %.4f (%d of %d)", score, n_passed, len(results))
    return {"pass_at_1": score, "n_passed": n_passed, "n_problems": len(results), "results": results}

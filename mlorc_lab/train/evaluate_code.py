"""HumanEval pass@1: load problems, generate completions, run them against the tests.

Each completion runs in a separate Python process with resource limits, a socket
guard and a wall-clock timeout. This keeps a hanging or greedy completion from
stalling or exhausting the evaluating process. It is not a security boundary; see
:func:`run_completion`.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from mlorc_lab.train.generation import greedy_generate, truncate_at_stop_sequences

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

# Output files of the child are capped so that a completion printing in a loop
# cannot fill the disk. Only the tail is kept in ExecutionResult.detail.
_MAX_OUTPUT_BYTES = 16 * 1024 * 1024
_DETAIL_CHARS = 2000

_STATUSES = ("passed", "failed", "timed_out", "error")

# Runs inside the child process (python -I runner.py program.py result.json ...).
# It sets the resource limits, disables socket creation, executes the program and
# writes its outcome as JSON. Exceptions raised by the program mean "failed";
# a program that does not compile means "error".
_RUNNER_SOURCE = '''\
import json
import resource
import socket
import sys
import traceback

program_path, result_path = sys.argv[1], sys.argv[2]
memory_bytes, cpu_seconds, output_bytes = (int(value) for value in sys.argv[3:6])

resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
resource.setrlimit(resource.RLIMIT_FSIZE, (output_bytes, output_bytes))

_NETWORK_MESSAGE = "network disabled in HumanEval sandbox"


class _DisabledSocket(socket.socket):
    # A subclass rather than a function, so that modules which subclass
    # socket.socket at import time (ssl, for one) still import.
    def __init__(self, *args, **kwargs):
        raise OSError(_NETWORK_MESSAGE)


def _disabled_create_connection(*args, **kwargs):
    raise OSError(_NETWORK_MESSAGE)


socket.socket = _DisabledSocket
socket.create_connection = _disabled_create_connection


def _write_result(status, detail):
    with open(result_path, "w", encoding="utf-8") as result_file:
        json.dump({"status": status, "detail": detail}, result_file)


with open(program_path, encoding="utf-8") as program_file:
    source = program_file.read()
try:
    code = compile(source, program_path, "exec")
except (SyntaxError, ValueError) as exc:
    _write_result("error", "".join(traceback.format_exception_only(type(exc), exc)))
    sys.exit(1)

namespace = {"__name__": "__main__", "__file__": program_path, "__builtins__": __builtins__}
try:
    exec(code, namespace)
except BaseException as exc:
    # BaseException, so that a completion calling sys.exit(0) before the tests
    # run counts as failed instead of passed.
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    _write_result("failed", text)
    sys.exit(1)
_write_result("passed", "")
'''


@dataclass(frozen=True)
class ExecutionResult:
    """Outcome of running one completion against its HumanEval tests.

    Attributes
    ----------
    passed : bool
        True only when the program ran to the end without an exception.
    status : str
        ``"passed"``; ``"failed"`` when the program raised (a wrong result, an
        exception in the completion, a ``MemoryError`` under the memory limit,
        a blocked socket); ``"timed_out"`` when the wall-clock or CPU limit was
        reached; ``"error"`` when the program did not compile or the process
        ended without reporting a result (killed by a signal, ``os._exit``).
    detail : str
        The traceback, signal or limit behind a non-passing status (at most the
        last 2000 characters), empty when passed.
    """

    passed: bool
    status: str
    detail: str

    def __post_init__(self) -> None:
        if self.status not in _STATUSES:
            raise ValueError(f"status must be one of {_STATUSES}, got {self.status!r}")
        if self.passed != (self.status == "passed"):
            raise ValueError(f"passed={self.passed!r} contradicts status={self.status!r}")


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


def build_program(problem: dict, completion: str) -> str:
    """Join a problem and a completion into the program that tests the completion."""
    return (
        problem["prompt"]
        + completion
        + "\n"
        + problem["test"]
        + "\n"
        + f"check({problem['entry_point']})\n"
    )


def _tail(text: str) -> str:
    return text[-_DETAIL_CHARS:]


def _kill_process_group(process: subprocess.Popen) -> None:
    # The child leads its own session (start_new_session=True), so its process
    # group id equals its pid and includes any processes it started.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _read_output(path: Path) -> str:
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 4 * _DETAIL_CHARS))
        return handle.read().decode("utf-8", errors="replace")


def run_completion(
    problem: dict,
    completion: str,
    timeout_s: float = 10.0,
    memory_limit_mb: int = 1024,
    *,
    work_root: str | os.PathLike | None = None,
) -> ExecutionResult:
    """Run one completion against its HumanEval tests in a separate process.

    The program is ``prompt + completion + "\\n" + test + "\\n" + "check(entry_point)\\n"``.
    It runs under ``python -I`` in a new temporary folder (removed afterwards in
    every case), with stdin closed and an environment that contains only ``PATH``
    and ``HOME``/``TMPDIR`` set to that folder. Before the program runs, the
    child sets ``RLIMIT_AS`` (address space, ``memory_limit_mb``), ``RLIMIT_CPU``
    (``ceil(timeout_s) + 1`` seconds) and ``RLIMIT_FSIZE`` (16 MiB per written
    file), and replaces ``socket.socket`` and ``socket.create_connection`` with
    versions that raise ``OSError("network disabled in HumanEval sandbox")``.
    The child leads a new session. When ``timeout_s`` passes, the whole process
    group is killed with ``SIGKILL``, and any processes left in that group after
    a normal exit are killed too.

    NOTE: this is a guard against accidents, not a security boundary. The code
    runs as the same user with the same file access, and it can reach the
    network through ``_socket`` or a subprocess. Evaluate untrusted models in a
    container or VM without network access.

    Parameters
    ----------
    problem : dict
        A HumanEval problem as returned by :func:`load_humaneval`.
    completion : str
        Code that continues ``problem["prompt"]`` (the function body).
    timeout_s : float, default 10.0
        Wall-clock limit in seconds.
    memory_limit_mb : int, default 1024
        Address-space limit of the child in MiB. Python itself needs a few tens of MiB.
    work_root : path-like, optional
        Parent folder of the temporary folder; the system default if omitted.

    Returns
    -------
    ExecutionResult
    """
    if not isinstance(completion, str):
        raise TypeError(f"completion must be a string, got {type(completion).__name__}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
    if not isinstance(memory_limit_mb, int) or memory_limit_mb < 1:
        raise ValueError(f"memory_limit_mb must be a positive integer, got {memory_limit_mb!r}")
    program = build_program(_validate_problem(problem, "problem"), completion)
    cpu_seconds = math.ceil(timeout_s) + 1

    with tempfile.TemporaryDirectory(prefix="humaneval-", dir=work_root) as folder:
        folder_path = Path(folder)
        runner_path = folder_path / "runner.py"
        program_path = folder_path / "program.py"
        result_path = folder_path / "result.json"
        stdout_path = folder_path / "stdout.txt"
        stderr_path = folder_path / "stderr.txt"
        runner_path.write_text(_RUNNER_SOURCE, encoding="utf-8")
        program_path.write_text(program, encoding="utf-8")

        command = [
            sys.executable,
            "-I",
            str(runner_path),
            str(program_path),
            str(result_path),
            str(memory_limit_mb * 1024 * 1024),
            str(cpu_seconds),
            str(_MAX_OUTPUT_BYTES),
        ]
        environment = {"PATH": os.environ.get("PATH", os.defpath), "HOME": folder, "TMPDIR": folder}
        # stdout/stderr go to files rather than pipes, so a completion that prints
        # without end cannot fill the evaluating process's memory.
        with open(stdout_path, "wb") as stdout_file, open(stderr_path, "wb") as stderr_file:
            process = subprocess.Popen(
                command,
                cwd=folder,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=stdout_file,
                stderr=stderr_file,
                start_new_session=True,
            )
            timed_out = False
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_process_group(process)
                process.wait()

        result = _classify(
            timed_out=timed_out,
            returncode=process.returncode,
            result_path=result_path,
            stderr=_read_output(stderr_path),
            timeout_s=timeout_s,
        )
    logger.debug("%s: %s", problem.get("task_id", "problem"), result.status)
    return result


def _classify(*, timed_out: bool, returncode: int, result_path: Path, stderr: str, timeout_s: float) -> ExecutionResult:
    if timed_out:
        return ExecutionResult(False, "timed_out", f"wall-clock limit of {timeout_s} s reached; process group killed")
    if returncode == -signal.SIGXCPU:
        return ExecutionResult(False, "timed_out", "CPU time limit reached (SIGXCPU)")
    if returncode == -signal.SIGKILL:
        # RLIMIT_CPU sends SIGKILL at the hard limit, one second after SIGXCPU.
        return ExecutionResult(
            False, "timed_out", "killed by SIGKILL: CPU time hard limit reached, or killed from outside"
        )
    if result_path.is_file():
        try:
            outcome = json.loads(result_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            outcome = None
        if isinstance(outcome, dict) and outcome.get("status") in ("passed", "failed", "error"):
            status = outcome["status"]
            if status == "passed" and returncode != 0:
                # The program reported success but the process then failed (for
                # instance while shutting down); do not count it as passed.
                return ExecutionResult(False, "error", f"exit status {returncode} after the tests passed\n{_tail(stderr)}")
            return ExecutionResult(status == "passed", status, _tail(str(outcome.get("detail", ""))))
    if returncode < 0:
        name = signal.Signals(-returncode).name
        return ExecutionResult(False, "error", f"killed by signal {name}\n{_tail(stderr)}")
    return ExecutionResult(
        False,
        "error",
        f"process ended with exit status {returncode} without reporting a result\n{_tail(stderr)}",
    )


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

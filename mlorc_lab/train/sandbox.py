"""Run a HumanEval completion against its tests in a separate, limited Python process.

The child process gets resource limits, a socket guard and a wall-clock timeout,
so a hanging or greedy completion cannot stall or exhaust the evaluating process.
This is not a security boundary; see :func:`run_completion`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["ExecutionResult", "build_program", "run_completion"]

# Fields of a HumanEval problem that the program is built from.
_PROGRAM_FIELDS = ("prompt", "test", "entry_point")

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
        One of:

        - ``"passed"``: the tests ran to the end.
        - ``"failed"``: the program raised, for example an ``AssertionError``
          from a wrong result, a ``MemoryError`` under the memory limit or the
          ``OSError`` of the socket guard.
        - ``"timed_out"``: the wall-clock or CPU time limit was reached.
        - ``"error"``: the program did not compile, or the process ended without
          reporting a result (killed by a signal, or ``os._exit``).
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


def _check_program_fields(problem: object) -> None:
    if not isinstance(problem, dict):
        raise TypeError(f"problem must be a dict, got {type(problem).__name__}")
    for field in _PROGRAM_FIELDS:
        if not isinstance(problem.get(field), str):
            raise ValueError(f"problem is missing the string field {field!r}; pass a problem from load_humaneval")


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
    _check_program_fields(problem)
    program = build_program(problem, completion)
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
                # The program reported success but the process then failed, for
                # instance while shutting down. That does not count as passed.
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

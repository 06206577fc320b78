"""Running the lab's commands: failures that say where and what, steps run together."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from iptserver.lab.commands import parallel, run_command, tail
from iptserver.lab.errors import CommandError, LabError


def test_a_failed_command_says_where_and_what_it_printed() -> None:
    with pytest.raises(CommandError) as failed:
        run_command(["sh", "-c", "echo oops >&2; exit 3"], "namespace x")
    assert "namespace x" in str(failed.value) and "oops" in str(failed.value)
    assert run_command(["sh", "-c", "exit 3"], "here", check=False).returncode == 3


def test_input_and_text_output() -> None:
    assert run_command(["cat"], "here", input="hello").stdout == "hello"


def test_a_missing_program_and_a_hung_one_are_lab_errors() -> None:
    with pytest.raises(LabError, match="not installed"):
        run_command(["no-such-program-iptserver"], "here")
    with pytest.raises(LabError, match=r"still running after 0\.2 s"):
        run_command(["sleep", "5"], "here", timeout=0.2)


def test_parallel_runs_every_step_and_raises_the_first_failure() -> None:
    ran: list[int] = []
    lock = threading.Lock()

    def step(i: int) -> None:
        with lock:
            ran.append(i)
        if i % 2:
            raise ValueError(f"step {i}")

    with pytest.raises(ValueError, match="step 1"):
        parallel([lambda i=i: step(i) for i in range(6)])  # type: ignore[misc]
    assert sorted(ran) == list(range(6))


def test_tail_shows_the_last_lines_indented(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(20)))
    assert tail(log, 2) == "  | line 18\n  | line 19"
    assert tail(tmp_path / "missing.log") == "(no log)"
    (tmp_path / "empty.log").write_text("")
    assert tail(tmp_path / "empty.log") == "  | (empty log)"

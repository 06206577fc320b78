"""Running the lab's commands: one subprocess, steps in parallel, log tails, Ctrl-C held off.

Shared by building (``topology``), fault injection (``faults``), probes (``node_probes``)
and the mesh lab, so every failed command says where it ran and what it printed.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType

from iptserver.lab.errors import CommandError, LabError

log = logging.getLogger("iptserver.lab")


def run_command(
    argv: Sequence[str],
    where: str,
    *,
    check: bool = True,
    input: str | None = None,
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (text output); LabError if it is missing or hangs, CommandError if it
    fails and ``check``. ``where`` names the namespace for the message."""
    log.debug("%s: %s", where, " ".join(argv))
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, input=input, timeout=timeout
        )
    except FileNotFoundError as exc:
        raise LabError(f"in {where}: {argv[0]} is not installed (see APT_PACKAGES)") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"in {where}: `{' '.join(argv)}` still running after {timeout} s") from exc
    if check and done.returncode:
        raise CommandError(where, argv, done.returncode, done.stdout, done.stderr, input)
    return done


def parallel(calls: Iterable[Callable[[], object]]) -> None:
    """Run independent steps at once (they wait on subprocesses, not on the GIL)."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(call) for call in calls]
    errors = [exc for f in futures if (exc := f.exception()) is not None]
    for extra in errors[1:]:
        log.error("also failed: %s", extra)
    if errors:
        raise errors[0]


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Let a teardown finish even if Ctrl-C is pressed again; re-raise it afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        pressed.append(signum)
        log.warning("still tearing the lab down; interrupt noted")

    previous = signal.signal(signal.SIGINT, note)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        raise KeyboardInterrupt


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a process's log, indented, for error messages."""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "(no log)"
    return "\n".join(f"  | {line}" for line in text) or "  | (empty log)"

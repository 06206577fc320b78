"""Stopping the lab's own child processes."""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)


def stop_children(
    procs: Sequence[subprocess.Popen[Any]], grace: float, label: Callable[[int], str]
) -> None:
    """SIGTERM every child still running (last started first), give them ``grace``
    seconds together, then SIGKILL the ones left; each is reaped."""
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + grace
    for proc in reversed(procs):
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("pid %d (%s) ignored SIGTERM: SIGKILL", proc.pid, label(proc.pid))
            proc.kill()
            proc.wait()

"""iptserver itself, run in the lab's entry namespace (for the demo and the tests)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from iptserver.dns.queries import DOH_CANARY
from iptserver.lab.errors import LabError
from iptserver.lab.topology import Lab

ENTRY_DNS = "10.77.1.1"  # the entry's address on the client network (addresses.CLIENT)
UPSTREAM = "203.0.113.53:53"  # the lab's DNS authority stands in for the recursor
START_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0
POLL = 0.02  # seconds between looks at a daemon's log
RUNNING_LINE = "iptserver.daemon: iptserver running:"  # logged once signals are handled


@dataclass
class Iptserver:
    """A running ``iptserver run`` in the entry namespace."""

    lab: Lab
    schema: Path
    mmdb: Path
    proc: subprocess.Popen[bytes]
    log_start: int = 0  # where this daemon's output starts in its (shared) log file

    @property
    def output(self) -> str:
        """Everything this daemon has logged so far."""
        with self.lab.log_path(self.proc).open("rb") as log:
            log.seek(self.log_start)
            return log.read().decode(errors="replace")

    @property
    def log(self) -> str:
        return self.output[-4000:]

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def reload(self, timeout: float = 10.0) -> bool:
        """SIGHUP, then wait for the daemon's verdict: True when it logged the new schema
        as loaded, False when it logged the schema as rejected."""
        loaded, rejected = self._reloads()
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while True:
            now_loaded, now_rejected = self._reloads()
            if now_loaded > loaded:
                return True
            if now_rejected > rejected:
                return False
            if not self.alive:
                code = self.proc.returncode
                raise LabError(f"iptserver died on SIGHUP ({code}):\n{self.log}")
            if time.monotonic() > deadline:
                raise LabError(f"no reload logged {timeout} s after SIGHUP:\n{self.log}")
            time.sleep(POLL)

    def _reloads(self) -> tuple[int, int]:
        text = self.output
        failed = text.count("reload rejected") + text.count("reload failed")
        return text.count("iptserver.daemon: reloaded "), failed


def iptserver_argv(
    schema: Path, mmdb: Path, *extra: str, upstream: Sequence[str] = (UPSTREAM,)
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "iptserver",
        "--log-level",
        "debug",
        "run",
        "--config",
        str(schema),
        "--geoip",
        str(mmdb),
        *(arg for address in upstream for arg in ("--upstream", address)),
        *extra,
    ]


def start_iptserver(
    lab: Lab,
    schema: Path,
    mmdb: Path,
    *extra: str,
    upstream: Sequence[str] = (UPSTREAM,),
    probe: tuple[str, str, int] = ("client", ENTRY_DNS, 53),
    wrapper: Sequence[str] = (),
    node: str = "entry",
) -> Iptserver:
    """Start ``iptserver run`` in the entry; return once it serves DNS. ``wrapper``: a
    command the daemon runs under (``setpriv ... --``); ``node``: another entry's node.

    Ready means: this daemon logged that it runs (after its signal handlers are in place,
    so a SIGHUP cannot kill it), and ``probe`` (node, server, port: by default the client
    asking 10.77.1.1:53) gets the DoH canary's NXDOMAIN, which the proxy answers itself
    (so a daemon whose upstreams are dead is ready too).
    """
    log = lab.workdir / "logs" / f"{node}-iptserver.log"  # as Lab.spawn names it; appended to
    log_start = log.stat().st_size if log.exists() else 0
    argv = [*wrapper, *iptserver_argv(schema, mmdb, *extra, upstream=upstream)]
    proc = lab.spawn(node, argv, name="iptserver")
    running = Iptserver(lab, schema, mmdb, proc, log_start)
    deadline = time.monotonic() + START_TIMEOUT
    while RUNNING_LINE not in running.output:
        if not running.alive:
            raise LabError(f"iptserver exited with {proc.returncode}:\n{running.log}")
        if time.monotonic() > deadline:
            stop_iptserver(running)
            raise LabError(f"iptserver did not start in {START_TIMEOUT} s:\n{running.log}")
        time.sleep(POLL)
    try:
        node, server, port = probe
        answer = lab.query(node, DOH_CANARY, server=server, port=port, timeout=2.0)
    except LabError as e:
        stop_iptserver(running)
        raise LabError(f"iptserver runs but does not answer DNS: {e}\n{running.log}") from e
    if answer.rcode != "NXDOMAIN":
        stop_iptserver(running)
        raise LabError(f"iptserver answered the DoH canary with {answer.rcode}:\n{running.log}")
    return running


def stop_iptserver(running: Iptserver) -> int:
    """SIGTERM and wait (SIGKILL after STOP_TIMEOUT: a daemon that hangs is a failure)."""
    if running.alive:
        running.proc.send_signal(signal.SIGTERM)
    try:
        return running.proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        running.proc.kill()
        running.proc.wait()
        message = f"iptserver ignored SIGTERM for {STOP_TIMEOUT} s:\n{running.log}"
        raise LabError(message) from e

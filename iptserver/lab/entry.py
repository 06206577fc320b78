"""iptserver itself, run in the lab's entry namespace (for the demo and the tests)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from iptserver.lab.errors import LabError
from iptserver.lab.topology import Lab

ENTRY_DNS = "10.77.1.1"  # the entry's address on the client network (addresses.CLIENT)
AUTHORITY = "203.0.113.53:53"  # the lab's DNS authority stands in for the recursor


@dataclass
class Iptserver:
    """A running ``iptserver run`` in the entry namespace."""

    lab: Lab
    schema: Path
    mmdb: Path
    proc: subprocess.Popen[bytes]

    @property
    def log(self) -> str:
        """The end of its log, for error messages."""
        return self.lab.log_path(self.proc).read_text()[-4000:]

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


def start_iptserver(
    lab: Lab, schema: Path, mmdb: Path, *extra: str, ready_timeout: float = 15.0
) -> Iptserver:
    """Start it and wait until the client gets DNS answers through it."""
    proc = lab.spawn(
        "entry",
        [
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
            "--upstream",
            AUTHORITY,
            *extra,
        ],
        name="iptserver",
    )
    running = Iptserver(lab, schema, mmdb, proc)
    deadline = time.monotonic() + ready_timeout
    while True:
        if proc.poll() is not None:
            raise LabError(f"iptserver exited with {proc.returncode}:\n{running.log}")
        try:
            lab.query("client", "probe.example.org", server=ENTRY_DNS, timeout=0.5)
            return running
        except LabError:
            if time.monotonic() > deadline:
                running.stop()
                raise LabError(
                    f"iptserver did not answer DNS within {ready_timeout} s:\n{running.log}"
                ) from None

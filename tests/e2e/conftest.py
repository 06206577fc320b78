"""iptserver running in the lab's entry namespace with the UK/RU/US example schema."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from iptserver.lab import Lab
from iptserver.lab.topology import LabError
from tests.conftest import EXAMPLES

ENTRY_DNS = "10.77.1.1"
UPSTREAM = "203.0.113.53:53"


@dataclass
class Running:
    lab: Lab
    schema: Path
    mmdb: Path
    proc: subprocess.Popen[bytes]

    @property
    def log(self) -> str:
        return self.lab.log_path(self.proc).read_text()[-4000:]


def start_iptserver(lab: Lab, schema: Path, mmdb: Path, *extra: str) -> Running:
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
            UPSTREAM,
            *extra,
        ],
        name="iptserver",
    )
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            raise AssertionError(
                f"iptserver exited with {proc.returncode}:\n"
                f"{lab.log_path(proc).read_text()[-3000:]}"
            )
        try:
            lab.resolve("client", "probe.example.org", server=ENTRY_DNS, timeout=0.5)
            break
        except LabError:
            if time.monotonic() > deadline:
                raise AssertionError(
                    "iptserver did not answer DNS within 15 s:\n"
                    + lab.log_path(proc).read_text()[-3000:]
                ) from None
    return Running(lab, schema, mmdb, proc)


def stop_iptserver(running: Running) -> int:
    running.proc.send_signal(signal.SIGTERM)
    return running.proc.wait(timeout=15)


@pytest.fixture(scope="module")
def running(
    lab: Lab, lab_mmdb: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    schema = tmp_path_factory.mktemp("e2e") / "uk-ru-us.yaml"
    schema.write_text(lab.schema_text(EXAMPLES / "uk-ru-us.yaml"))
    started = start_iptserver(lab, schema, lab_mmdb)
    yield started
    assert stop_iptserver(started) == 0, started.log

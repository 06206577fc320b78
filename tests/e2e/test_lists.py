"""Rule lists served over HTTP: downloaded, refreshed on their interval, routed, and the
last good copy kept when the server is gone.

The list server is Python's ``http.server`` on the entry's loopback (it answers
``If-Modified-Since`` with 304, as list hosts do). What the far side saw proves the
routing; the daemon's log and ``/metrics`` prove what it says about its lists.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from iptserver.lab import Lab
from tests.e2e.conftest import BASE_SCHEMA, Iptservers, Running, api_get, resolved

HTTP_PORT = 18095
API_PORT = 18096
LIST_URL = f"http://127.0.0.1:{HTTP_PORT}/uk.txt"
REFRESH = 2  # seconds
SCHEMA = (
    BASE_SCHEMA
    + f"""
api: {{listen: "127.0.0.1:{API_PORT}"}}
default: direct
rules:
  - exit: uk
    lists:
      - url: {LIST_URL}
        refresh: {REFRESH}s
"""
)
# Version 1 routes edge.yandex.net (203.0.113.40) and one address; version 2 another
# name and another address instead. Both have a line that is not a domain.
LIST_V1 = "# lab list, version 1\nedge.yandex.net\n203.0.113.77/32\nnot a domain!\n"
LIST_V2 = "# lab list, version 2\nlong.example.org\n203.0.113.78\nnot a domain!\n"
WAIT = 15.0


@pytest.fixture
def list_server(lab: Lab, tmp_path: Path) -> Iterator[ListServer]:
    server = ListServer(lab, tmp_path / "www")
    yield server
    server.stop()


class ListServer:
    """``http.server`` in the entry namespace, serving one directory."""

    def __init__(self, lab: Lab, root: Path) -> None:
        self.lab = lab
        self.root = root
        root.mkdir()
        self._proc: subprocess.Popen[bytes] | None = None

    def publish(self, text: str) -> None:
        """Serve ``text`` as uk.txt, dated later than what was served before (the server
        dates it by the file's modification time, to the second)."""
        path = self.root / "uk.txt"
        before = path.stat().st_mtime if path.exists() else time.time()
        path.write_text(text, encoding="utf-8")
        later = max(time.time(), before + 2)
        os.utime(path, (later, later))

    def start(self) -> None:
        argv = [sys.executable, "-m", "http.server", str(HTTP_PORT), "--bind", "127.0.0.1"]
        self._proc = self.lab.spawn("entry", [*argv, "--directory", str(self.root)], name="lists")
        deadline = time.monotonic() + WAIT
        while True:
            try:
                with self.lab.socket("entry") as sock:
                    sock.settimeout(1)
                    sock.connect(("127.0.0.1", HTTP_PORT))
                return
            except OSError:
                assert time.monotonic() < deadline, "the list server does not listen"
                time.sleep(0.1)

    def stop(self) -> None:
        if self._proc is not None:
            self.lab.stop_process(self._proc)
            self._proc = None


def wait_for(daemon: Running, pattern: str, count: int = 1) -> None:
    """Until the daemon's log holds ``pattern`` (a regex) ``count`` times."""
    deadline = time.monotonic() + WAIT
    while len(re.findall(pattern, daemon.output)) < count:
        assert daemon.alive, daemon.log
        assert time.monotonic() < deadline, f"no {pattern!r} in the log:\n{daemon.log}"
        time.sleep(0.1)


def list_metrics(lab: Lab) -> dict[str, float]:
    """The ``iptserver_list_*`` samples of the list, by metric name."""
    status, text = api_get(lab, API_PORT, "/metrics")
    assert status == 200
    found = {}
    for line in text.splitlines():
        if line.startswith("iptserver_list_") and f'list="{LIST_URL}"' in line:
            name, _, value = line.partition("{")
            found[name] = float(value.rsplit(" ", 1)[1])
    return found


def test_a_list_is_downloaded_refreshed_and_routed_and_connections_keep_their_exit(
    iptservers: Iptservers, list_server: ListServer, tmp_path: Path
) -> None:
    list_server.publish(LIST_V1)
    list_server.start()
    daemon = iptservers.start(SCHEMA, "--state-dir", str(tmp_path / "state"))
    lab = daemon.lab
    wait_for(daemon, rf"list {LIST_URL}: new copy, 1 domains and 1 networks")
    wait_for(daemon, r"reloaded ")
    assert "not a domain!" in daemon.output, "the malformed line is reported"

    assert lab.whoami("client", "203.0.113.77") == "uk", "the list's network"
    assert lab.whoami("client", resolved(lab, "edge.yandex.net")[0][0]) == "uk"
    assert lab.whoami("client", resolved(lab, "long.example.org")[0][0]) == "direct"
    assert lab.whoami("client", "203.0.113.78") == "direct"

    with lab.hold("client", "203.0.113.77", 8) as held:
        assert lab.exit_of(held.first) == "uk"
        list_server.publish(LIST_V2)
        wait_for(daemon, rf"list {LIST_URL}: new copy", count=2)
        wait_for(daemon, r"reloaded ", count=2)
        assert lab.whoami("client", "203.0.113.78") == "uk", "the new version's network"
        assert lab.whoami("client", "203.0.113.77") == "direct", "a new connection: gone"
        assert lab.whoami("client", resolved(lab, "long.example.org")[0][0]) == "uk"
        held.sock.sendall(b"still here\n")
        lines = [held.next() for _ in range(3)]
        assert {lab.exit_of(line) for line in lines} == {"uk"}, "the held one kept uk"

    metrics = list_metrics(lab)
    assert metrics["iptserver_list_entries"] == 2
    assert metrics["iptserver_list_failures_total"] == 0
    assert time.time() - metrics["iptserver_list_last_success_timestamp_seconds"] < WAIT


def test_the_last_good_copy_routes_while_the_server_is_down(
    iptservers: Iptservers, list_server: ListServer, tmp_path: Path
) -> None:
    """Down at a refresh, then down at a restart: the copy in the state directory routes,
    the log names the URL and why, the failures are counted."""
    state = tmp_path / "state"
    list_server.publish(LIST_V2)
    list_server.start()
    daemon = iptservers.start(SCHEMA, "--state-dir", str(state))
    lab = daemon.lab
    wait_for(daemon, r"reloaded ")
    assert lab.whoami("client", "203.0.113.78") == "uk"

    list_server.stop()
    wait_for(daemon, rf"list {LIST_URL}: .*; the last good copy stays \(from ")
    assert lab.whoami("client", "203.0.113.78") == "uk", "refresh failed: still routed"
    assert list_metrics(lab)["iptserver_list_failures_total"] >= 1
    iptservers.stop(daemon)

    daemon = iptservers.start(SCHEMA, "--state-dir", str(state))
    assert lab.whoami("client", "203.0.113.78") == "uk", "restarted without the server"
    assert lab.whoami("client", resolved(lab, "long.example.org")[0][0]) == "uk"
    wait_for(daemon, rf"list {LIST_URL}: .*; the last good copy stays \(from ")
    metrics = list_metrics(lab)
    assert metrics["iptserver_list_entries"] == 2
    assert metrics["iptserver_list_failures_total"] >= 1


def test_without_a_copy_the_rule_routes_without_the_list_until_it_comes(
    iptservers: Iptservers, list_server: ListServer, tmp_path: Path
) -> None:
    list_server.publish(LIST_V2)
    daemon = iptservers.start(SCHEMA, "--state-dir", str(tmp_path / "state"))
    lab = daemon.lab
    wait_for(daemon, rf"list {LIST_URL}: no copy yet")
    wait_for(daemon, rf"list {LIST_URL}: .*; the last good copy stays \(none yet")
    assert lab.whoami("client", "203.0.113.78") == "direct"
    assert list_metrics(lab)["iptserver_list_entries"] == 0

    list_server.start()  # the next try (REFRESH s later) gets it
    wait_for(daemon, r"reloaded ")
    assert lab.whoami("client", "203.0.113.78") == "uk"

"""Repeat answers against the real kernel: ``iptserver run`` in a namespace of its own,
answers sent to its plugin endpoint (UDP), the learned set read with ``ipset list``.

An entry the kernel holds with more than half its hold left is not written again by a
repeat answer, whose TTL is capped to what is left of the entry instead; a reload forgets
what was written, so the next answer writes its entry again (into the new set, when the
rule's weight moved it).
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from iptserver.lab.netns import socket_in
from iptserver.learning import HOLD_MARGIN
from tests.conftest import REPO

API_PORT = 18053
HOLD = 60
SCHEMA = """
exits:
  ru: {{interface: xru}}
  uk: {{interface: xuk}}
ingress: [ing0]
dns:
  listen: ["127.0.0.1:15353"]
  upstream: ["127.0.0.1:9"]
rules:
  - {{exit: ru, domains: [ru], hold: {hold}, weight: {weight}}}
"""
ADDRESS = "203.0.113.5"
START_TIMEOUT = 20.0


class Daemon:
    """``iptserver run`` in ``netns``, its log in ``log``."""

    def __init__(self, netns: str, schema: Path, log: Path) -> None:
        self.netns, self.schema, self.log = netns, schema, log
        self.sock = socket_in(netns, socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(("127.0.0.1", API_PORT))  # before the daemon: nothing left behind
        self.sent = 0
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    *("ip", "netns", "exec", netns, sys.executable, "-m", "iptserver"),
                    *("--log-level", "info", "run", "--config", str(schema)),
                    *("--api", f"127.0.0.1:{API_PORT}"),
                ],
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def answer(self, name: str, address: str, ttl: int = 300) -> int:
        """Post one answer the way the recursor plugin does; the TTL iptserver allows."""
        self.sent += 1
        self.sock.send(f"IPT1 {self.sent} {ttl}\n\n{name}.\n{address}\n".encode())
        reply = self.sock.recv(512).decode()
        match = re.fullmatch(rf"IPT1 {self.sent} (\d+)\n", reply)
        assert match, reply
        return int(match.group(1))

    def wait_ready(self) -> None:
        self.sock.settimeout(0.2)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                self.sock.send(b"IPT1 0 1\n\nready.ru.\n127.0.0.1\n")
                if self.sock.recv(512).startswith(b"IPT1 0 "):
                    break
            except (TimeoutError, ConnectionRefusedError):
                pass
            assert time.monotonic() < deadline, f"no plugin endpoint:\n{self.log.read_text()}"
        self.sock.settimeout(5)

    def reload(self) -> None:
        """SIGHUP; returns once the daemon logged the new schema as loaded."""
        before = self.log.read_text().count("reloaded ")
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + START_TIMEOUT
        while self.log.read_text().count("reloaded ") == before:
            assert time.monotonic() < deadline, f"no reload:\n{self.log.read_text()}"
            time.sleep(0.05)

    def timeout_left(self, set_name: str, address: str) -> int | None:
        """Seconds the kernel still holds ``address`` in ``set_name`` (None: not there)."""
        listed = subprocess.run(
            ["ip", "netns", "exec", self.netns, "ipset", "list", set_name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        found = re.search(rf"^{re.escape(address)} timeout (\d+)", listed, re.MULTILINE)
        return int(found.group(1)) if found else None

    def stop(self) -> None:
        self.sock.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def daemon(netns: str, tmp_path: Path) -> Iterator[Callable[[str], Daemon]]:
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
    started: list[Daemon] = []

    def start(schema_text: str) -> Daemon:
        schema = tmp_path / "schema.yaml"
        schema.write_text(schema_text, encoding="utf-8")
        running = Daemon(netns, schema, tmp_path / "iptserver.log")
        started.append(running)
        running.wait_ready()
        return running

    yield start
    for running in started:
        running.stop()


def test_a_repeat_within_the_hold_is_not_written_again_and_a_reload_forgets(
    daemon: Callable[[str], Daemon],
) -> None:
    running = daemon(SCHEMA.format(hold=HOLD, weight=0))
    assert running.answer("a.shop.ru", ADDRESS) == HOLD
    written = running.timeout_left("ipts-d0-4", ADDRESS)
    assert written is not None and written >= HOLD  # the hold and the margin

    time.sleep(2.2)  # the entry's timeout counts down meanwhile
    ttl = running.answer("b.shop.ru", ADDRESS)  # another name, the same address and exit
    left = running.timeout_left("ipts-d0-4", ADDRESS)
    assert left is not None and left <= written - 2, "the repeat wrote the entry again"
    assert HOLD / 2 <= ttl < HOLD
    assert ttl + HOLD_MARGIN <= left + 1  # the set counts whole seconds down

    running.reload()  # the same schema: the sets stay, what was written is forgotten
    assert running.answer("b.shop.ru", ADDRESS) == HOLD
    rewritten = running.timeout_left("ipts-d0-4", ADDRESS)
    assert rewritten is not None and rewritten > left

    running.schema.write_text(SCHEMA.format(hold=HOLD, weight=5), encoding="utf-8")
    running.reload()  # the rule's weight moves its entries to another set
    assert running.answer("b.shop.ru", ADDRESS) == HOLD
    moved = running.timeout_left("ipts-d5-4", ADDRESS)
    assert moved is not None and moved >= HOLD

"""``iptserver run --workers 2`` in a namespace of its own, with a real dnsmasq upstream:
both processes answer on the one port, every answer is routed with the schema's mark
(after a reload too), a worker that dies is started again, and what cannot work is
refused at start."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnslib import DNSRecord

from iptserver.dataplane.plan import plan
from iptserver.lab.netns import socket_in
from iptserver.schema import parse_schema
from tests.dataplane.conftest import veth_namespace

UPSTREAM = "127.0.0.2"
PORT = 5353
NAMES = 2000  # names the upstream knows: n<i>.bench.test -> 198.18.<i / 250>.<i % 250 + 1>
SCHEMA = """
exits:
  uk: {{interface: xuk}}
  ru: {{interface: xru}}
rules:
  - exit: {exit}
    domains: [bench.test]
{extra}
dns:
  listen: ["127.0.0.1:{port}"]
  upstream: ["{upstream}:53"]
"""


def address(i: int) -> str:
    return f"198.18.{i // 250}.{i % 250 + 1}"


class Running:
    def __init__(self, netns: str, tmp: Path, exit_: str = "uk", extra: str = "") -> None:
        self.netns = netns
        self.schema = tmp / "schema.yaml"
        self.write(exit_, extra)
        self.log = tmp / "iptserver.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", netns, sys.executable, "-m", "iptserver",
                 "--log-level", "info", "run", "--config", str(self.schema), "--workers", "2"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip

    def write(self, exit_: str, extra: str = "") -> None:
        text = SCHEMA.format(exit=exit_, extra=extra, port=PORT, upstream=UPSTREAM)
        self.schema.write_text(text, encoding="utf-8")

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(re.findall(pattern, self.text())) < count:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} in the log:\n{self.text()}")
            time.sleep(0.1)

    def listeners(self) -> set[int]:
        """The PIDs holding the DNS port."""
        out = subprocess.run(
            ["ip", "netns", "exec", self.netns, "ss", "-Hulpn", f"sport = :{PORT}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return {int(pid) for pid in re.findall(r"pid=(\d+)", out)}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[str]:
    with veth_namespace("iptswk", ("xuk", "xru")) as name:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        hosts = tmp_path / "hosts"
        hosts.write_text("".join(f"{address(i)} n{i}.bench.test\n" for i in range(NAMES)))
        upstream = subprocess.Popen(
            ["ip", "netns", "exec", name, "dnsmasq", "--keep-in-foreground", "--no-resolv",
             "--no-hosts", f"--addn-hosts={hosts}", f"--listen-address={UPSTREAM}",
             "--bind-interfaces", "--local=/bench.test/", "--user=root",
             f"--pid-file={tmp_path / 'dnsmasq.pid'}"],
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            yield name
        finally:
            upstream.terminate()
            upstream.wait(timeout=10)


@pytest.fixture
def running(netns: str, tmp_path: Path) -> Iterator[Running]:
    daemon = Running(netns, tmp_path)
    try:
        daemon.wait_for("iptserver running")
        yield daemon
    finally:
        daemon.stop()


def ask(netns: str, names: list[str], sockets: int = 40, timeout: float = 2.0) -> set[str]:
    """Ask for each name from one of ``sockets`` source ports; the names answered."""
    socks = [socket_in(netns, socket.AF_INET, socket.SOCK_DGRAM) for _ in range(sockets)]
    answered: set[str] = set()
    try:
        for sock in socks:
            sock.settimeout(timeout)
        for i, name in enumerate(names):
            sock = socks[i % sockets]
            sock.sendto(DNSRecord.question(name).pack(), ("127.0.0.1", PORT))
            try:
                reply = DNSRecord.parse(sock.recv(4096))
            except TimeoutError:
                continue
            if reply.rr:
                answered.add(name)
    finally:
        for sock in socks:
            sock.close()
    return answered


def marks(netns: str) -> dict[str, int]:
    """Learned IPv4 entries: address -> the mark they carry."""
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "ipset", "save", "ipts-d0-4"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {
        m.group(1): int(m.group(2), 16)
        for m in re.finditer(r"^add \S+ (\S+) .*skbmark (0x[0-9a-f]+)", out, re.MULTILINE)
    }


def mark_of(exit_: str) -> int:
    schema = parse_schema(SCHEMA.format(exit="uk", extra="", port=PORT, upstream=UPSTREAM))
    return plan(schema.schema, {}).exit(exit_).mark


def test_two_processes_answer_on_one_port_and_route_every_answer(running: Running) -> None:
    pids = running.listeners()
    assert (len(pids) == 2 and running.proc.pid not in pids) or len(pids) == 2, pids
    names = [f"n{i}.bench.test" for i in range(300)]
    assert ask(running.netns, names) == set(names)
    learned = marks(running.netns)
    assert {address(i) for i in range(300)} <= set(learned)
    assert {learned[address(i)] for i in range(300)} == {mark_of("uk")}
    # With the daemon's own process stopped, the worker still answers its share, routed.
    owner = [p for p in pids if _is_iptserver_run(p)]
    assert len(owner) == 1, pids
    os.kill(owner[0], signal.SIGSTOP)
    try:
        fresh = [f"n{i}.bench.test" for i in range(300, 500)]
        answered = ask(running.netns, fresh, sockets=40, timeout=0.3)
    finally:
        os.kill(owner[0], signal.SIGCONT)
    assert 0 < len(answered) < len(fresh)  # the worker's share only
    learned = marks(running.netns)
    assert all(learned.get(address(int(n[1:].split(".")[0]))) == mark_of("uk") for n in answered)


def test_workers_follow_a_reload(running: Running) -> None:
    running.write("ru")
    running.proc.send_signal(signal.SIGHUP)
    running.wait_for("reloaded ")
    assert "kept the previous schema" not in running.text()
    names = [f"n{i}.bench.test" for i in range(1000, 1300)]
    assert ask(running.netns, names) == set(names)
    learned = marks(running.netns)
    assert {learned[address(i)] for i in range(1000, 1300)} == {mark_of("ru")}


def test_a_worker_that_dies_is_started_again(running: Running) -> None:
    workers = [p for p in running.listeners() if not _is_iptserver_run(p)]
    assert len(workers) == 1
    os.kill(workers[0], signal.SIGKILL)
    running.wait_for(rf"DNS worker {workers[0]} exited")
    running.wait_for("answers on the same addresses", count=2)
    again = [p for p in running.listeners() if not _is_iptserver_run(p)]
    assert len(again) == 1 and again != workers
    names = [f"n{i}.bench.test" for i in range(1500, 1600)]
    assert ask(running.netns, names) == set(names)


def test_workers_with_an_export_table_are_refused(netns: str, tmp_path: Path) -> None:
    daemon = Running(netns, tmp_path, extra="kernel: {export_table: 150}")
    try:
        assert daemon.proc.wait(timeout=30) == 1
    finally:
        daemon.stop()
    assert "--workers does not work with kernel.export_table" in daemon.text()
    assert daemon.listeners() == set()


def _is_iptserver_run(pid: int) -> bool:
    return b"iptserver.daemon.worker" not in Path(f"/proc/{pid}/cmdline").read_bytes()

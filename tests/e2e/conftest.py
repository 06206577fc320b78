"""iptserver running in the lab's entry namespace.

Two ways to get one:

* ``running``: one daemon per test module on the UK/RU/US example schema, for tests that
  only send it traffic;
* ``iptservers``: a factory of daemons owned by one test (a schema text in, a daemon
  out), for tests that restart, reload or starve it. Its teardown stops what still runs
  with SIGTERM and checks that the entry namespace is as it was before any iptserver ran
  (and puts it back if not, so the next test starts fresh).

Only one iptserver can listen on 10.77.1.1:53: pytest runs tests one at a time and
finalizes a module's ``running`` when the module ends, so a module uses one of the two.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from iptserver.cli import main
from iptserver.lab import Lab, probes
from iptserver.lab.entry import (
    ENTRY_DNS,
    START_TIMEOUT,
    UPSTREAM,
    Iptserver,
    iptserver_argv,
    start_iptserver,
    stop_iptserver,
)
from tests.conftest import EXAMPLES
from tests.e2e.entry_kernel import EntryState, entry_state, ours, restore

# Running: the helpers of iptserver.lab.entry under the names the tests use.
Running = Iptserver

# The lab's native schemas start from BASE_SCHEMA: every exit of the lab and the direct
# uplink, the client network as ingress and mesh, DNS on the entry's client-side address.
LAB_EXITS = """\
exits:
  uk: {interface: wg-uk}
  ru: {interface: wg-ru}
  us: {interface: wg-us}
  direct: {interface: _DEFAULT}
"""
LAB_SETTINGS = """\
ingress: [wg-clients]
mesh: [10.77.0.0/16, "fd77::/16"]
dns:
  listen: ["10.77.1.1:53"]
  upstream: ["203.0.113.53:53"]
"""
BASE_SCHEMA = LAB_EXITS + LAB_SETTINGS


def explained(running: Running, query: str) -> dict[str, Any]:
    """What ``iptserver explain --json`` says of a query, on the daemon's schema."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        argv = ["explain", str(running.schema), query, "--geoip", str(running.mmdb), "--json"]
        assert main(argv) == 0
    found: dict[str, Any] = json.loads(out.getvalue())[0]
    return found


def explained_exit(running: Running, query: str) -> str | None:
    """The exit ``iptserver explain --json`` names for a query (None: the main table)."""
    exit_name: str | None = explained(running, query)["exit"]
    return exit_name


def resolved(
    lab: Lab, name: str, rtype: str = "A", *, server: str = ENTRY_DNS
) -> list[tuple[str, int]]:
    """The (address, TTL) of each ``rtype`` record the client got for ``name``."""
    records = lab.resolve("client", name, rtype, server=server)
    found = [(value, ttl) for _, kind, value, ttl in records if kind == rtype]
    assert found, f"no {rtype} record for {name} from {server}: {records}"
    return found


def api_get(lab: Lab, port: int, path: str) -> tuple[int, Any]:
    """GET ``path`` from a daemon's API on the entry's loopback: the status and the body
    (JSON decoded under /v1/, else text)."""
    with lab.socket("entry") as sock:
        sock.settimeout(3)
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if path.startswith("/v1/") else body.decode()


def bound(lab: Lab, source: str, node: str = "client") -> probes.SocketFactory:
    """Sockets in ``node``'s namespace that send from ``source`` (one of its addresses):
    a second client on the same machine."""

    def make(family: int, kind: int) -> socket.socket:
        sock = lab.socket(node, family, kind)
        sock.bind((source, 0))
        return sock

    return make


def lab_schema(lab: Lab, path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` with wg-uk/wg-ru/wg-us/wg-clients named as in the lab."""
    path.write_text(text, encoding="utf-8")
    path.write_text(lab.schema_text(path), encoding="utf-8")
    return path


class Iptservers:
    """Daemons for one test, one at a time: ``start(text)`` runs iptserver on a schema."""

    def __init__(self, lab: Lab, mmdb: Path, write_schema: Callable[[str], Path]) -> None:
        self.lab = lab
        self.mmdb = mmdb
        self._write = write_schema
        self._started: list[Running] = []

    def schema(self, text: str) -> Path:
        """A new schema file holding ``text`` (lab interface names filled in)."""
        return lab_schema(self.lab, self._write(""), text)

    def rewrite(self, running: Running, text: str) -> None:
        """Replace the daemon's schema file (it reads it again on SIGHUP)."""
        lab_schema(self.lab, running.schema, text)

    def start(
        self,
        schema: str | Path,
        *extra: str,
        upstream: Sequence[str] = (UPSTREAM,),
        probe: tuple[str, str, int] = ("client", ENTRY_DNS, 53),
        wrapper: Sequence[str] = (),
    ) -> Running:
        """iptserver on a schema (a file, or a text written to a new file); ``probe`` is
        where its proxy is asked whether it is ready (node, server, port)."""
        still = [r for r in self._started if r.alive]
        assert not still, "stop the running iptserver first: one may listen on 10.77.1.1:53"
        path = schema if isinstance(schema, Path) else self.schema(schema)
        running = start_iptserver(
            self.lab, path, self.mmdb, *extra, upstream=upstream, probe=probe, wrapper=wrapper
        )
        self._started.append(running)
        return running

    @property
    def current(self) -> Running:
        """The daemon started last."""
        return self._started[-1]

    def attempt(self, schema: Path, *extra: str) -> tuple[int, str]:
        """Run a daemon that is expected to give up: its exit code and its output."""
        argv = iptserver_argv(schema, self.mmdb, *extra)
        proc = self.lab.spawn("entry", argv, name="iptserver-attempt")
        try:
            code = proc.wait(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"still running after {START_TIMEOUT} s") from None
        return code, self.lab.log_path(proc).read_text()

    def stop(self, running: Running) -> None:
        """SIGTERM; the daemon must exit 0."""
        code = stop_iptserver(running)
        assert code == 0, f"iptserver exited {code}:\n{running.log}"

    def close(self) -> list[str]:
        problems = []
        for running in self._started:
            if running.alive:
                try:
                    self.stop(running)
                except AssertionError as e:
                    problems.append(str(e))
        return problems


@pytest.fixture(scope="session")
def pristine_entry(lab: Lab) -> EntryState:
    """The entry's kernel state before any iptserver ran in it."""
    state = entry_state(lab)
    assert not ours(state), f"the lab's entry already holds iptserver's state: {ours(state)}"
    return state


@pytest.fixture
def iptservers(
    lab: Lab, lab_mmdb: Path, write_schema: Callable[[str], Path], pristine_entry: EntryState
) -> Iterator[Iptservers]:
    """Start daemons in the test; at teardown they are stopped (SIGTERM) and the entry
    must be as it was before any iptserver ran."""
    servers = Iptservers(lab, lab_mmdb, write_schema)
    yield servers
    problems = servers.close()
    problems += [f"left behind: {line}" for line in restore(lab, pristine_entry)]
    assert not problems, "\n".join(problems)


@contextlib.contextmanager
def serving(
    lab: Lab, schema: Path, mmdb: Path, pristine: EntryState, *extra: str
) -> Iterator[Running]:
    """A daemon for a whole module: stopped at the end, the entry checked and restored."""
    started = start_iptserver(lab, schema, mmdb, *extra)
    try:
        yield started
    finally:
        try:
            code = stop_iptserver(started)
        finally:
            left = restore(lab, pristine)
    assert code == 0, started.log
    assert not left, "left behind:\n" + "\n".join(left)


@pytest.fixture(scope="module")
def running(
    lab: Lab,
    lab_mmdb: Path,
    tmp_path_factory: pytest.TempPathFactory,
    pristine_entry: EntryState,
) -> Iterator[Running]:
    """iptserver on the UK/RU/US example, for the tests of one module."""
    schema = tmp_path_factory.mktemp("e2e") / "uk-ru-us.yaml"
    schema.write_text(lab.schema_text(EXAMPLES / "uk-ru-us.yaml"))
    with serving(lab, schema, lab_mmdb, pristine_entry) as started:
        yield started

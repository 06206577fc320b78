"""Dead upstream resolvers: the client gets SERVFAIL in bounded time, never a hang, the
daemon keeps serving, and a good upstream listed after a dead one still answers.

Two ways to be dead, both inside the lab: an address in ``internet`` where nothing
listens (the kernel refuses at once: ICMP port unreachable, TCP reset), and one where a
socket takes the queries and never answers (only the upstream timeout ends the wait).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from iptserver.dns.queries import DOH_CANARY
from iptserver.lab import Lab
from iptserver.lab.zones import ZONE
from tests.e2e.conftest import BASE_SCHEMA, ENTRY_DNS, UPSTREAM, Iptservers, resolved

SCHEMA = BASE_SCHEMA + "default: direct\nrules:\n  - {exit: ru, domains: [ru]}\n"
NAME = "mail.ru"
REFUSED = "203.0.113.54:53"  # local to internet (AnyIP), nothing listens
SILENT = "203.0.113.55:53"  # the silent_upstream fixture's sockets
DEAD = {"refused": REFUSED, "silent": SILENT}
HANG = 6.0  # seconds: an answer later than this is a hang (dns.timeout is 2 s)


@pytest.fixture
def silent_upstream(lab: Lab) -> Iterator[str]:
    """SILENT takes queries over UDP and TCP connections, and never answers."""
    address, port = SILENT.split(":")
    udp = lab.socket("internet", socket.AF_INET, socket.SOCK_DGRAM)
    tcp = lab.socket("internet", socket.AF_INET, socket.SOCK_STREAM)
    with udp, tcp:
        udp.bind((address, int(port)))
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((address, int(port)))
        tcp.listen(16)  # the kernel completes handshakes; nobody reads
        yield SILENT


def timed_query(lab: Lab, *, tcp: bool) -> tuple[str, float]:
    """The rcode the client got for NAME, and how long it took."""
    began = time.monotonic()
    answer = lab.query("client", NAME, server=ENTRY_DNS, tcp=tcp, timeout=HANG)
    return answer.rcode, time.monotonic() - began


@pytest.mark.usefixtures("silent_upstream")
@pytest.mark.parametrize("dead", DEAD.values(), ids=DEAD.keys())
def test_dead_upstream_gets_servfail_in_time(iptservers: Iptservers, dead: str) -> None:
    """Only a dead upstream: SERVFAIL over UDP and TCP well before a client gives up,
    and the daemon goes on answering what it can (the DoH canary is its own)."""
    daemon = iptservers.start(SCHEMA, upstream=[dead])
    lab = daemon.lab
    for tcp in (False, True):
        rcode, took = timed_query(lab, tcp=tcp)
        assert rcode == "SERVFAIL", f"tcp={tcp}"
        assert took < HANG, f"tcp={tcp}: {took:.1f} s"
        if dead == SILENT:  # checks the lab: the refusal did not come from the kernel
            assert took > 0.5, f"tcp={tcp}: the silent upstream answered in {took:.2f} s"
    assert daemon.alive, daemon.log
    assert lab.query("client", DOH_CANARY, server=ENTRY_DNS).rcode == "NXDOMAIN"


@pytest.mark.usefixtures("silent_upstream")
@pytest.mark.parametrize("dead", DEAD.values(), ids=DEAD.keys())
def test_good_upstream_after_a_dead_one_answers(iptservers: Iptservers, dead: str) -> None:
    """A dead upstream first, the lab's authority second: answers come, over UDP and
    TCP, and are routed (mail.ru leaves via ru, which only its answer can make it do)."""
    lab = iptservers.start(SCHEMA, upstream=[dead, UPSTREAM]).lab
    record = ZONE[NAME][0]  # its A record
    assert lab.whoami("client", record.value) == "direct", "before its answer: the default"
    for tcp in (False, True):
        answer = lab.query("client", NAME, server=ENTRY_DNS, tcp=tcp, timeout=HANG)
        assert answer.rcode == "NOERROR", f"tcp={tcp}"
        assert (NAME, "A", record.value, record.ttl) in answer.records
    assert resolved(lab, NAME) == [(record.value, record.ttl)]
    assert lab.whoami("client", record.value) == "ru"

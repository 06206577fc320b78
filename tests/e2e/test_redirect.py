"""DNS to any resolver address, arriving on the ingress, is answered by iptserver (its
nat chain IPTSERVER-DNS redirects port 53 to the proxy), and the answer is routed.

Without iptserver such a query gets nowhere: nothing serves DNS at 198.51.100.53 in the
lab (the kernel refuses), and nothing routes 192.0.2.53 (unreachable, or silence).
"""

from __future__ import annotations

import socket

import pytest

from iptserver.lab import Lab
from iptserver.lab.addresses import CLIENT
from tests.e2e.conftest import BASE_SCHEMA, Iptservers

SCHEMA = BASE_SCHEMA + 'default: us\nrules:\n  - {exit: ru, domains: [ru, "*.yandex.net"]}\n'
NAME, TARGET, ADDRESS = "cdn.example.net", "edge.yandex.net", "203.0.113.40"  # a CNAME
# Outside the ephemeral port range: the control query's conntrack entry (made before the
# redirect existed) can never be the one a later query of the client falls into.
CONTROL_PORT = 20053
CLIENT4 = CLIENT[0][0]

# (resolver address the client asks, over TCP)
RESOLVERS = [("198.51.100.53", False), ("198.51.100.53", True), ("192.0.2.53", False)]


def unanswered(lab: Lab, resolver: str, *, tcp: bool) -> bool:
    """True when a DNS query to ``resolver`` gets no answer at all."""
    kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
    with lab.socket("client", socket.AF_INET, kind) as sock:
        sock.settimeout(0.5)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((CLIENT4, CONTROL_PORT))
        try:
            sock.connect((resolver, 53))
            sock.send(b"\x00\x1d" if tcp else b"")
            sock.recv(512)
        except OSError:  # refused, unreachable, or timed out
            return True
    return False


@pytest.mark.parametrize(
    ("resolver", "tcp"), RESOLVERS, ids=[f"{r}-{'tcp' if t else 'udp'}" for r, t in RESOLVERS]
)
def test_dns_to_another_resolver_is_answered_and_routed(
    iptservers: Iptservers, lab: Lab, resolver: str, tcp: bool
) -> None:
    """Nothing answers there without iptserver; with it, iptserver answers (the CNAME
    chain and the address) and routes the address by its answer (ru, not the default)."""
    assert unanswered(lab, resolver, tcp=tcp), "the control: no DNS there without iptserver"
    iptservers.start(SCHEMA)
    assert lab.whoami("client", ADDRESS) == "us", "before the answer: the default exit"
    answer = lab.query("client", NAME, server=resolver, tcp=tcp)
    assert answer.rcode == "NOERROR"
    assert [r[:3] for r in answer.records] == [
        (NAME, "CNAME", TARGET),
        (TARGET, "A", ADDRESS),
    ]
    assert lab.whoami("client", ADDRESS) == "ru", "the answer was routed: iptserver saw it"


def test_dns_to_another_resolver_over_ipv6_is_answered(iptservers: Iptservers, lab: Lab) -> None:
    """DESIGN §4 wants port 53 redirected whatever the family: a client given an IPv6
    resolver is answered (and routed) by iptserver listening on the ingress's address."""
    listen = '  listen: ["10.77.1.1:53", "[fd77:1::1]:53"]\n'
    iptservers.start(SCHEMA.replace('  listen: ["10.77.1.1:53"]\n', listen))
    assert lab.query("client", NAME, server="2001:db8:ff::99").rcode == "NOERROR"

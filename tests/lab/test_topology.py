"""The lab proven from the outside: what the far side sees, what DNS answers.

An exit is proven by the source address the whoami server in ``internet`` observed,
never by reading the lab's own state back.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from iptserver.lab import CommandError, Lab, LabError, ProbeError
from iptserver.lab.addresses import DNS_AUTHORITY, EXIT_NAMES

AUTHORITY4, AUTHORITY6 = (str(a) for a in DNS_AUTHORITY)
EXAMPLES = Path(__file__).resolve().parents[2] / "schema" / "examples"
Route = Callable[[str, str], None]


def test_names_carry_the_lab_id(lab: Lab) -> None:
    assert lab.ns("entry") == f"ipts{lab.id}-entry"
    names = lab.wg_interfaces
    assert len(set(names)) == 6 and all(len(n) <= 15 and lab.id in n for n in names)
    assert lab.wg_interface("uk") == f"wg{lab.id}uk"
    with pytest.raises(LabError, match="unknown lab node"):
        lab.ns("office")


def test_everything_goes_direct_without_policy(lab: Lab) -> None:
    for node in ("client", "entry"):
        for address in ("198.51.100.10", "198.51.100.70", "203.0.113.40", "2001:db8:44::10"):
            assert lab.whoami(node, address) == "direct", (node, address)


def test_the_far_side_answers_on_port_8080_and_reports_the_destination(lab: Lab) -> None:
    seen = lab.seen("client", "203.0.113.7", port=8080)
    assert seen == {"seen": "198.18.0.1", "local": "203.0.113.7"}


@pytest.mark.parametrize("exit_name", EXIT_NAMES)
def test_a_route_into_a_tunnel_leaves_by_that_exit(
    lab: Lab, entry_routes: Route, exit_name: str
) -> None:
    entry_routes("198.51.100.10/32", exit_name)
    assert lab.whoami("entry", "198.51.100.10") == exit_name
    assert lab.whoami("client", "198.51.100.10") == exit_name  # forwarded, and back
    assert lab.whoami("client", "198.51.100.11") == "direct"  # only that address


def test_ipv6_through_a_tunnel(lab: Lab, entry_routes: Route) -> None:
    entry_routes("2001:db8:7::/48", "ru")
    assert lab.whoami("entry", "2001:db8:7::70") == "ru"
    assert lab.whoami("client", "2001:db8:7::70") == "ru"
    assert lab.whoami("client", "2001:db8:1::80") == "direct"


def test_http_get_answers_json(lab: Lab) -> None:
    with lab.socket("client") as sock:
        sock.settimeout(3)
        sock.connect(("198.51.100.150", 80))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n")
        head, _, body = sock.makefile("rb").read().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert json.loads(body) == {"seen": "198.18.0.1", "local": "198.51.100.150"}


def test_a_held_connection_stays_open(lab: Lab) -> None:
    began = time.monotonic()
    with lab.hold("client", "198.51.100.10", seconds=3) as held:
        lines = [held.first, *held]
    assert [line["n"] for line in lines] == [0, 1, 2]
    assert {lab.exit_of(line) for line in lines} == {"direct"}
    assert time.monotonic() - began >= 1.9


def test_http_hold_streams_a_line_a_second(lab: Lab) -> None:
    with lab.socket("client") as sock:
        sock.settimeout(3)
        sock.connect(("203.0.113.70", 80))
        sock.sendall(b"GET /hold?seconds=2 HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = sock.makefile("rb").read().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert [json.loads(line)["n"] for line in body.splitlines()] == [0, 1]


def test_whoami_failure_says_where_and_why(lab: Lab) -> None:
    with pytest.raises(LabError, match=r"from client .*192\.0\.2\.1.*\n.*ip route get"):
        lab.whoami("client", "192.0.2.1", timeout=1)


def test_run_reports_namespace_and_stderr(lab: Lab) -> None:
    with pytest.raises(CommandError, match=rf"ipts{lab.id}-entry.*Cannot find device"):
        lab.run("entry", ["ip", "route", "add", "198.51.100.0/24", "dev", "nonexistent0"])


def test_entry_has_no_routes_into_the_tunnels_but_connected_ones(lab: Lab) -> None:
    routes = lab.run("entry", ["ip", "route", "show", "table", "all"]).stdout
    for exit_name in EXIT_NAMES:
        via = [r for r in routes.splitlines() if lab.wg_interface(exit_name) in r]
        assert via and all("proto kernel" in r or r.startswith("local") for r in via), via


# -- DNS ---------------------------------------------------------------------------------


@pytest.mark.parametrize("server", [AUTHORITY4, AUTHORITY6])
def test_dns_a_and_aaaa_with_ttls(lab: Lab, server: str) -> None:
    assert lab.resolve("client", "www.bbc.co.uk", server=server) == [
        ("www.bbc.co.uk", "A", "198.51.100.10", 60)
    ]
    assert lab.resolve("client", "mail.ru", "AAAA", server=server) == [
        ("mail.ru", "AAAA", "2001:db8:7::70", 60)
    ]
    assert lab.resolve("entry", "short.example.org", server=server)[0][3] == 2
    assert lab.resolve("entry", "long.example.org", server=server)[0][3] == 86400


def test_dns_cname_chains(lab: Lab) -> None:
    assert lab.resolve("client", "cdn.example.net", server=AUTHORITY4) == [
        ("cdn.example.net", "CNAME", "edge.yandex.net", 60),
        ("edge.yandex.net", "A", "203.0.113.40", 60),
    ]
    chain = lab.resolve("client", "a.chain.test", server=AUTHORITY4)
    assert [(r[1], r[2]) for r in chain] == [
        ("CNAME", "b.chain.test"),
        ("CNAME", "c.chain.ru"),
        ("A", "203.0.113.80"),
    ]


def test_dns_several_answers_and_the_canary(lab: Lab) -> None:
    multi = lab.resolve("client", "multi.ru", server=AUTHORITY4)
    assert sorted(r[2] for r in multi) == ["198.51.100.140", "198.51.100.72"]
    canary = lab.resolve("client", "use-application-dns.net", server=AUTHORITY4)
    assert [r[2] for r in canary] == ["203.0.113.90"]


def test_dns_nxdomain(lab: Lab) -> None:
    answer = lab.query("client", "no-such-name.example.org", server=AUTHORITY4)
    assert (answer.rcode, answer.records) == ("NXDOMAIN", [])
    assert lab.resolve("client", "no-such-name.example.org", server=AUTHORITY4) == []


def test_dns_truncates_udp_then_tcp_works(lab: Lab) -> None:
    answer = lab.query("client", "big.example.org", server=AUTHORITY4)
    assert answer.truncated_udp and answer.transport == "tcp"
    assert len(answer.records) == 40
    with_edns = lab.query("client", "big.example.org", server=AUTHORITY4, edns=1232)
    assert not with_edns.truncated_udp and with_edns.transport == "udp"
    assert len(with_edns.records) == 40
    tcp_only = lab.query("client", "www.example.com", server=AUTHORITY6, tcp=True)
    assert tcp_only.transport == "tcp" and tcp_only.records[0][2] == "198.51.100.150"


def test_nothing_answers_dns_on_the_entry_yet(lab: Lab) -> None:
    with pytest.raises(ProbeError, match=r"to 10\.77\.1\.1 port 53 from client"):
        lab.resolve("client", "mail.ru", server="10.77.1.1", timeout=0.5)


def test_schema_text_names_this_labs_interfaces(lab: Lab) -> None:
    text = lab.schema_text(EXAMPLES / "uk-ru-us.yaml")
    assert "wg-uk" not in text and "wg-clients" not in text
    assert f"interface: {lab.wg_interface('ru')}" in text
    assert re.search(rf"ingress: \[{lab.ingress}\]", text)

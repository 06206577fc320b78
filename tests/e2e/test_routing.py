"""Each name really leaves through its exit: proved by the address the far side saw.

The client resolves through the entry's iptserver and connects to the answer; the whoami
server in "internet" reports the source address, which names the exit. ``explain`` must
predict that same exit.
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import ENTRY_DNS, Running, explained_exit

# (name, record type, the exit the far side must see, why)
BY_NAME = [
    ("www.bbc.co.uk", "A", "uk", "domain co.uk (and GB by GeoIP)"),
    ("mail.ru", "A", "ru", "domain ru"),
    ("mail.ru", "AAAA", "ru", "domain ru, IPv6"),
    ("cdn.example.net", "A", "ru", "CNAME to edge.yandex.net, domain *.yandex.net"),
    ("news.gov.uk", "A", "uk", "regex ~.*\\.gov\\.uk$"),
    ("news.gov.uk", "AAAA", "uk", "IPv6 host route beats the /64 net"),
    ("updates.example.org", "A", "direct", "weight 100 beats the GB country rule"),
    ("www.example.com", "A", "us", "no rule: the default exit"),
    ("de.example.de", "A", "us", "DE by GeoIP, no rule: the default exit"),
]


@pytest.mark.parametrize(
    ("name", "rtype", "expected"), [c[:3] for c in BY_NAME], ids=[f"{c[0]}-{c[1]}" for c in BY_NAME]
)
def test_first_connection_leaves_through_the_exit_of_its_name(
    running: Running, name: str, rtype: str, expected: str
) -> None:
    lab = running.lab
    answer = lab.resolve("client", name, rtype, server=ENTRY_DNS)
    chain = ",".join([name, *(value for _, kind, value, _ in answer if kind == "CNAME")])
    records = [r for r in answer if r[1] == rtype]
    assert records, f"no {rtype} record for {name}"
    for record in records:
        address = record[2]
        assert explained_exit(running, f"{chain}={address}") == expected
        assert lab.whoami("client", address) == expected, f"{name} -> {address}"


# (address, the exit, why): no DNS involved, the static sets decide
BY_ADDRESS = [
    ("198.51.100.20", "uk", "GB by GeoIP"),
    ("198.51.100.75", "ru", "RU by GeoIP"),
    ("2001:db8:7::99", "ru", "RU by GeoIP, IPv6"),
    ("203.0.113.130", "uk", "net 203.0.113.128/25"),
    ("203.0.113.9", "direct", "net 203.0.113.8/29, weight 100"),
    ("198.51.100.150", "us", "US by GeoIP, no rule: default"),
    ("203.0.113.5", "us", "no rule: default"),
]


@pytest.mark.parametrize(
    ("address", "expected"), [c[:2] for c in BY_ADDRESS], ids=[c[0] for c in BY_ADDRESS]
)
def test_addresses_leave_by_their_static_rules(
    running: Running, address: str, expected: str
) -> None:
    assert explained_exit(running, address) == expected
    assert running.lab.whoami("client", address) == expected


def test_answer_ttl_is_capped_to_the_route_hold(running: Running) -> None:
    records = running.lab.resolve("client", "long.example.org", server=ENTRY_DNS)
    assert records and all(ttl <= 300 for *_, ttl in records)  # ttl.hold of the schema

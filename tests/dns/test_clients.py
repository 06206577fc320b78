"""The client gate alone: who is a client, and the token buckets (a clock passed in)."""

from __future__ import annotations

import ipaddress

import pytest

from iptserver.dns import clients
from iptserver.dns.clients import OTHERS, ClientGate, RateLimit, Verdict

LAN = ipaddress.ip_network("10.77.1.0/24")


def test_only_this_host_and_the_allowed_networks_are_clients() -> None:
    gate = ClientGate([LAN, ipaddress.ip_network("fd77::/16")])
    assert gate.check("127.0.0.1", 0) is Verdict.ALLOW
    assert gate.check("::1", 0) is Verdict.ALLOW
    assert gate.check("10.77.1.9", 0) is Verdict.ALLOW
    assert gate.check("fd77:1::9", 0) is Verdict.ALLOW
    assert gate.check("198.18.0.2", 0) is Verdict.REFUSE
    assert gate.check("fe80::1%uplink", 0) is Verdict.REFUSE
    assert gate.check("not an address", 0) is Verdict.REFUSE


def test_a_client_past_its_rate_is_limited_until_its_bucket_fills_again() -> None:
    gate = ClientGate([LAN], RateLimit(client=10, burst=1))
    assert [gate.check("10.77.1.9", 0.0) for _ in range(12)].count(Verdict.ALLOW) == 10
    assert gate.check("10.77.1.10", 0.0) is Verdict.ALLOW  # another client: its own bucket
    assert gate.check("10.77.1.9", 0.05) is Verdict.LIMIT  # half a token back
    assert gate.check("10.77.1.9", 0.2) is Verdict.ALLOW
    assert gate.limited == {"10.77.1.9": 3}


def test_a_network_shares_one_bucket() -> None:
    gate = ClientGate([LAN], RateLimit(network=5, burst=1))
    verdicts = [gate.check(f"10.77.1.{i}", 0.0) for i in range(1, 9)]
    assert verdicts.count(Verdict.ALLOW) == 5


def test_no_limit_when_the_rate_is_zero() -> None:
    gate = ClientGate([LAN], RateLimit(client=0, network=0))
    assert all(gate.check("10.77.1.9", 0.0) is Verdict.ALLOW for _ in range(10_000))


def test_tables_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clients, "MAX_CLIENTS", 100)
    monkeypatch.setattr(clients, "MAX_COUNTED", 3)
    gate = ClientGate([ipaddress.ip_network("10.0.0.0/8")], RateLimit(client=1, burst=1))
    for i in range(1000):
        address = str(ipaddress.ip_address(0x0A000000 + i))
        gate.check(address, 0.0)
        gate.check(address, 0.0)  # over its rate: counted
    assert len(gate._known) <= 100
    assert len(gate._clients._held) <= 100
    assert len(gate.limited) == 4
    assert gate.limited[OTHERS] == 997


def test_allow_also_lets_in_an_address_refused_before() -> None:
    strangers: list[int] = []
    gate = ClientGate([LAN], on_stranger=lambda: strangers.append(1))
    assert gate.check("10.78.0.5", 0) is Verdict.REFUSE
    assert gate.check("10.78.0.5", 0) is Verdict.REFUSE  # known now: no second call
    assert strangers == [1]
    gate.allow_also([ipaddress.ip_network("10.78.0.0/24")])
    assert gate.check("10.78.0.5", 0) is Verdict.ALLOW

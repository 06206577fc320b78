"""The real probe in the lab: through the exit's own tunnel, whatever its table holds;
the handshake read from wireguard-go's UAPI socket."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from iptserver.dataplane.probe6 import PROBE_TABLE, ProbeRoutes6
from iptserver.health.probe import connect_through, latest_handshake, probe_round
from iptserver.lab import Lab
from iptserver.schema.health import Health

TARGET = (ipaddress.ip_address("198.51.100.50"), 80)


def probe(lab: Lab, interface: str, timeout: float = 1.0) -> str | None:
    def make(family: int, kind: int) -> socket.socket:
        return lab.socket("entry", family, kind)

    return asyncio.run(connect_through(interface, TARGET, timeout, make))


def test_the_probe_goes_through_the_tunnel_even_when_its_table_is_blocked(lab: Lab) -> None:
    wg_uk = lab.wg_interface("uk")
    table = ["ip", "route"]
    # An exit table that sends the marked traffic elsewhere, and a blocked one: the probe
    # carries no mark and never looks them up.
    lab.run("entry", [*table, "add", "unreachable", "default", "table", "177"])
    lab.run("entry", ["ip", "rule", "add", "oif", wg_uk, "lookup", "177", "pref", "900"])
    try:
        assert probe(lab, wg_uk) is None
        lab.kill_exit("uk")
        try:
            # Dead behind the tunnel: the probe fails although the direct uplink works.
            assert probe(lab, wg_uk) == "timed out"
            assert lab.whoami("entry", str(TARGET[0])) == "direct"
        finally:
            lab.revive_exit("uk")
        assert probe(lab, wg_uk, timeout=10) is None
        assert probe(lab, "nosuchif0") == "No such device"
    finally:
        lab.run("entry", ["ip", "rule", "del", "pref", "900"])
        lab.run("entry", [*table, "flush", "table", "177"])


TARGET6 = (ipaddress.ip_address("2001:db8:ff::50"), 80)


def probe6(lab: Lab, interface: str, timeout: float = 1.0) -> str | None:
    def make(family: int, kind: int) -> socket.socket:
        return lab.socket("entry", family, kind)

    return asyncio.run(connect_through(interface, TARGET6, timeout, make))


def test_an_ipv6_probe_takes_a_route_of_its_own_through_the_tunnel(lab: Lab) -> None:
    """IPv6 has no on-link fallback for a bound socket: without its route the probe
    cannot leave; with it, it goes through the tunnel whatever the exit's table holds
    (blocked here) and fails when the exit is dead, though the uplink works."""
    wg_uk = lab.wg_interface("uk")
    lab.run("entry", ["ip", "-6", "route", "add", "unreachable", "default", "table", "177"])
    lab.run("entry", ["ip", "-6", "rule", "add", "oif", wg_uk, "lookup", "177", "pref", "900"])
    routes = ProbeRoutes6(netns=lab.ns("entry"))
    try:
        assert probe6(lab, wg_uk) == "Network is unreachable"
        routes.ensure(wg_uk)
        routes.ensure(wg_uk)  # again: nothing twice
        rules = lab.run("entry", ["ip", "-6", "rule"]).stdout
        assert rules.count(f"oif {wg_uk} lookup {PROBE_TABLE}") == 1, rules
        assert probe6(lab, wg_uk) is None
        lab.kill_exit("uk")
        try:
            assert probe6(lab, wg_uk) == "timed out"
            assert lab.whoami("entry", str(TARGET6[0])) == "direct"
        finally:
            lab.revive_exit("uk")
        assert probe6(lab, wg_uk, timeout=10) is None
    finally:
        routes.remove()
        lab.run("entry", ["ip", "-6", "rule", "del", "pref", "900"])
        lab.run("entry", ["ip", "-6", "route", "flush", "table", "177"])
    assert str(PROBE_TABLE) not in lab.run("entry", ["ip", "-6", "rule"]).stdout
    assert probe6(lab, wg_uk) == "Network is unreachable"


def test_handshake_is_read_from_wireguard_go(lab: Lab) -> None:
    before = lab.handshakes()["us"]
    ours = asyncio.run(latest_handshake(lab.wg_interface("us")))
    after = lab.handshakes()["us"]
    assert ours in (before, after) and ours > 0
    assert asyncio.run(latest_handshake("nosuchif0")) is None  # no UAPI socket


def test_a_round_reports_the_handshake_age(lab: Lab) -> None:
    def make(family: int, kind: int) -> socket.socket:
        return lab.socket("entry", family, kind)

    health = Health.model_validate({"probe": ["198.51.100.50:80"], "handshake_max": 180})
    good = asyncio.run(probe_round(lab.wg_interface("us"), health, make))
    assert good.ok and good.handshake_age is not None and good.handshake_age < 180
    quick = health.model_copy(update={"timeout": 0.5})
    lab.kill_exit("us")
    try:
        bad = asyncio.run(probe_round(lab.wg_interface("us"), quick, make))
    finally:
        lab.revive_exit("us")
    assert not bad.ok and bad.probe_error == "timed out"

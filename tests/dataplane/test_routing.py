"""Policy routing against the real kernel, in a namespace of the test's own: each exit's
fwmark rule and table (with the kill-switch), failover and blocking, the export table's
host routes, and that doing it all twice leaves it once. Read back with ``ip``."""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Callable
from typing import TypeVar

import pytest

from iptserver.dataplane.export import HostRoute
from iptserver.dataplane.plan import ExitPlan
from iptserver.dataplane.routing import EXPORT_PROTO, Routing
from iptserver.errors import DataplaneError
from iptserver.lab.netns import run_in
from iptserver.schema.model import Route

T = TypeVar("T")

UK = ExitPlan("uk", "xuk", Route.INTERFACE, None, mark=0x100, table=100, priority=1000)
RU = ExitPlan("ru", "xru", Route.INTERFACE, None, mark=0x101, table=101, priority=1001)
GONE = ExitPlan("gone", "xgone", Route.INTERFACE, None, mark=0x102, table=102, priority=1002)
DIRECT = ExitPlan("direct", "_DEFAULT", Route.HOST_GATEWAY, None, 0x103, 103, 1003)
# A tunnel reached through a next hop (IPv4 only): xuk holds 192.0.2.2/24.
VIA = ExitPlan("via", "xuk", Route.INTERFACE, "192.0.2.1", mark=0x104, table=104, priority=1004)
KILL_SWITCH = "unreachable default metric 4000000000"
EXPORT = 200


def with_routing(netns: str, work: Callable[[Routing], T]) -> T:
    """``work(routing)`` with a ``Routing`` made, used and closed inside ``netns``."""

    def inside() -> T:
        routing = Routing()
        try:
            return work(routing)
        finally:
            routing.close()

    return run_in(netns, inside)


def ip(netns: str, *args: str) -> str:
    return subprocess.run(
        ["ip", "-n", netns, *args], capture_output=True, text=True, check=True
    ).stdout


def rules(netns: str, version: int) -> list[str]:
    return [line for line in ip(netns, f"-{version}", "rule").splitlines() if "fwmark" in line]


def table(netns: str, version: int, number: int) -> list[str]:
    """The table's routes, without the words that only say how they were added (none
    when the kernel has no such table)."""
    done = subprocess.run(
        ["ip", "-n", netns, f"-{version}", "route", "show", "table", str(number)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode and "does not exist" in done.stderr:
        return []
    assert done.returncode == 0, done.stderr
    noise = {"proto static", "scope link"}
    lines = []
    for line in done.stdout.splitlines():
        text = " ".join(line.split())
        for words in noise:
            text = text.replace(f" {words}", "")
        lines.append(text)
    return lines


def test_an_exit_gets_its_rule_and_table_with_the_kill_switch(netns: str) -> None:
    with_routing(netns, lambda r: r.install_exit(UK, UK))
    for version in (4, 6):
        assert rules(netns, version) == ["1000:\tfrom all fwmark 0x100 lookup 100"]
    assert table(netns, 4, 100) == ["default dev xuk", KILL_SWITCH]
    v6 = table(netns, 6, 100)
    assert len(v6) == 2 and v6[0].startswith("default dev xuk"), v6
    assert v6[1].startswith("unreachable default dev lo") and "metric 4000000000" in v6[1], v6


def test_applying_twice_leaves_one_of_each(netns: str) -> None:
    def twice(routing: Routing) -> None:
        for _ in range(2):
            routing.install_exit(UK, UK)
            routing.install_exit(RU, RU)

    with_routing(netns, twice)
    once = {v: (rules(netns, v), table(netns, v, 100), table(netns, v, 101)) for v in (4, 6)}
    for version in (4, 6):
        assert rules(netns, version) == [
            "1000:\tfrom all fwmark 0x100 lookup 100",
            "1001:\tfrom all fwmark 0x101 lookup 101",
        ]
        assert len(table(netns, version, 100)) == 2
    with_routing(netns, twice)
    assert {
        v: (rules(netns, v), table(netns, v, 100), table(netns, v, 101)) for v in (4, 6)
    } == once


def test_a_host_gateway_exit_routes_by_copies_of_mains_default_routes(netns: str) -> None:
    """Not main itself: FRR puts the routes it imports from the export table there, and a
    host route to a tunnel must not overrule an address the schema sends direct."""
    ip(netns, "addr", "add", "192.0.2.2/24", "dev", "xru")
    ip(netns, "route", "add", "default", "via", "192.0.2.1", "dev", "xru", "metric", "50")
    ip(netns, "route", "add", "198.51.100.7/32", "dev", "xuk")  # as zebra would
    with_routing(netns, lambda r: r.install_exit(DIRECT, DIRECT))
    assert rules(netns, 4) == ["1003:\tfrom all fwmark 0x103 lookup 103"]
    assert table(netns, 4, 103) == ["default via 192.0.2.1 dev xru metric 50"]
    assert table(netns, 6, 103) == []  # main has no IPv6 default here
    assert "dev xru" in ip(netns, "route", "get", "198.51.100.7", "mark", "0x103")
    # main's default changes: following it replaces the copy
    ip(netns, "route", "replace", "default", "via", "192.0.2.3", "dev", "xru", "metric", "50")
    with_routing(netns, lambda r: r.follow_main(103))
    assert table(netns, 4, 103) == ["default via 192.0.2.3 dev xru metric 50"]
    ip(netns, "route", "del", "default")
    with_routing(netns, lambda r: r.follow_main(103))
    assert table(netns, 4, 103) == []


def test_a_missing_interface_is_reported_and_its_traffic_dropped(netns: str) -> None:
    with pytest.raises(DataplaneError) as caught:
        with_routing(netns, lambda r: r.install_exit(GONE, GONE))
    assert str(caught.value) == (
        "exit gone: interface xgone does not exist; its traffic is dropped until it is up"
    )
    # the rule and the kill-switch went in all the same: nothing falls through to main
    assert rules(netns, 4) == ["1002:\tfrom all fwmark 0x102 lookup 102"]
    assert table(netns, 4, 102) == [KILL_SWITCH]
    assert len(table(netns, 6, 102)) == 1


def test_a_next_hop_routes_its_own_family_only(netns: str) -> None:
    ip(netns, "addr", "add", "192.0.2.2/24", "dev", "xuk")
    with_routing(netns, lambda r: r.install_exit(VIA, VIA))
    assert table(netns, 4, 104) == ["default via 192.0.2.1 dev xuk", KILL_SWITCH]
    [v6] = table(netns, 6, 104)
    assert v6.startswith("unreachable default")


def test_failover_blocking_and_back(netns: str) -> None:
    def through(via: ExitPlan | None) -> Callable[[Routing], None]:
        return lambda routing: routing.set_route(UK, via)

    with_routing(netns, lambda r: r.install_exit(UK, UK))
    with_routing(netns, through(RU))  # failed over to ru's tunnel
    assert table(netns, 4, 100) == ["default dev xru", KILL_SWITCH]
    with_routing(netns, through(None))  # blocked: only the kill-switch is left
    assert table(netns, 4, 100) == [KILL_SWITCH]
    assert [line.split()[0] for line in table(netns, 6, 100)] == ["unreachable"]
    ip(netns, "addr", "add", "192.0.2.2/24", "dev", "xru")
    ip(netns, "route", "add", "default", "via", "192.0.2.1", "dev", "xru")
    with_routing(netns, through(DIRECT))  # the host's own gateway: main's default, copied
    assert table(netns, 4, 100) == ["default via 192.0.2.1 dev xru", KILL_SWITCH]
    with_routing(netns, through(UK))
    assert table(netns, 4, 100) == ["default dev xuk", KILL_SWITCH]
    assert rules(netns, 4) == ["1000:\tfrom all fwmark 0x100 lookup 100"]  # rule untouched


def test_failing_over_to_a_missing_interface_drops_the_old_route(netns: str) -> None:
    with_routing(netns, lambda r: r.install_exit(UK, UK))
    with pytest.raises(DataplaneError, match="exit uk: interface xgone does not exist"):
        with_routing(netns, lambda r: r.set_route(UK, GONE))
    assert table(netns, 4, 100) == [KILL_SWITCH]


def test_an_exit_moved_to_another_table_keeps_one_rule(netns: str) -> None:
    moved = ExitPlan("uk", "xuk", Route.INTERFACE, None, mark=0x100, table=110, priority=1000)
    with_routing(netns, lambda r: r.install_exit(UK, UK))
    with_routing(netns, lambda r: r.install_exit(moved, moved))
    for version in (4, 6):
        assert rules(netns, version) == ["1000:\tfrom all fwmark 0x100 lookup 110"]


def test_remove_exit(netns: str) -> None:
    def install(routing: Routing) -> None:
        for exit_ in (UK, RU, DIRECT):
            routing.install_exit(exit_, exit_)

    with_routing(netns, install)
    with_routing(netns, lambda r: r.remove_exit(RU, rule=False))  # the table only
    assert table(netns, 4, 101) == [] and table(netns, 6, 101) == []
    assert "fwmark 0x101" in "".join(rules(netns, 4))
    with_routing(netns, lambda r: r.remove_exit(UK, routes=False))  # the rule only
    assert "fwmark 0x100" not in "".join(rules(netns, 4) + rules(netns, 6))
    assert len(table(netns, 4, 100)) == 2

    def remove_all(routing: Routing) -> None:
        for exit_ in (UK, RU, DIRECT, GONE):
            routing.remove_exit(exit_)

    with_routing(netns, remove_all)
    with_routing(netns, remove_all)  # again: nothing left to remove is fine
    for version in (4, 6):
        assert rules(netns, version) == []
        assert table(netns, version, 100) == [] and table(netns, version, 101) == []


def host(network: str, interface: str) -> HostRoute:
    return HostRoute(ipaddress.ip_network(network), interface)


def test_host_routes_replace_delete_and_export(netns: str) -> None:
    routes = [host("203.0.113.7/32", "xuk"), host("2001:db8::7/128", "xru")]
    problems = with_routing(
        netns,
        lambda r: r.replace_host_routes(EXPORT, [*routes, host("203.0.113.9/32", "xgone")]),
    )
    assert problems == [
        "export table 200: 203.0.113.9/32 announced as a blackhole: interface xgone is down "
        "or missing (the mesh sends its traffic here, where the kill-switch drops it)"
    ]
    assert table(netns, 4, EXPORT) == [
        f"203.0.113.7 dev xuk proto {EXPORT_PROTO}",
        f"blackhole 203.0.113.9 proto {EXPORT_PROTO}",
    ]
    assert table(netns, 6, EXPORT)[0].startswith(f"2001:db8::7 dev xru proto {EXPORT_PROTO}")
    assert sorted(with_routing(netns, lambda r: r.exported_routes(EXPORT)), key=str) == sorted(
        [*routes, host("203.0.113.9/32", "")], key=str
    )
    with_routing(netns, lambda r: r.delete_host_routes(EXPORT, [host("203.0.113.9/32", "")]))

    # moved to another tunnel: replaced, not added beside
    with_routing(netns, lambda r: r.replace_host_routes(EXPORT, [host("203.0.113.7/32", "xru")]))
    assert table(netns, 4, EXPORT) == [f"203.0.113.7 dev xru proto {EXPORT_PROTO}"]

    with_routing(netns, lambda r: r.delete_host_routes(EXPORT, routes))
    with_routing(netns, lambda r: r.delete_host_routes(EXPORT, routes))  # gone already: fine
    assert table(netns, 4, EXPORT) == [] and table(netns, 6, EXPORT) == []
    assert with_routing(netns, lambda r: r.exported_routes(EXPORT)) == []


def test_exported_routes_are_only_ours(netns: str) -> None:
    ip(netns, "route", "add", "198.51.100.1/32", "dev", "xuk", "table", str(EXPORT))
    with_routing(netns, lambda r: r.replace_host_routes(EXPORT, [host("203.0.113.7/32", "xuk")]))
    assert with_routing(netns, lambda r: r.exported_routes(EXPORT)) == [
        host("203.0.113.7/32", "xuk")
    ]
    with_routing(netns, lambda r: r.delete_host_routes(EXPORT, [host("198.51.100.1/32", "xuk")]))
    assert table(netns, 4, EXPORT) == [  # not ours: kept
        "198.51.100.1 dev xuk",
        f"203.0.113.7 dev xuk proto {EXPORT_PROTO}",
    ]


def test_interface_index(netns: str) -> None:
    index = int(ip(netns, "-o", "link", "show", "dev", "xuk").split(":", 1)[0])
    assert with_routing(netns, lambda r: (r.interface_index("xuk"), r.interface_index("no"))) == (
        index,
        None,
    )

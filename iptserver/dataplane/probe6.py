"""The IPv6 way out of an exit's interface for its health probes.

An IPv4 probe needs nothing: a socket bound to a device (SO_BINDTODEVICE) whose route
lookup fails is sent on-link out of that device (see ``iptserver.health.probe``). IPv6
has no such fallback: the lookup of a bound socket takes only routes out of that device,
and none is there while the exit's table is failed over or blocked (``main`` never routes
by a tunnel). So each interface probed over IPv6 gets a default route of its own in
``PROBE_TABLE`` and a rule ``oif IFACE lookup PROBE_TABLE`` *after* ``main``: only traffic
bound to that interface that nothing else routes gets there, and a bound socket leaves by
its interface or not at all, so this can send nothing anywhere else.

The route's metric is the interface's index: one table holds every probed interface's
default route, and a bound lookup takes the one out of its own device. Routes out of an
interface that is deleted go with it; ``ensure`` (before each round) puts them back.
"""

from __future__ import annotations

import errno
import socket

from pyroute2 import IPRoute

from iptserver.dataplane.netlink import kernel_errors

PROBE_TABLE = 32801
PROBE_PRIORITY = 32801  # after main (32766): what main routes never gets here


class ProbeRoutes6:
    """The probe routes and rules this process made; ``remove`` takes them all away."""

    def __init__(self, netns: str | None = None) -> None:
        """``netns``: work in that network namespace (tests) rather than our own."""
        self._netns = netns
        self._interfaces: set[str] = set()

    def ensure(self, interface: str) -> None:
        """The rule and the route for probes out of ``interface`` (if it exists: a probe
        through a missing interface fails on its own). DataplaneError if the kernel
        refuses."""
        with IPRoute(netns=self._netns) as ip:
            found = ip.link_lookup(ifname=interface)
            if not found:
                return
            index = found[0]
            doing = f"cannot route IPv6 health probes out of {interface}"
            with kernel_errors(doing):
                ip.route(
                    "replace",
                    family=socket.AF_INET6,
                    dst="::/0",
                    oif=index,
                    table=PROBE_TABLE,
                    priority=index,
                )
            if interface in self._interfaces:
                return  # the rule names the interface: it outlives a remade one
            self._interfaces.add(interface)
            if not _rules(ip, interface):
                with kernel_errors(doing, fine={errno.EEXIST}):
                    ip.rule("add", **_rule(interface))

    def remove(self) -> None:
        """Delete the rules and routes ``ensure`` made (ones already gone are fine)."""
        if not self._interfaces:
            return
        with IPRoute(netns=self._netns) as ip:
            for interface in sorted(self._interfaces):
                for _ in range(_rules(ip, interface)):
                    with kernel_errors("cannot delete a health probe rule", fine={errno.ENOENT}):
                        ip.rule("del", **_rule(interface))
            with kernel_errors(f"cannot flush table {PROBE_TABLE}"):
                ip.flush_routes(table=PROBE_TABLE, family=socket.AF_INET6)
        self._interfaces.clear()


def _rule(interface: str) -> dict[str, object]:
    return {
        "family": socket.AF_INET6,
        "oifname": interface,
        "table": PROBE_TABLE,
        "priority": PROBE_PRIORITY,
    }


def _rules(ip: IPRoute, interface: str) -> int:
    """How many of our rules for ``interface`` there are (0 or 1, unless made by hand)."""
    return sum(
        1
        for rule in ip.get_rules(family=socket.AF_INET6)
        if rule.get_attr("FRA_OIFNAME") == interface
        and rule.get_attr("FRA_PRIORITY") == PROBE_PRIORITY
    )

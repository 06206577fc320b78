"""Policy routing over netlink: per exit an ``ip rule fwmark … lookup …`` and a table.

Every change is idempotent: a rule or route that is already there is left alone, so a
restart adds nothing twice.

The kill-switch: a tunnel exit's table holds, besides its default route, an
``unreachable default`` route with a high metric (IPv4 and IPv6). When the interface
disappears (the kernel deletes its routes) or the exit is blocked (``set_route``), the
lookup ends on that route and the packet is dropped: a table that holds no route at all
would let the rule lookup fall through to ``main`` and out of the host's own uplink.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence

from pyroute2 import IPRoute

from iptserver.dataplane.export import HostRoute
from iptserver.dataplane.links import link_state
from iptserver.dataplane.netlink import kernel_errors
from iptserver.dataplane.plan import MARK_MASK, ExitPlan
from iptserver.dataplane.route_netlink import RouteWire
from iptserver.errors import DataplaneError
from iptserver.schema.model import Route
from iptserver.schema.values import IPNetwork

MAIN_TABLE = 254
RESERVED_TABLES = frozenset({0, 253, 254, 255})  # unspec, default, main, local
KILL_SWITCH_METRIC = 4_000_000_000  # after any default route a table is given
RTN_UNICAST = 1
# The `proto` of the host routes iptserver exports (kernel.export_table): what is ours.
EXPORT_PROTO = 157
FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}
VERSIONS: dict[int, int] = {socket.AF_INET: 4, socket.AF_INET6: 6}
_GONE = frozenset({errno.ESRCH, errno.ENOENT})  # deleting a route that is not there


class Routing:
    def __init__(self) -> None:
        self._ip = IPRoute()
        self._wire = RouteWire()  # the exported tables' routes, many at a time

    def close(self) -> None:
        self._ip.close()
        self._wire.close()

    def interface_index(self, name: str) -> int | None:
        found = self._ip.link_lookup(ifname=name)
        return found[0] if found else None

    def install_exit(self, exit_: ExitPlan, via: ExitPlan | None) -> None:
        """The exit's rule and, for a tunnel, its table: the kill-switch and the default
        routes (v4 and v6) of ``via`` (the exit itself unless it is failed over; None:
        blocked).

        The rule and the kill-switch go in even when the interface is missing: its
        traffic is then dropped, not sent out of the host's own uplink."""
        try:
            if exit_.route is Route.INTERFACE:
                self.set_route(exit_, via)
            else:
                self.follow_main(exit_.table)
        finally:
            for family in FAMILIES.values():
                self._rule(exit_, family, exit_.table)

    def set_route(self, exit_: ExitPlan, via: ExitPlan | None) -> None:
        """Make the tunnel exit's table send its traffic by ``via``'s route: its own,
        another tunnel's (failover), the host's own gateway (a ``_DEFAULT`` exit: the table
        gets copies of main's default routes), or nowhere (None: blocked)."""
        for family in FAMILIES.values():
            self._kill_switch(exit_, family)
        if via is not None and via.route is Route.HOST_GATEWAY:
            self.follow_main(exit_.table)
            return
        index = None
        if via is not None:
            index = self.interface_index(via.interface)
            if index is None:
                for family in FAMILIES.values():
                    self._drop_defaults(exit_.table, family)
                raise DataplaneError(
                    f"exit {exit_.name}: interface {via.interface} does not exist; its "
                    "traffic is dropped until it is up"
                )
        for version, family in FAMILIES.items():
            if via is None or not self._default_route(exit_, via, family, version, index):
                self._drop_defaults(exit_.table, family)
            else:  # what a failover to the host gateway had copied there
                self._drop_defaults(exit_.table, family, keep=index)

    def follow_main(self, table: int) -> None:
        """Give ``table`` the default routes of ``main``, and only those: what the host
        gateway (``_DEFAULT``) exits route by. Not ``main`` itself: FRR puts the routes it
        imports from ``kernel.export_table`` there, and a host route to a tunnel would
        overrule an address the schema sends direct (or an exit failed over to direct).
        Routes added before stale ones are deleted, so the table is never empty."""
        if table in RESERVED_TABLES:
            return
        for family in FAMILIES.values():
            wanted = self._defaults(MAIN_TABLE, family)
            held = self._defaults(table, family)
            for route in wanted.keys() - held.keys():
                spec = {**wanted[route], "table": table}
                with kernel_errors(f"cannot copy main's default route to table {table}"):
                    self._ip.route("replace", **spec)
            for route in held.keys() - wanted.keys():
                spec = {**held[route], "table": table}
                with kernel_errors(f"cannot delete a route of table {table}", fine=_GONE):
                    self._ip.route("del", **spec)

    def _defaults(self, table: int, family: int) -> dict[tuple[object, ...], dict[str, object]]:
        """The table's default routes that lead somewhere (not a kill-switch), by their
        (interface, gateway, metric); multipath routes are left out."""
        routes: dict[tuple[object, ...], dict[str, object]] = {}
        for listed in self._wire.dump(VERSIONS[family], table, defaults=True):
            if listed.kind != RTN_UNICAST:
                continue
            oif, gateway, priority = listed.oif, listed.gateway, listed.priority
            if oif is None and gateway is None:
                continue
            spec: dict[str, object] = {"family": family, "dst": "default", "priority": priority}
            if oif is not None:
                spec["oif"] = oif
            if gateway is not None:
                spec["gateway"] = gateway
            routes[(oif, gateway, priority)] = spec
        return routes

    def _kill_switch(self, exit_: ExitPlan, family: int) -> None:
        doing = f"exit {exit_.name}: cannot add the kill-switch route to table {exit_.table}"
        with kernel_errors(doing):
            self._ip.route(
                "replace",
                table=exit_.table,
                family=family,
                dst="default",
                type="unreachable",
                priority=KILL_SWITCH_METRIC,
            )

    def _drop_defaults(self, table: int, family: int, keep: int | None = None) -> None:
        """Delete the table's default routes that lead somewhere (not the kill-switch),
        but the one out of interface ``keep`` that ``_default_route`` adds."""
        for (oif, _, _), spec in self._defaults(table, family).items():
            if keep is not None and oif == keep:
                continue
            with kernel_errors(f"cannot delete a route of table {table}", fine=_GONE):
                self._ip.route("del", **spec, table=table)

    def _flush(self, table: int, family: int) -> None:
        if table in RESERVED_TABLES:
            return  # a schema that named main (or local) as an exit's table
        routes = [listed.network for listed in self._wire.dump(VERSIONS[family], table)]
        if refused := self._wire.delete(table, 0, routes):
            raise DataplaneError(f"cannot flush table {table}: {', '.join(refused[:3])}")

    def _default_route(
        self, exit_: ExitPlan, via: ExitPlan, family: int, version: int, index: int | None
    ) -> bool:
        """Route the exit's table by ``via``; False when ``via`` has no route in this
        family (a next hop of the other family)."""
        route: dict[str, object] = {
            "table": exit_.table,
            "oif": index,
            "family": family,
            "dst": "default",
        }
        if via.via is not None:
            if (":" in via.via) != (version == 6):
                return False
            route["gateway"] = via.via
        doing = f"exit {exit_.name}: cannot route table {exit_.table} via {via.interface}"
        with kernel_errors(f"{doing} (IPv{version})"):
            self._ip.route("replace", **route)
        return True

    def _rule(self, exit_: ExitPlan, family: int, table: int) -> None:
        spec = {
            "family": family,
            "fwmark": exit_.mark,
            "fwmask": MARK_MASK,
            "table": table,
            "priority": exit_.priority,
        }
        for existing in self._rules(family, exit_.priority):
            if existing == (exit_.mark, table):
                return
            self._delete_rule(family, exit_.priority)
        with kernel_errors(f"exit {exit_.name}: cannot add ip rule", fine={errno.EEXIST}):
            self._ip.rule("add", **spec)

    def _rules(self, family: int, priority: int) -> list[tuple[int, int]]:
        found = []
        for rule in self._ip.get_rules(family=family):
            if rule.get_attr("FRA_PRIORITY") == priority:
                table = rule.get_attr("FRA_TABLE") or rule["table"]
                found.append((rule.get_attr("FRA_FWMARK"), table))
        return found

    def _delete_rule(self, family: int, priority: int) -> None:
        with kernel_errors(f"cannot delete ip rule {priority}", fine={errno.ENOENT}):
            self._ip.rule("del", family=family, priority=priority)

    def remove_exit(self, exit_: ExitPlan, *, rule: bool = True, routes: bool = True) -> None:
        """Delete the exit's rule and flush its table's routes (each unless told not to)."""
        for family in FAMILIES.values():
            while rule and self._rules(family, exit_.priority):
                self._delete_rule(family, exit_.priority)
            if routes:
                self._flush(exit_.table, family)

    def replace_host_routes(self, table: int, routes: Sequence[HostRoute]) -> list[str]:
        """Install (or move to another interface) host routes in ``table``.

        A route whose interface is missing or down goes in as a blackhole: OSPF still
        announces it, so the mesh (an office) sends that traffic here, where the exit's
        kill-switch drops it, rather than out of its own uplink; ``relink`` puts the
        interface's route back. Returns one problem per such interface."""
        problems = []
        by_interface: dict[str, list[HostRoute]] = {}
        for route in routes:
            by_interface.setdefault(route.interface, []).append(route)
        for interface, own in by_interface.items():
            index = link_state(interface)
            if index is None:
                shown = ", ".join(str(r.network) for r in own[:3])
                more = f" and {len(own) - 3} more" if len(own) > 3 else ""
                problems.append(
                    f"export table {table}: {shown}{more} announced as a blackhole: "
                    f"interface {interface} is down or missing (the mesh sends its "
                    "traffic here, where the kill-switch drops it)"
                )
            wanted = [(r.network, index) for r in own]
            copies = [(net, oif) for net, oif in wanted if _mirrored(net, table)]
            refused = self._wire.replace(MAIN_TABLE, EXPORT_PROTO, copies)
            refused += self._wire.replace(table, EXPORT_PROTO, wanted)
            problems += [f"export table {table}: cannot route {p}" for p in refused]
        return problems

    def reannounce_host_routes(self, table: int, routes: Sequence[HostRoute]) -> list[str]:
        """Delete host routes from ``table`` and add them again, as new routes: zebra
        takes an imported route out of an interface it did not yet take for up as
        inactive, and neither a replace nor a stand-in route at another metric makes it
        look again (it keys imported routes by prefix). The mesh misses the route for
        the moment between the two. Routes out of an interface that is down or missing
        become blackholes, announced the same way."""
        interfaces = {r.interface for r in routes}
        up = {name for name in interfaces if link_state(name) is not None}
        lasting = [r for r in routes if r.interface in up]
        self.delete_host_routes(table, lasting)
        problems = self.replace_host_routes(table, lasting)
        # The kernel dropped the routes of a gone interface without a word to zebra: it
        # holds them as inactive until it hears them deleted. Put each in, delete it,
        # and put it in again.
        down = [r for r in routes if r.interface not in up]
        self.replace_host_routes(table, down)
        self.delete_host_routes(table, down)
        return problems + self.replace_host_routes(table, down)

    def delete_host_routes(self, table: int, routes: Sequence[HostRoute]) -> None:
        """Delete host routes from ``table`` (ones already gone are fine)."""
        networks = [r.network for r in routes]
        refused = self._wire.delete(
            MAIN_TABLE, EXPORT_PROTO, [n for n in networks if _mirrored(n, table)]
        )
        refused += self._wire.delete(table, EXPORT_PROTO, networks)
        if refused:
            shown = ", ".join(refused[:3])
            raise DataplaneError(f"export table {table}: cannot delete routes: {shown}")

    def exported_routes(self, table: int) -> list[HostRoute]:
        """The host routes of ours in ``table`` (left by an earlier run, or this one)."""
        found = []
        names: dict[int, str] = {}
        for version in FAMILIES:
            for listed in self._wire.dump(version, table, EXPORT_PROTO):
                if listed.oif is None:  # a blackhole, while its interface is down or missing
                    name = ""
                else:
                    if listed.oif not in names:
                        try:
                            names[listed.oif] = socket.if_indextoname(listed.oif)
                        except OSError:
                            names[listed.oif] = str(listed.oif)
                    name = names[listed.oif]
                found.append(HostRoute(listed.network, name))
        return found


def _mirrored(network: IPNetwork, table: int) -> bool:
    """Whether an exported route is also written to ``main``: an IPv6 /128. FRR 8.4
    imports no IPv6 table (zebra has no ``ipv6 import-table``, ospf6d no ``redistribute
    table``), so the entry's ospf6d takes them from main (``redistribute kernel``, /128s
    only), where zebra would have put imported routes anyway."""
    return network.version == 6 and network.prefixlen == 128 and table != MAIN_TABLE

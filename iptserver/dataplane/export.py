"""Which DNS-learned host routes the export table holds, and until when (no I/O).

With ``kernel.export_table`` set, every IP a domain rule sends through a tunnel exit is
also a host route ``IP dev EXIT_IFACE table N``, which FRR imports (zebra
``ip import-table N``) and announces to the mesh over OSPF. An ipset entry expires by
itself (it has a kernel timeout); a route does not, so this table keeps each route's
deadline: a repeat answer pushes it out, and ``expired`` hands back what must go.
Deadlines are ``time.monotonic()`` seconds, given by the caller.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from iptserver.schema.values import IPNetwork


@dataclass(frozen=True, slots=True)
class HostRoute:
    network: IPNetwork  # a learned /32 or /128; for send: policy, a rule's aggregated net
    interface: str  # the exit's tunnel interface


class ExportTable:
    """The routes the export table must hold, each with its deadline."""

    def __init__(self) -> None:
        self._routes: dict[IPNetwork, tuple[str, float]] = {}

    def __len__(self) -> int:
        return len(self._routes)

    def routes(self) -> list[HostRoute]:
        return [HostRoute(net, iface) for net, (iface, _) in self._routes.items()]

    def deadline(self, network: IPNetwork) -> float | None:
        found = self._routes.get(network)
        return found[1] if found is not None else None

    def refresh(self, wanted: Iterable[tuple[HostRoute, float]]) -> list[HostRoute]:
        """Hold each route until at least its deadline; return the routes the kernel
        lacks (new ones, and known IPs whose exit moved to another interface)."""
        changed: dict[IPNetwork, HostRoute] = {}
        for route, deadline in wanted:
            known = self._routes.get(route.network)
            if known is None or known[0] != route.interface:
                changed[route.network] = route
                self._routes[route.network] = (route.interface, deadline)
            elif deadline > known[1]:
                self._routes[route.network] = (known[0], deadline)
        return list(changed.values())

    def expired(self, now: float) -> list[HostRoute]:
        """Forget and return the routes whose deadline has passed."""
        gone = [
            HostRoute(net, iface) for net, (iface, until) in self._routes.items() if until <= now
        ]
        for route in gone:
            del self._routes[route.network]
        return gone

    def next_deadline(self) -> float | None:
        return min((until for _, until in self._routes.values()), default=None)

    def clear(self) -> list[HostRoute]:
        """Forget every route; return them (to delete from the kernel)."""
        gone = self.routes()
        self._routes.clear()
        return gone

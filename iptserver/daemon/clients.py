"""Who the proxy answers, kept in step with the schema and the ingress interfaces.

Clients are the networks of the ingress interfaces (read from the kernel), the mesh's
subnets, ``dns.allow`` and this host. An ingress interface may come up after start (a
WireGuard container restarted): when an address the gate does not know is refused, the
interfaces are read again (at most every ``REREAD`` seconds, off the answer path).
"""

from __future__ import annotations

import asyncio
import logging
import time

from iptserver.dataplane.links import interface_networks
from iptserver.dns.clients import ClientGate, RateLimit
from iptserver.schema.model import Schema

log = logging.getLogger("iptserver.daemon")

REREAD = 5.0  # seconds between two reads of the ingress interfaces' networks


class ProxyClients:
    """``await gate(schema)`` at start and on each reload: the gate for the proxy."""

    def __init__(self) -> None:
        self._ingress: tuple[str, ...] = ()
        self._gate: ClientGate | None = None
        self._read_at = 0.0
        self._reading: asyncio.Task[None] | None = None

    async def gate(self, schema: Schema, *, quiet: bool = False) -> ClientGate:
        self._ingress = tuple(schema.ingress)
        # In a thread: pyroute2's IPRoute runs an event loop of its own.
        networks = await asyncio.to_thread(interface_networks, self._ingress)
        self._read_at = time.monotonic()
        limit = schema.dns.rate_limit
        gate = ClientGate(
            (*networks, *schema.never_diverted(), *schema.dns.allow),
            RateLimit(limit.client, limit.network, limit.burst),
            self._stranger,
        )
        if self._gate is not None:  # the counts go on across reloads (metrics counters)
            gate.limited = self._gate.limited
        self._gate = gate
        if not quiet:
            log.info(
                "DNS clients: this host, %s; other addresses get REFUSED; at most %s "
                "queries/s a client, %s a /24 or /56",
                ", ".join(map(str, gate.allow)) or "no other network",
                limit.client or "unlimited",
                limit.network or "unlimited",
            )
        return gate

    def _stranger(self) -> None:
        now = time.monotonic()
        if not self._ingress or self._reading is not None or now - self._read_at < REREAD:
            return
        self._read_at = now
        self._reading = asyncio.get_running_loop().create_task(self._reread())

    async def _reread(self) -> None:
        try:
            networks = await asyncio.to_thread(interface_networks, self._ingress)
        except OSError as e:
            log.warning("cannot read the ingress interfaces' networks: %s", e)
            return
        finally:
            self._reading = None
        gate = self._gate
        if gate is None:
            return
        new = [net for net in networks if net not in gate.allow]
        if new:
            log.info(
                "DNS clients: ingress networks %s answered from now on", ", ".join(map(str, new))
            )
            gate.allow_also(new)

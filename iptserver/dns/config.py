"""The proxy's settings, as the daemon builds them from the schema and the command line."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from iptserver.schema.values import Endpoint, IPAddress


@dataclass(frozen=True, slots=True)
class DnsProxyConfig:
    """Settings of :class:`~iptserver.dns.proxy.DnsProxy`; checked when built."""

    # (address, port) pairs, stored as Endpoints. listen: UDP and TCP on each (port 0
    # picks one port free for both); upstream: resolvers, in order (the last good one first)
    listen: tuple[tuple[IPAddress, int], ...]
    upstream: tuple[tuple[IPAddress, int], ...]
    timeout: float = 2.0  # seconds a query may spend on upstreams before SERVFAIL
    upstream_timeout: float = 1.0  # seconds one upstream gets before the next is tried
    sink_timeout: float = 1.0  # seconds the learner may take to program an answer
    fail_closed: bool = False  # sink failed: SERVFAIL (True) or release the answer (False)
    fail_open_ttl: int = 30  # TTL cap of answers released although the sink failed
    max_tcp_clients: int = 64  # concurrent TCP connections; more are closed at once
    max_tcp_per_client: int = 16  # of those, from one address
    tcp_idle_timeout: float = 10.0  # seconds a TCP connection may sit without a query
    tcp_pipeline: int = 16  # queries of one TCP connection in flight at once
    max_inflight: int = 1024  # queries in flight; UDP queries beyond it are dropped
    reuse_port: bool = False  # SO_REUSEPORT: worker processes share the listen addresses

    @property
    def listen_endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(Endpoint(*e) for e in self.listen)

    @property
    def upstream_endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(Endpoint(*e) for e in self.upstream)

    def __post_init__(self) -> None:
        listen = _endpoints("listen", self.listen, lowest_port=0)
        upstream = _endpoints("upstream", self.upstream, lowest_port=1)
        object.__setattr__(self, "listen", listen)
        object.__setattr__(self, "upstream", upstream)
        for name in ("timeout", "upstream_timeout", "sink_timeout", "tcp_idle_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name} must be a number of seconds above 0, not {value!r}")
        for name in ("max_tcp_clients", "max_tcp_per_client", "tcp_pipeline", "max_inflight"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")
        if not isinstance(self.fail_open_ttl, int) or self.fail_open_ttl < 0:
            raise ValueError(
                f"fail_open_ttl must be seconds, 0 or more, not {self.fail_open_ttl!r}"
            )


def _endpoints(
    name: str, value: Sequence[tuple[IPAddress, int]], lowest_port: int
) -> tuple[Endpoint, ...]:
    if isinstance(value, str | bytes) or not value:
        raise ValueError(f"{name} must list at least one (address, port)")
    endpoints = []
    for item in value:
        try:
            address, port = item
        except (TypeError, ValueError):
            raise ValueError(f"{name}: {item!r} is not an (address, port) pair") from None
        if not isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
            raise ValueError(f"{name}: {address!r} is not an IPv4Address or IPv6Address")
        if not isinstance(port, int) or not lowest_port <= port <= 65535:
            raise ValueError(f"{name}: port {port!r} must be {lowest_port} to 65535")
        endpoints.append(Endpoint(address, port))
    return tuple(endpoints)

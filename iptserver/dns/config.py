"""The proxy's settings, as the daemon builds them from the schema and the command line."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from iptserver.schema.values import IPAddress

DNS_PORT = 53


class Endpoint(NamedTuple):
    """An address and port; a plain ``(IPAddress, port)`` tuple works wherever one is asked."""

    address: IPAddress
    port: int = DNS_PORT

    def __str__(self) -> str:
        if self.address.version == 6:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"

    @classmethod
    def parse(cls, text: str, default_port: int = DNS_PORT) -> Endpoint:
        """``ADDR``, ``ADDR:PORT``, ``[ADDR6]`` or ``[ADDR6]:PORT`` (as --listen takes it)."""
        host, port = text.strip(), str(default_port)
        if host.startswith("["):
            host, bracket, rest = host[1:].partition("]")
            if not bracket or (rest and not rest.startswith(":")):
                raise ValueError(f"{text!r} is not ADDR:PORT or [ADDR6]:PORT")
            if rest:
                port = rest[1:]
        elif host.count(":") == 1:
            host, port = host.split(":")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{text!r}: {host!r} is not an IP address") from None
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{text!r}: port {port!r} is not a number from 0 to 65535")
        return cls(address, int(port))


@dataclass(frozen=True, slots=True)
class DnsProxyConfig:
    """Settings of :class:`~iptserver.dns.proxy.DnsProxy`; checked when built."""

    # (address, port) pairs, stored as Endpoints. listen: UDP and TCP on each (port 0
    # picks one port free for both); upstream: resolvers, in order (the last good one first)
    listen: tuple[tuple[IPAddress, int], ...]
    upstream: tuple[tuple[IPAddress, int], ...]
    timeout: float = 2.0  # seconds a query may spend on upstreams before SERVFAIL
    upstream_timeout: float = 1.0  # seconds one upstream gets before the next is tried
    sink_timeout: float = 1.0  # seconds the router may take to program an answer
    fail_closed: bool = False  # sink failed: SERVFAIL (True) or release the answer (False)
    fail_open_ttl: int = 30  # TTL cap of answers released although the sink failed
    max_tcp_clients: int = 64  # concurrent TCP connections; more are closed at once
    tcp_idle_timeout: float = 10.0  # seconds a TCP connection may sit without a query
    tcp_pipeline: int = 16  # queries of one TCP connection in flight at once
    max_inflight: int = 1024  # queries in flight; UDP queries beyond it are dropped

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
        for name in ("max_tcp_clients", "tcp_pipeline", "max_inflight"):
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

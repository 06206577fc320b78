"""Start authorities and a proxy on loopback for one test, inside one asyncio.run."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from iptserver.dns import DnsProxy, DnsProxyConfig, Endpoint, Transport
from iptserver.lab.authority import Authority, Mode
from tests.dns.sinks import RecordingSink

T = TypeVar("T")

PROXY_HOST = ipaddress.ip_address("127.0.0.1")
AUTHORITY_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
# Short timeouts keep the failure tests fast; a loopback authority answers in microseconds.
FAST = {"timeout": 1.0, "upstream_timeout": 0.3, "sink_timeout": 0.5}


def run(scenario: Callable[[], Awaitable[T]], limit: float = 15.0) -> T:
    """Run one test scenario in a fresh event loop; a hang fails instead of blocking."""

    async def bounded() -> T:
        async with asyncio.timeout(limit):
            return await scenario()

    return asyncio.run(bounded())


def closed_endpoint(host: str = "127.0.0.5") -> Endpoint:
    """An address and port where nothing listens (UDP gets ICMP port unreachable)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
    return Endpoint(ipaddress.ip_address(host), port)


@dataclass
class Lab:
    proxy: DnsProxy
    authorities: list[Authority]
    sink: RecordingSink

    @property
    def udp(self) -> Endpoint:
        return next(e for t, e in self.proxy.addresses if t is Transport.UDP)

    @property
    def tcp(self) -> Endpoint:
        return next(e for t, e in self.proxy.addresses if t is Transport.TCP)

    @property
    def authority(self) -> Authority:
        return self.authorities[0]


@contextlib.asynccontextmanager
async def lab(
    *modes: Mode | Endpoint,
    sink: RecordingSink | None = None,
    listen: Sequence[Endpoint] = (Endpoint(PROXY_HOST, 0),),
    **settings: Any,
) -> AsyncIterator[Lab]:
    """Authorities in the given modes (an Endpoint: use it as is) behind a proxy."""
    authorities: list[Authority] = []
    upstreams: list[Endpoint] = []
    async with contextlib.AsyncExitStack() as stack:
        for host, mode in zip(AUTHORITY_HOSTS, modes or (Mode.ANSWER,), strict=False):
            if isinstance(mode, Endpoint):
                upstreams.append(mode)
                continue
            authority = await stack.enter_async_context(Authority(host, mode))
            authorities.append(authority)
            upstreams.append(authority.endpoint)
        config = DnsProxyConfig(
            listen=tuple(listen), upstream=tuple(upstreams), **{**FAST, **settings}
        )
        sink = RecordingSink() if sink is None else sink
        proxy = await stack.enter_async_context(DnsProxy(config, sink))
        yield Lab(proxy, authorities, sink)

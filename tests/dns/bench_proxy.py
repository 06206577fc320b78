"""Queries per second on loopback: straight to the test authority, and through the proxy.

    .venv/bin/python -m tests.dns.bench_proxy [--seconds 3] [--concurrency 64]

The authority, the proxy (with a sink that routes nothing) and the client each run in
their own process, so the figures are not one event loop sharing itself three ways.
Both runs happen back to back on the same machine; only their ratio means much.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import multiprocessing
import time
from collections.abc import Sequence
from typing import Any

from iptserver.dns import DnsProxy, DnsProxyConfig, Endpoint
from iptserver.lab.authority import serve_forever
from iptserver.lab.canned import many
from iptserver.schema.values import IPAddress
from tests.dns.client import query, udp_socket

AUTHORITY = "127.0.0.2"
PROXY = "127.0.0.1"


class PassSink:
    """Routes nothing, allows the answer's own TTL: the proxy's cost alone."""

    async def learn(
        self,
        names: Sequence[str],
        addresses: Sequence[IPAddress],
        ttl: int,
        client: str | None = None,
    ) -> int:
        return ttl


def _serve_proxy(upstream_port: int, port_out: Any) -> None:
    async def main() -> None:
        config = DnsProxyConfig(
            listen=(Endpoint(ipaddress.ip_address(PROXY), 0),),
            upstream=(Endpoint(ipaddress.ip_address(AUTHORITY), upstream_port),),
        )
        async with DnsProxy(config, PassSink()) as proxy:
            port_out.put(proxy.addresses[0][1].port)
            await asyncio.Event().wait()

    asyncio.run(main())


async def _load(target: Endpoint, seconds: float, concurrency: int) -> tuple[int, int]:
    """Each worker keeps one query outstanding; returns (answered, timed out)."""
    loop = asyncio.get_running_loop()
    stop = loop.time() + seconds
    answered = lost = 0

    async def worker(w: int) -> None:
        nonlocal answered, lost
        with udp_socket(target) as sock:
            i = 0
            while loop.time() < stop:
                await loop.sock_sendall(sock, query(many((w * 37 + i) % 10_000)))
                i += 1
                try:
                    async with asyncio.timeout(1.0):
                        await loop.sock_recv(sock, 65535)
                    answered += 1
                except TimeoutError:
                    lost += 1

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return answered, lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()

    ctx = multiprocessing.get_context("fork")
    ports: Any = ctx.Queue()
    authority = ctx.Process(target=serve_forever, args=(AUTHORITY, ports), daemon=True)
    authority.start()
    authority_port = ports.get(timeout=10)
    proxy = ctx.Process(target=_serve_proxy, args=(authority_port, ports), daemon=True)
    proxy.start()
    proxy_port = ports.get(timeout=10)
    try:
        results = {}
        for label, host, port in (
            ("direct to the authority", AUTHORITY, authority_port),
            ("through the proxy", PROXY, proxy_port),
        ):
            target = Endpoint(ipaddress.ip_address(host), port)
            started = time.monotonic()
            answered, lost = asyncio.run(_load(target, args.seconds, args.concurrency))
            rate = answered / (time.monotonic() - started)
            results[label] = rate
            print(f"{label:>24}: {rate:8.0f} queries/s ({lost} unanswered)")
        ratio = results["through the proxy"] / results["direct to the authority"]
        print(f"{'proxy / direct':>24}: {ratio:8.2f}")
    finally:
        proxy.terminate()
        authority.terminate()


if __name__ == "__main__":
    main()

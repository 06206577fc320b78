"""The proxy's sockets on real loopback: UDP datagrams, TCP length framing (also split
across segments), per-connection pipelining slots, the connection and in-flight limits.

The answer function here is a small echo, so these tests see only what the listeners do.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from iptserver.dns import DnsListenError, DnsProxyConfig, Endpoint, Transport
from iptserver.dns.counters import DnsCounters
from iptserver.dns.listeners import Listeners, peer_text
from tests.dns import client
from tests.dns.client import frame, tcp_read
from tests.dns.harness import PROXY_HOST, run

UPSTREAM = (ipaddress.ip_address("127.0.0.1"), 53)  # required by the config, never asked


@dataclass
class Echo:
    """Answers ``b"re:" + wire``; ``b"drop"`` gets no reply; ``b"hold…"`` waits for
    :attr:`release`. Records each call and how many run at once."""

    calls: list[tuple[bytes, str, Transport]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    running: int = 0
    most_running: int = 0
    cancelled: int = 0

    async def __call__(self, wire: bytes, peer: str, transport: Transport) -> bytes | None:
        self.calls.append((wire, peer, transport))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if wire.startswith(b"hold"):
                await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1
        return None if wire == b"drop" else b"re:" + wire


@dataclass
class Bench:
    listeners: Listeners
    echo: Echo
    counters: DnsCounters

    def endpoint(self, transport: Transport) -> Endpoint:
        return next(e for t, e in self.listeners.addresses if t is transport)


@contextlib.asynccontextmanager
async def bench(**settings: Any) -> AsyncIterator[Bench]:
    config = DnsProxyConfig(listen=((PROXY_HOST, 0),), upstream=(UPSTREAM,), **settings)
    echo, counters = Echo(), DnsCounters()
    listeners = Listeners(config, echo, counters)
    await listeners.start()
    try:
        yield Bench(listeners, echo, counters)
    finally:
        await listeners.close()


async def until(condition: Any, limit: float = 2.0) -> None:
    async with asyncio.timeout(limit):
        while not condition():
            await asyncio.sleep(0.01)


def test_udp_and_tcp_share_the_port_chosen() -> None:
    async def scenario() -> None:
        async with bench() as b:
            (udp_kind, udp), (tcp_kind, tcp) = b.listeners.addresses
            assert (udp_kind, tcp_kind) == (Transport.UDP, Transport.TCP)
            assert udp == tcp and udp.address == PROXY_HOST and udp.port != 0

    run(scenario)


def test_udp_datagram_is_answered_to_its_sender() -> None:
    async def scenario() -> None:
        async with bench() as b:
            with client.udp_socket(b.endpoint(Transport.UDP)) as sock:
                sock.send(b"hello")
                loop = asyncio.get_running_loop()
                async with asyncio.timeout(2):
                    assert await loop.sock_recv(sock, 512) == b"re:hello"
                peer = peer_text(sock.getsockname())
            assert b.echo.calls == [(b"hello", peer, Transport.UDP)]

    run(scenario)


def test_udp_no_answer_sends_nothing() -> None:
    async def scenario() -> None:
        async with bench() as b:
            assert await client.udp_silence(b.endpoint(Transport.UDP), b"drop", 0.15)
            assert len(b.echo.calls) == 1

    run(scenario)


# (id, the bytes of two framed queries as the client's separate writes)
SEGMENTS = [
    pytest.param([frame(b"one") + frame(b"two")], id="two-frames-one-write"),
    pytest.param([b"\x00", b"\x03one", frame(b"two")], id="length-prefix-split"),
    pytest.param([b"\x00\x03o", b"n", b"e\x00", b"\x03two"], id="bodies-split"),
    pytest.param([bytes([b]) for b in frame(b"one") + frame(b"two")], id="byte-by-byte"),
]


@pytest.mark.parametrize("segments", SEGMENTS)
def test_tcp_frames_whatever_the_segments(segments: list[bytes]) -> None:
    async def scenario() -> None:
        async with bench() as b:
            reader, writer = await client.tcp_connect(b.endpoint(Transport.TCP))
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for segment in segments:
                writer.write(segment)
                await writer.drain()
                await asyncio.sleep(0.02)  # each write its own segment
            assert {await tcp_read(reader), await tcp_read(reader)} == {b"re:one", b"re:two"}
            writer.close()
            assert [(w, t) for w, _, t in b.echo.calls] == [
                (b"one", Transport.TCP),
                (b"two", Transport.TCP),
            ]

    run(scenario)


def test_tcp_queries_are_answered_after_the_client_half_closes() -> None:
    async def scenario() -> None:
        async with bench() as b:
            reader, writer = await client.tcp_connect(b.endpoint(Transport.TCP))
            writer.write(frame(b"last"))
            writer.write_eof()
            assert await tcp_read(reader) == b"re:last"
            assert await asyncio.wait_for(reader.read(), 2.0) == b""  # then closed
            writer.close()

    run(scenario)


@pytest.mark.parametrize("pipeline", [1, 3], ids=["one-slot", "three-slots"])
def test_tcp_pipeline_slots_bound_the_queries_in_flight(pipeline: int) -> None:
    async def scenario() -> None:
        async with bench(tcp_pipeline=pipeline) as b:
            reader, writer = await client.tcp_connect(b.endpoint(Transport.TCP))
            writer.write(b"".join(frame(b"hold%d" % i) for i in range(5)))
            await until(lambda: b.echo.running == pipeline)
            await asyncio.sleep(0.1)  # no more start while the slots are taken
            assert len(b.echo.calls) == pipeline
            b.echo.release.set()
            replies = {await tcp_read(reader) for _ in range(5)}
            assert replies == {b"re:hold%d" % i for i in range(5)}
            assert b.echo.most_running == pipeline
            writer.close()

    run(scenario)


def test_tcp_connections_beyond_the_limit_are_closed_at_once() -> None:
    async def scenario() -> None:
        async with bench(max_tcp_clients=1) as b:
            tcp = b.endpoint(Transport.TCP)
            held_reader, held_writer = await client.tcp_connect(tcp)
            await asyncio.sleep(0.05)
            reader, writer = await client.tcp_connect(tcp)
            assert await asyncio.wait_for(reader.read(), 2.0) == b""
            writer.close()
            assert b.counters.tcp_refused == 1
            held_writer.write(frame(b"still"))  # the one open still works
            assert await tcp_read(held_reader) == b"re:still"
            held_writer.close()

    run(scenario)


# what the client sends before it closes: the start of a frame, never a whole one
CUT_SHORT = [
    pytest.param(b"\x00", id="half-a-length-prefix"),
    pytest.param(b"\x00\x10abc", id="part-of-a-query"),
]


@pytest.mark.parametrize("data", CUT_SHORT)
def test_tcp_frame_cut_short_is_counted_as_dropped(data: bytes) -> None:
    async def scenario() -> None:
        async with bench() as b:
            reader, writer = await client.tcp_connect(b.endpoint(Transport.TCP))
            writer.write(data)
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 2.0) == b""
            writer.close()
            assert (b.counters.queries, b.counters.dropped) == (1, 1)
            assert b.echo.calls == []

    run(scenario)


def test_idle_tcp_connection_is_closed_without_counting() -> None:
    async def scenario() -> None:
        async with bench(tcp_idle_timeout=0.1) as b:
            reader, _writer = await client.tcp_connect(b.endpoint(Transport.TCP))
            assert await asyncio.wait_for(reader.read(), 2.0) == b""
            assert (b.counters.queries, b.counters.dropped) == (0, 0)

    run(scenario)


def test_udp_queries_beyond_max_inflight_are_dropped() -> None:
    async def scenario() -> None:
        async with bench(max_inflight=1) as b:
            udp = b.endpoint(Transport.UDP)
            with client.udp_socket(udp) as sock:
                sock.send(b"hold")
                await until(lambda: b.echo.running == 1)
                sock.send(b"over")
                await until(lambda: b.counters.dropped == 1)
                b.echo.release.set()
                loop = asyncio.get_running_loop()
                async with asyncio.timeout(2):
                    assert await loop.sock_recv(sock, 512) == b"re:hold"
            assert [w for w, _, _ in b.echo.calls] == [b"hold"]
            assert b.counters.queries == 1  # the listeners count only what they drop

    run(scenario)


def test_close_cancels_queries_in_flight_and_closes_the_port() -> None:
    async def scenario() -> None:
        async with bench() as b:
            udp = b.endpoint(Transport.UDP)
            reader, writer = await client.tcp_connect(b.endpoint(Transport.TCP))
            writer.write(frame(b"hold-tcp"))
            with client.udp_socket(udp) as sock:
                sock.send(b"hold-udp")
                await until(lambda: b.echo.running == 2)
            await b.listeners.close()
            assert b.echo.cancelled == 2
            assert b.listeners.addresses == ()
            assert await asyncio.wait_for(reader.read(), 2.0) == b""
            writer.close()
            with pytest.raises(ConnectionRefusedError):  # closed: the kernel refuses
                await client.udp_exchange(udp, b"after-close", 1.0)

    run(scenario)


def test_a_failed_address_releases_those_already_bound() -> None:
    async def scenario() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
            taken.bind(("127.0.0.1", 0))
            port = taken.getsockname()[1]
            listen = ((ipaddress.ip_address("127.0.0.2"), 0), (PROXY_HOST, port))
            config = DnsProxyConfig(listen=listen, upstream=(UPSTREAM,))
            listeners = Listeners(config, Echo(), DnsCounters())
            with pytest.raises(DnsListenError, match=rf"UDP 127\.0\.0\.1:{port}.*in use"):
                await listeners.start()
            assert listeners.addresses == ()

    run(scenario)


@pytest.mark.parametrize(
    ("addr", "text"),
    [
        (("192.0.2.1", 5353), "192.0.2.1:5353"),
        (("2001:db8::1", 5353, 0, 0), "[2001:db8::1]:5353"),
        (None, "None"),
    ],
    ids=["v4", "v6", "unknown"],
)
def test_peer_text(addr: object, text: str) -> None:
    assert peer_text(addr) == text

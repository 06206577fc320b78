"""A stub resolver's side of the wire: build queries, send them over UDP or TCP."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Sequence

from dnslib import EDNS0, QTYPE, DNSRecord, EDNSOption

from iptserver.schema.values import Endpoint

TIMEOUT = 3.0


def query(
    name: str,
    qtype: str = "A",
    *,
    edns: int | None = None,
    options: Sequence[tuple[int, bytes]] = (),
    qid: int | None = None,
) -> bytes:
    record = DNSRecord.question(name, qtype)
    if qid is not None:
        record.header.id = qid
    if edns is not None:
        record.add_ar(EDNS0(udp_len=edns, opts=[EDNSOption(c, d) for c, d in options]))
    return bytes(record.pack())


def parse(wire: bytes) -> DNSRecord:
    return DNSRecord.parse(wire)


def family(endpoint: Endpoint) -> socket.AddressFamily:
    return socket.AF_INET6 if endpoint.address.version == 6 else socket.AF_INET


def udp_socket(endpoint: Endpoint) -> socket.socket:
    sock = socket.socket(family(endpoint), socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.connect((str(endpoint.address), endpoint.port))
    return sock


async def udp_exchange(endpoint: Endpoint, wire: bytes, timeout: float = TIMEOUT) -> bytes:
    """Send one datagram, return the first reply (TimeoutError if none comes)."""
    reply, _ = await udp_exchange_timed(endpoint, wire, timeout)
    return reply


async def udp_exchange_timed(
    endpoint: Endpoint, wire: bytes, timeout: float = TIMEOUT
) -> tuple[bytes, float]:
    """The reply and the time.monotonic() it arrived."""
    loop = asyncio.get_running_loop()
    with udp_socket(endpoint) as sock:
        await loop.sock_sendall(sock, wire)
        async with asyncio.timeout(timeout):
            reply = await loop.sock_recv(sock, 65535)
        return reply, time.monotonic()


async def udp_silence(endpoint: Endpoint, wire: bytes, wait: float = 0.3) -> bool:
    """True if nothing comes back within ``wait`` seconds."""
    try:
        await udp_exchange(endpoint, wire, wait)
    except TimeoutError:
        return True
    return False


async def tcp_connect(
    endpoint: Endpoint,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(str(endpoint.address), endpoint.port)


async def tcp_read(reader: asyncio.StreamReader, timeout: float = TIMEOUT) -> bytes:
    async with asyncio.timeout(timeout):
        length = int.from_bytes(await reader.readexactly(2), "big")
        return await reader.readexactly(length)


def frame(wire: bytes) -> bytes:
    return len(wire).to_bytes(2, "big") + wire


async def tcp_exchange(
    endpoint: Endpoint, wires: Sequence[bytes], timeout: float = TIMEOUT
) -> list[bytes]:
    """Send every query on one connection, return the replies in the order they came."""
    reader, writer = await tcp_connect(endpoint)
    try:
        writer.write(b"".join(frame(w) for w in wires))
        await writer.drain()
        return [await tcp_read(reader, timeout) for _ in wires]
    finally:
        writer.close()


def qtype(name: str) -> int:
    return int(getattr(QTYPE, name))

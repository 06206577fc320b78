"""The lab's DNS server: answers for ``zones.ZONE`` over UDP and TCP, in ``internet``.

It stands in for the recursor the entry forwards to, so it answers like one: CNAMEs are
followed inside the zone data and the whole chain comes back with the final records, each
with its own TTL; unknown names are NXDOMAIN with an SOA (negative caching). A UDP answer
bigger than the client can take (512 bytes without EDNS, else its EDNS size) comes back
truncated with TC set, so a client's TCP fallback can be tested.

``respond`` and ``udp_payload`` are pure and unit-testable; ``main`` serves them.
Run as ``python -m iptserver.lab.authority --listen 203.0.113.53 --listen 2001:db8:ff::53``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import struct
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import cast

from dnslib import (
    AAAA,
    CNAME,
    EDNS0,
    QTYPE,
    RCODE,
    RR,
    SOA,
    A,
    DNSError,
    DNSLabel,
    DNSRecord,
)

from iptserver.lab.zones import BENCH_ZONE, NEGATIVE_TTL, ZONE, Record, synthetic

log = logging.getLogger("iptserver.lab.authority")

MAX_CHAIN = 8  # CNAME hops followed before giving up (a loop in the data)
CLASSIC_UDP = 512  # RFC 1035: the UDP limit for a query without EDNS
OUR_EDNS_SIZE = 1232  # what we advertise back (the DNS flag day 2020 value)
TCP_IDLE = 10.0  # seconds a TCP client may stay idle between queries
# Python 3.11's socket module has no IP_FREEBIND (3.12 adds it); the value is Linux's.
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)

_RDATA = {"A": A, "AAAA": AAAA, "CNAME": CNAME}


def _key(name: DNSLabel | str) -> str:
    return str(name).rstrip(".").lower()


def _rr(owner: DNSLabel | str, record: Record) -> RR:
    rdata = _RDATA[record.type](record.value)
    return RR(owner, getattr(QTYPE, record.type), rdata=rdata, ttl=record.ttl)


def _records(name: str, zone: Mapping[str, tuple[Record, ...]]) -> tuple[Record, ...]:
    """The zone's records of ``name``, else the synthetic zone's (``zones.synthetic``)."""
    return zone.get(name) or synthetic(name)


def _exists(name: str, zone: Mapping[str, tuple[Record, ...]]) -> bool:
    """A name exists if it has records or names under it (an empty non-terminal)."""
    if name == BENCH_ZONE or synthetic(name):
        return True
    return name in zone or any(other.endswith("." + name) for other in zone)


def _soa(name: str) -> RR:
    """The SOA of the negative answer: we play the authority of the name's TLD."""
    apex = name.rsplit(".", 1)[-1] + "." if name else "."
    soa = SOA("ns.lab.", "hostmaster.lab.", (1, 3600, 600, 86400, NEGATIVE_TTL))
    return RR(apex, QTYPE.SOA, rdata=soa, ttl=NEGATIVE_TTL)


def respond(query: DNSRecord, zone: Mapping[str, tuple[Record, ...]] = ZONE) -> DNSRecord:
    """The full answer to ``query`` (before any UDP size limit)."""
    reply = query.reply(ra=1, aa=1)
    if query.header.opcode != 0:
        reply.header.rcode = RCODE.NOTIMP
        return reply
    if len(query.questions) != 1:
        reply.header.rcode = RCODE.FORMERR
        return reply
    question = query.q
    if question.qclass != 1:  # IN only
        reply.header.rcode = RCODE.REFUSED
        return reply
    qtype = QTYPE.get(question.qtype)
    owner: DNSLabel = question.qname  # the first owner keeps the client's spelling
    name = _key(owner)
    for _ in range(MAX_CHAIN):
        records = _records(name, zone)
        cname = [r for r in records if r.type == "CNAME"]
        if cname and qtype not in ("CNAME", "ANY"):
            reply.add_answer(_rr(owner, cname[0]))
            owner = DNSLabel(cname[0].value)
            name = _key(owner)
            continue
        for record in records:
            if qtype == "ANY" or record.type == qtype:
                reply.add_answer(_rr(owner, record))
        break
    else:
        reply.header.rcode = RCODE.SERVFAIL  # a CNAME loop in the zone data
        return reply
    if not _exists(name, zone):
        reply.header.rcode = RCODE.NXDOMAIN
    if reply.header.rcode == RCODE.NXDOMAIN or not any(
        rr.rtype != QTYPE.CNAME or qtype == "CNAME" for rr in reply.rr
    ):
        reply.add_auth(_soa(name))
    return reply


def _edns_size(query: DNSRecord) -> int | None:
    """The client's EDNS UDP size, or None when the query has no OPT record."""
    for rr in query.ar:
        if rr.rtype == QTYPE.OPT:
            return max(CLASSIC_UDP, int(rr.rclass))
    return None


def udp_payload(query: DNSRecord, reply: DNSRecord) -> bytes:
    """The reply as sent over UDP: with OPT if asked, truncated (TC) if too big."""
    size = _edns_size(query)
    if size is not None:
        reply.add_ar(EDNS0(udp_len=OUR_EDNS_SIZE))
    data: bytes = reply.pack()
    if len(data) <= (size or CLASSIC_UDP):
        return data
    short = query.reply(ra=1, aa=1)  # header and question only, as a server truncates
    short.header.tc = 1
    short.header.rcode = reply.header.rcode
    if size is not None:
        short.add_ar(EDNS0(udp_len=OUR_EDNS_SIZE))
    packed: bytes = short.pack()
    return packed


def tcp_payload(query: DNSRecord, reply: DNSRecord) -> bytes:
    if _edns_size(query) is not None:
        reply.add_ar(EDNS0(udp_len=OUR_EDNS_SIZE))
    data: bytes = reply.pack()
    return struct.pack("!H", len(data)) + data


def _parse(data: bytes, peer: object) -> DNSRecord | None:
    try:
        return DNSRecord.parse(data)
    except (DNSError, ValueError, IndexError, struct.error) as exc:
        log.warning("dropping a malformed query from %s: %s", peer, exc)
        return None


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        query = _parse(data, addr)
        if query is None or self.transport is None:
            return
        log.info("udp %s %s %s", addr[0], query.q.qname, QTYPE.get(query.q.qtype))
        self.transport.sendto(udp_payload(query, respond(query)), addr)


async def _serve_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    peer = writer.get_extra_info("peername")
    try:
        while True:
            header = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE)
            (length,) = struct.unpack("!H", header)
            query = _parse(await asyncio.wait_for(reader.readexactly(length), TCP_IDLE), peer)
            if query is None:
                break
            log.info("tcp %s %s %s", peer[0], query.q.qname, QTYPE.get(query.q.qtype))
            writer.write(tcp_payload(query, respond(query)))
            await writer.drain()
    except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def bound_socket(address: str, port: int, kind: socket.SocketKind) -> socket.socket:
    """A socket bound to ``address`` even if no interface holds it.

    Fact: the lab serves its far side with AnyIP local routes (``local 203.0.113.0/24 dev
    lo``). IPv4 bind() accepts such an address; IPv6 bind() does not (EADDRNOTAVAIL)
    unless the socket is IP_FREEBIND, so we set it on both.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((address, port))
    sock.setblocking(False)
    return sock


async def serve(addresses: list[str], port: int, ready_file: Path | None) -> None:
    loop = asyncio.get_running_loop()
    servers = []
    for address in addresses:
        await loop.create_datagram_endpoint(
            _UdpProtocol, sock=bound_socket(address, port, socket.SOCK_DGRAM)
        )
        servers.append(
            await asyncio.start_server(
                _serve_tcp, sock=bound_socket(address, port, socket.SOCK_STREAM)
            )
        )
    log.info("serving %d names on %s port %d (UDP, TCP)", len(ZONE), addresses, port)
    if ready_file is not None:
        ready_file.write_text("ready\n")
    await asyncio.gather(*(s.serve_forever() for s in servers))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", action="append", required=True, help="address to bind")
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("--ready-file", type=Path, help="written once every socket is bound")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.listen, args.port, args.ready_file))


if __name__ == "__main__":
    main()

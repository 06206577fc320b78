"""The one small real DNS server of the project: the lab's authority and the tests' upstream.

``Authority`` serves a ``Zone`` over UDP and TCP (asyncio, in-process or as
``python -m iptserver.lab.authority --listen 203.0.113.53 --listen 2001:db8:ff::53``):

- ``LAB_ZONE`` (``zones.ZONE`` through ``respond``) stands in for the recursor the lab's
  entry forwards to, so it answers like one: CNAMEs are followed inside the zone data and
  the whole chain comes back with the final records, each with its own TTL; unknown names
  are NXDOMAIN with an SOA (negative caching).
- ``CANNED_ZONE`` (``canned``, the default) answers as written, for the DNS proxy's tests.

Either way a UDP answer bigger than the client can take (512 bytes without EDNS, else its
EDNS size) comes back truncated with TC set, an EDNS query gets OPT back (echoing option
``ECHO_OPTION``), and the server can misbehave on purpose (``Mode``) and remembers every
query (``seen``), so tests can tell whether a client asked at all, how, and with what.
``respond``, ``udp_payload`` and ``tcp_payload`` are pure and unit-testable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import ipaddress
import logging
import os
import socket
import struct
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

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

from iptserver.lab import canned
from iptserver.lab.zones import BENCH_ZONE, NEGATIVE_TTL, ZONE, Record, synthetic
from iptserver.schema.values import Endpoint

log = logging.getLogger("iptserver.lab.authority")

MAX_CHAIN = 8  # CNAME hops followed before giving up (a loop in the data)
CLASSIC_UDP = 512  # RFC 1035: the UDP limit for a query without EDNS
OUR_EDNS_SIZE = 1232  # what we advertise back (the DNS flag day 2020 value)
TCP_IDLE = 10.0  # seconds a TCP client may stay idle between queries
ECHO_OPTION = 65001  # a local/experimental EDNS option code (RFC 6891 §9) echoed back
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


class Mode(enum.Enum):
    """How the server behaves: answer, or misbehave in one of the ways resolvers do."""

    ANSWER = "answer"
    SILENT = "silent"  # reads every query, never answers (a dead resolver)
    GARBAGE = "garbage"  # answers random bytes behind the right ID
    WRONG_ID = "wrong-id"  # a correct answer under another ID (a spoofer's guess)
    WRONG_QUESTION = "wrong-question"  # the right ID, but the answer to another name
    SPOOF_FIRST = "spoof-first"  # first a wrong-ID answer with a decoy address, then the truth
    REFUSED = "refused"  # REFUSED to everything (a resolver with the wrong ACL)


DECOY = ipaddress.ip_address("203.0.113.66")  # the address SPOOF_FIRST's spoof carries


@dataclass(frozen=True)
class Zone:
    """What a server answers: ``respond`` gives the full answer to a query (before OPT and
    the UDP size limit); ``delays`` holds an answer back (seconds, by lower-case name);
    names in ``never_truncate`` go out over UDP whatever the client's limit."""

    respond: Callable[[DNSRecord], DNSRecord]
    delays: Mapping[str, float] = field(default_factory=dict)
    never_truncate: frozenset[str] = frozenset()


LAB_ZONE = Zone(respond)
CANNED_ZONE = Zone(canned.answer, canned.SLOW, canned.NEVER_TRUNCATE)


@dataclass(frozen=True)
class Seen:
    """One query the authority received."""

    transport: str  # "udp" or "tcp"
    name: str
    qtype: int
    edns_size: int | None
    options: tuple[tuple[int, bytes], ...]


def _opt(query: DNSRecord) -> RR | None:
    return next((rr for rr in query.ar if rr.rtype == QTYPE.OPT), None)


def _edns_size(query: DNSRecord) -> int | None:
    """The client's EDNS UDP size, or None when the query has no OPT record."""
    opt = _opt(query)
    return None if opt is None else max(CLASSIC_UDP, int(opt.rclass))


def add_opt(query: DNSRecord, reply: DNSRecord) -> None:
    """OPT back to an EDNS query, with our size and the client's ``ECHO_OPTION`` options."""
    opt = _opt(query)
    if opt is not None:
        echoed = [o for o in opt.rdata if o.code == ECHO_OPTION]
        reply.add_ar(EDNS0(udp_len=OUR_EDNS_SIZE, opts=echoed))


def fit_udp(query: DNSRecord, reply: DNSRecord, *, never_truncate: bool = False) -> bytes:
    """The reply packed for UDP: header, question and OPT only, with TC, if too big."""
    data: bytes = reply.pack()
    if never_truncate or len(data) <= (_edns_size(query) or CLASSIC_UDP):
        return data
    reply.rr, reply.auth = [], []  # as a server truncates
    reply.header.tc = 1
    packed: bytes = reply.pack()
    return packed


def udp_payload(query: DNSRecord, reply: DNSRecord) -> bytes:
    """The reply as sent over UDP: with OPT if asked, truncated (TC) if too big."""
    add_opt(query, reply)
    return fit_udp(query, reply)


def tcp_payload(query: DNSRecord, reply: DNSRecord) -> bytes:
    """The reply as sent over TCP (never truncated): with OPT if asked, length first."""
    add_opt(query, reply)
    data: bytes = reply.pack()
    return struct.pack("!H", len(data)) + data


def _parse(data: bytes, peer: object) -> DNSRecord | None:
    try:
        return DNSRecord.parse(data)
    except (DNSError, ValueError, IndexError, struct.error) as exc:
        log.warning("dropping a malformed query from %s: %s", peer, exc)
        return None


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


def _free_pair(host: str) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on ``host``, on one port the kernel picked free for both."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(20):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        udp.bind((host, 0))
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            tcp.bind((host, udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            continue
        return udp, tcp
    raise RuntimeError(f"no port on {host} free for both UDP and TCP")


class Authority:
    """``async with Authority(host, mode) as auth:`` then ``auth.endpoint``, ``auth.seen``.

    ``port`` 0 picks a free one (for tests); a fixed port binds with IP_FREEBIND (the lab).
    ``remember=False`` keeps no ``seen`` list (a long-running lab server)."""

    def __init__(
        self,
        host: str = "127.0.0.2",
        mode: Mode = Mode.ANSWER,
        *,
        zone: Zone = CANNED_ZONE,
        port: int = 0,
        remember: bool = True,
    ) -> None:
        self.host = host
        self.mode = mode
        self.zone = zone
        self.remember = remember
        self.seen: list[Seen] = []
        self.endpoint = Endpoint(ipaddress.ip_address(host), port)
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        port = self.endpoint.port
        if port:
            udp = bound_socket(self.host, port, socket.SOCK_DGRAM)
            tcp = bound_socket(self.host, port, socket.SOCK_STREAM)
        else:
            udp, tcp = _free_pair(self.host)
        self._udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), sock=udp)
        self._tcp = await asyncio.start_server(self._serve_tcp, sock=tcp)
        self.endpoint = Endpoint(self.endpoint.address, udp.getsockname()[1])

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> Authority:
        await self.start()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        assert self._tcp is not None, "start() first"
        await self._tcp.serve_forever()

    def seen_names(self, transport: str | None = None) -> list[str]:
        return [s.name for s in self.seen if transport in (None, s.transport)]

    # -- answering ----------------------------------------------------------------

    def _note(self, query: DNSRecord, transport: str, peer: object) -> str:
        name = str(query.q.qname).rstrip(".").lower()
        log.info("%s %s %s %s", transport, peer, query.q.qname, QTYPE.get(query.q.qtype))
        if self.remember:
            opt = _opt(query)
            options = () if opt is None else tuple((o.code, bytes(o.data)) for o in opt.rdata)
            edns = None if opt is None else opt.edns_len
            self.seen.append(Seen(transport, name, query.q.qtype, edns, options))
        return name

    def replies(self, data: bytes, transport: str, peer: object = None) -> Iterator[bytes]:
        """The packets to send back for one query (none, one, or a spoof then one)."""
        query = _parse(data, peer)
        if query is None:
            return
        name = self._note(query, transport, peer)
        if self.mode is Mode.SILENT:
            return
        if self.mode is Mode.GARBAGE:
            yield data[:2] + b"\x81\x80" + os.urandom(40)
            return
        reply = self.zone.respond(query)
        add_opt(query, reply)
        if self.mode is Mode.REFUSED:
            reply = query.reply()
            reply.header.rcode = RCODE.REFUSED
        if self.mode is Mode.WRONG_QUESTION:
            reply.questions[0].qname = "other.example.test"
        if self.mode is Mode.WRONG_ID:
            reply.header.id ^= 0x5A5A
        if self.mode is Mode.SPOOF_FIRST:
            spoof = query.reply()
            spoof.header.id ^= 0x0101
            spoof.add_answer(RR(query.q.qname, QTYPE.A, ttl=86400, rdata=A(str(DECOY))))
            yield spoof.pack()
        if transport == "udp":
            yield fit_udp(query, reply, never_truncate=name in self.zone.never_truncate)
        else:
            yield reply.pack()

    async def _delay(self, data: bytes) -> None:
        if not self.zone.delays:
            return
        with contextlib.suppress(DNSError, ValueError, IndexError, struct.error):
            name = str(DNSRecord.parse(data).q.qname).rstrip(".").lower()
            if name in self.zone.delays:
                await asyncio.sleep(self.zone.delays[name])

    def _spawn_udp(self, data: bytes, addr: Any) -> None:
        async def send() -> None:
            await self._delay(data)
            for wire in self.replies(data, "udp", addr[0]):
                if self._udp is not None and not self._udp.is_closing():
                    self._udp.sendto(wire, addr)

        task = asyncio.get_running_loop().create_task(send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            while True:
                length = int.from_bytes(
                    await asyncio.wait_for(reader.readexactly(2), TCP_IDLE), "big"
                )
                data = await asyncio.wait_for(reader.readexactly(length), TCP_IDLE)
                await self._delay(data)
                for wire in self.replies(data, "tcp", peer[0] if peer else None):
                    writer.write(len(wire).to_bytes(2, "big") + wire)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, authority: Authority) -> None:
        self._authority = authority

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._authority._spawn_udp(data, addr)


def serve_forever(host: str, port_out: Any, mode: str = "answer") -> None:
    """Run a canned-zone authority until killed (the proxy benchmark's own process);
    its port goes to the ``port_out`` queue."""

    async def main() -> None:
        async with Authority(host, Mode(mode), remember=False) as authority:
            port_out.put(authority.endpoint.port)
            await asyncio.Event().wait()

    asyncio.run(main())


async def serve(addresses: list[str], port: int, ready_file: Path | None) -> None:
    """The lab's server: ``LAB_ZONE`` on every address; ``ready_file`` once all are bound."""
    async with contextlib.AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(
                Authority(address, zone=LAB_ZONE, port=port, remember=False)
            )
            for address in addresses
        ]
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

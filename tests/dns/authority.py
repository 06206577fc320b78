"""A small real authoritative DNS server for the tests (dnslib, asyncio, UDP and TCP).

It serves :data:`ZONE` (CNAME chains, AAAA, HTTPS/SVCB with address hints built byte by
byte, answers too big for UDP) and ``n<i>.many.test`` for any i, and it can misbehave
on purpose (:class:`Mode`). It records every query it gets, so tests can tell whether
the proxy asked upstream at all, over which transport and with which EDNS options.
Addresses are documentation ranges only.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import os
import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from dnslib import AAAA, CNAME, EDNS0, QTYPE, RCODE, RD, RR, TXT, A, DNSHeader, DNSRecord

from iptserver.dns.answers import SvcParamKey
from iptserver.dns.config import Endpoint

ECHO_OPTION = 65001  # a local/experimental EDNS option code (RFC 6891 §9) echoed back
AUTHORITY_UDP_SIZE = 1232


class Mode(enum.Enum):
    ANSWER = "answer"
    SILENT = "silent"  # reads every query, never answers (a dead resolver)
    GARBAGE = "garbage"  # answers random bytes behind the right ID
    WRONG_ID = "wrong-id"  # a correct answer under another ID (a spoofer's guess)
    WRONG_QUESTION = "wrong-question"  # the right ID, but the answer to another name
    SPOOF_FIRST = "spoof-first"  # first a wrong-ID answer with a decoy address, then the truth
    REFUSED = "refused"  # REFUSED to everything (a resolver with the wrong ACL)


DECOY = ipaddress.ip_address("203.0.113.66")


def svcb_rdata(priority: int, target: str, params: Iterable[tuple[int, bytes]]) -> bytes:
    """SVCB/HTTPS rdata (RFC 9460 §2.2): priority, uncompressed target, sorted params."""
    out = struct.pack("!H", priority)
    for label in target.rstrip(".").split(".") if target.strip(".") else []:
        out += bytes([len(label)]) + label.encode()
    out += b"\x00"
    for key, value in sorted(params):
        out += struct.pack("!HH", key, len(value)) + value
    return out


def hints(*addresses: str) -> bytes:
    return b"".join(ipaddress.ip_address(a).packed for a in addresses)


def _rr(name: str, rtype: int, rdata: Any, ttl: int) -> RR:
    return RR(name, rtype, ttl=ttl, rdata=rdata)


HTTPS_RDATA = svcb_rdata(
    1,
    ".",
    [
        (SvcParamKey.ALPN, b"\x02h2"),
        (SvcParamKey.IPV4HINT, hints("198.51.100.130", "198.51.100.131")),
        (SvcParamKey.IPV6HINT, hints("2001:db8:1::130")),
    ],
)
SVCB_RDATA = svcb_rdata(
    1, "dns.resolver.test", [(SvcParamKey.PORT, b"\x03\x55"), (4, hints("198.51.100.150"))]
)

BIG_COUNT = 100  # 100 A records: about 1.7 kB, over 512 and over 1232
HUGE_COUNT = 300  # about 4.9 kB: over any UDP limit the proxy grants

# (name, qtype) -> answer section. Names are matched case-insensitively.
ZONE: dict[tuple[str, int], list[RR]] = {
    ("www.example.test", QTYPE.A): [_rr("www.example.test", QTYPE.A, A("198.51.100.10"), 3600)],
    ("v6.example.test", QTYPE.AAAA): [
        _rr("v6.example.test", QTYPE.AAAA, AAAA("2001:db8:44::10"), 600)
    ],
    ("chain.example.test", QTYPE.A): [
        _rr("chain.example.test", QTYPE.CNAME, CNAME("Mid.Example.NET."), 300),
        _rr("evil.test", QTYPE.A, A("203.0.113.99"), 300),  # not in the chain: ignored
        _rr("mid.example.net", QTYPE.CNAME, CNAME("edge.cdn.test."), 120),
        _rr("EDGE.cdn.test", QTYPE.A, A("198.51.100.70"), 60),
        _rr("edge.cdn.test", QTYPE.A, A("198.51.100.71"), 60),
    ],
    ("svc.example.test", QTYPE.HTTPS): [_rr("svc.example.test", QTYPE.HTTPS, RD(HTTPS_RDATA), 900)],
    ("_dns.resolver.test", QTYPE.SVCB): [
        _rr("_dns.resolver.test", QTYPE.SVCB, RD(SVCB_RDATA), 900)
    ],
    ("txt.example.test", QTYPE.TXT): [_rr("txt.example.test", QTYPE.TXT, TXT("hello"), 3600)],
    ("big.example.test", QTYPE.A): [
        _rr("big.example.test", QTYPE.A, A(f"198.18.0.{i}"), 300) for i in range(BIG_COUNT)
    ],
    ("big-notc.example.test", QTYPE.A): [
        _rr("big-notc.example.test", QTYPE.A, A(f"198.18.1.{i}"), 300) for i in range(BIG_COUNT)
    ],
    ("huge.example.test", QTYPE.A): [
        _rr("huge.example.test", QTYPE.A, A(f"198.18.{2 + i // 256}.{i % 256}"), 300)
        for i in range(HUGE_COUNT)
    ],
    ("slow.example.test", QTYPE.A): [_rr("slow.example.test", QTYPE.A, A("198.51.100.20"), 300)],
}
NEVER_TRUNCATE = {"big-notc.example.test"}  # sent over UDP whatever the client's limit
SLOW = {"slow.example.test": 0.5}  # seconds before the answer leaves


def many(i: int) -> str:
    """Names the authority answers for any i: ``n<i>.many.test`` → 198.18.<i//250>.<i%250>."""
    return f"n{i}.many.test"


def _many_answer(name: str) -> list[RR] | None:
    label, _, rest = name.partition(".")
    if rest != "many.test" or not label.startswith("n") or not label[1:].isdigit():
        return None
    i = int(label[1:])
    if i >= 250 * 200:
        return None
    return [_rr(name, QTYPE.A, A(f"198.18.{10 + i // 250}.{i % 250}"), 120)]


@dataclass(frozen=True)
class Seen:
    """One query the authority received."""

    transport: str  # "udp" or "tcp"
    name: str
    qtype: int
    edns_size: int | None
    options: tuple[tuple[int, bytes], ...]


class Authority:
    """``async with Authority(mode=...) as auth:`` then ``auth.endpoint``, ``auth.seen``."""

    def __init__(self, host: str = "127.0.0.2", mode: Mode = Mode.ANSWER) -> None:
        self.host = host
        self.mode = mode
        self.seen: list[Seen] = []
        self.endpoint = Endpoint(ipaddress.ip_address(host), 0)
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for _ in range(20):  # one port free for both UDP and TCP
            udp = socket.socket(family, socket.SOCK_DGRAM)
            udp.bind((self.host, 0))
            port = udp.getsockname()[1]
            tcp = socket.socket(family, socket.SOCK_STREAM)
            try:
                tcp.bind((self.host, port))
            except OSError:
                udp.close()
                tcp.close()
                continue
            break
        else:
            raise RuntimeError("no port free for UDP and TCP")
        self._udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), sock=udp)
        self._tcp = await asyncio.start_server(self._serve_tcp, sock=tcp)
        self.endpoint = Endpoint(self.endpoint.address, port)

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

    def seen_names(self, transport: str | None = None) -> list[str]:
        return [s.name for s in self.seen if transport in (None, s.transport)]

    # -- answering ----------------------------------------------------------------

    def replies(self, data: bytes, transport: str) -> Iterator[bytes]:
        """The packets to send back for one query (none, one, or a spoof then one)."""
        try:
            query = DNSRecord.parse(data)
        except Exception:
            return
        name = str(query.q.qname).rstrip(".").lower()
        opt = next((r for r in query.ar if r.rtype == QTYPE.OPT), None)
        self.seen.append(
            Seen(
                transport,
                name,
                query.q.qtype,
                None if opt is None else opt.edns_len,
                () if opt is None else tuple((o.code, bytes(o.data)) for o in opt.rdata),
            )
        )
        if self.mode is Mode.SILENT:
            return
        if self.mode is Mode.GARBAGE:
            yield data[:2] + b"\x81\x80" + os.urandom(40)
            return
        reply = self._reply(query, name, opt)
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
        wire = reply.pack()
        limit = 512 if opt is None else max(512, opt.edns_len)
        if transport == "udp" and len(wire) > limit and name not in NEVER_TRUNCATE:
            reply.rr, reply.auth = [], []
            reply.header.tc = 1
            wire = reply.pack()
        yield wire

    def _reply(self, query: DNSRecord, name: str, opt: RR | None) -> DNSRecord:
        reply = DNSRecord(DNSHeader(id=query.header.id, qr=1, aa=1, rd=query.header.rd), q=query.q)
        answer = ZONE.get((name, query.q.qtype))
        if answer is None and query.q.qtype == QTYPE.A:
            answer = _many_answer(name)
        if answer is None and not any(key[0] == name for key in ZONE):
            reply.header.rcode = RCODE.NXDOMAIN
        for rr in answer or []:
            reply.add_answer(rr)
        if opt is not None:
            echoed = [o for o in opt.rdata if o.code == ECHO_OPTION]
            reply.add_ar(EDNS0(udp_len=AUTHORITY_UDP_SIZE, opts=echoed))
        return reply

    async def _delay(self, data: bytes) -> None:
        with contextlib.suppress(Exception):
            name = str(DNSRecord.parse(data).q.qname).rstrip(".").lower()
            if name in SLOW:
                await asyncio.sleep(SLOW[name])

    def _spawn_udp(self, data: bytes, addr: Any) -> None:
        async def send() -> None:
            await self._delay(data)
            for wire in self.replies(data, "udp"):
                if self._udp is not None and not self._udp.is_closing():
                    self._udp.sendto(wire, addr)

        task = asyncio.get_running_loop().create_task(send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                length = int.from_bytes(await reader.readexactly(2), "big")
                data = await reader.readexactly(length)
                await self._delay(data)
                for wire in self.replies(data, "tcp"):
                    writer.write(len(wire).to_bytes(2, "big") + wire)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, authority: Authority) -> None:
        self._authority = authority

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._authority._spawn_udp(data, addr)


def serve_forever(host: str, port_out: Any, mode: str = "answer") -> None:
    """Run an authority until killed (for the benchmark, in its own process)."""

    async def main() -> None:
        async with Authority(host, Mode(mode)) as authority:
            port_out.put(authority.endpoint.port)
            await asyncio.Event().wait()

    asyncio.run(main())

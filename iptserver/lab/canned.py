"""Canned answers: one answer section per (name, type), served as written.

The DNS proxy's tests need an upstream that answers oddly on purpose, which a zone that
follows CNAMEs (``zones``, ``authority.respond``) cannot: records outside the CNAME chain,
owners in mixed case, HTTPS/SVCB with address hints built byte by byte, answers too big
for UDP (one of them never truncated), a slow name. ``n<i>.many.test`` answers for any i.
``authority.Authority`` serves this zone by default. Addresses are documentation ranges.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from typing import Any

from dnslib import AAAA, CNAME, QTYPE, RCODE, RD, RR, TXT, A, DNSHeader, DNSRecord

from iptserver.dns.answers import SvcParamKey


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
    """An ipv4hint/ipv6hint value: the packed addresses one after another."""
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
NEVER_TRUNCATE = frozenset({"big-notc.example.test"})  # sent over UDP whatever the limit
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


def answer(query: DNSRecord) -> DNSRecord:
    """The canned answer section for the query's name and type; NXDOMAIN for a name the
    table does not hold under any type (before any OPT record or UDP size limit)."""
    name = str(query.q.qname).rstrip(".").lower()
    reply = DNSRecord(DNSHeader(id=query.header.id, qr=1, aa=1, rd=query.header.rd), q=query.q)
    found = ZONE.get((name, query.q.qtype))
    if found is None and query.q.qtype == QTYPE.A:
        found = _many_answer(name)
    if found is None and not any(key[0] == name for key in ZONE):
        reply.header.rcode = RCODE.NXDOMAIN
    for rr in found or []:
        reply.add_answer(rr)
    return reply

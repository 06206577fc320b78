"""What the proxy reads from an upstream answer and the few changes it makes to it.

Pure functions over the wire bytes and their :class:`~iptserver.dns.wire.Message` view:
which names and addresses an answer teaches the learner, TTL capping, truncation for
UDP clients. No I/O. Malformed data in a record the learner relies on raises
:class:`~iptserver.dns.wire.WireError`: an answer that cannot be fully read cannot be
fully routed.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass

from dnslib import QTYPE

from iptserver.dns.wire import (
    CLASS_IN,
    HEADER_LEN,
    TYPE_A,
    TYPE_AAAA,
    TYPE_CNAME,
    TYPE_HTTPS,
    TYPE_SVCB,
    Flag,
    Message,
    Record,
    Section,
    WireError,
    rdata_name,
)
from iptserver.schema.values import IPAddress

# RFC 1035 §4.2.1: a UDP client without EDNS takes 512 bytes; RFC 6891 §6.2.5: with
# EDNS at least 512. 4096 is the most we send, whatever a client claims.
CLASSIC_UDP_LIMIT = 512
MAX_UDP_PAYLOAD = 4096
_ADDRESS_SIZE = {TYPE_A: 4, TYPE_AAAA: 16}
_ADDRESS_OF: dict[int, Callable[[bytes], IPAddress]] = {
    TYPE_A: ipaddress.IPv4Address,
    TYPE_AAAA: ipaddress.IPv6Address,
}
_HINTED = (TYPE_HTTPS, TYPE_SVCB)
_MAX_CHAIN = 32  # longer CNAME chains are not followed (resolvers give up far earlier)


class SvcParamKey(enum.IntEnum):
    """SvcParamKeys of SVCB/HTTPS records (RFC 9460 §14.3.2)."""

    MANDATORY = 0
    ALPN = 1
    NO_DEFAULT_ALPN = 2
    PORT = 3
    IPV4HINT = 4
    ECH = 5
    IPV6HINT = 6


@dataclass(frozen=True, slots=True)
class Learned:
    """What one answer teaches the learner: the arguments of ``AnswerSink.learn``."""

    names: tuple[str, ...]  # the query name, then each CNAME target in chain order
    addresses: tuple[IPAddress, ...]  # A, AAAA and SVCB/HTTPS hints, first seen first
    ttl: int  # the smallest TTL in the answer section


def cname_chain(wire: bytes, message: Message) -> tuple[str, ...]:
    """The question name followed by every CNAME target the answer section leads to."""
    question = message.question
    if question is None:
        return ()
    cnames: dict[str, Record] = {}
    for record in message.section(Section.ANSWER):
        if record.rtype == TYPE_CNAME and record.rclass == CLASS_IN:
            cnames.setdefault(record.name, record)
    chain = [question.name]
    while len(chain) < _MAX_CHAIN and (link := cnames.get(chain[-1])) is not None:
        target = rdata_name(wire, link)
        if target in chain:  # a loop: the names so far are all there is
            break
        chain.append(target)
    return tuple(chain)


def svcb_hints(rdata: bytes) -> tuple[IPAddress, ...]:
    """The ipv4hint and ipv6hint addresses in the rdata of an SVCB or HTTPS record."""
    if len(rdata) < 3:
        raise WireError(f"SVCB data of {len(rdata)} bytes is too short")
    pos = 2  # SvcPriority
    while True:  # TargetName: never compressed (RFC 9460 §2.2)
        if pos >= len(rdata):
            raise WireError("SVCB target name runs past the end of the data")
        length = rdata[pos]
        if length & 0xC0:
            raise WireError("SVCB target name is compressed or uses a reserved label type")
        pos += 1 + length
        if length == 0:
            break
    hints: list[IPAddress] = []
    while pos < len(rdata):
        if pos + 4 > len(rdata):
            raise WireError("SVCB parameter header is cut short")
        key, length = struct.unpack_from("!HH", rdata, pos)
        value = rdata[pos + 4 : pos + 4 + length]
        if len(value) < length:
            raise WireError(f"SVCB parameter key{key} says {length} bytes, {len(value)} remain")
        pos += 4 + length
        if key == SvcParamKey.IPV4HINT:
            hints.extend(_addresses(value, 4, ipaddress.IPv4Address, "ipv4hint"))
        elif key == SvcParamKey.IPV6HINT:
            hints.extend(_addresses(value, 16, ipaddress.IPv6Address, "ipv6hint"))
    return tuple(hints)


def _addresses(
    value: bytes,
    size: int,
    kind: type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address],
    what: str,
) -> list[IPAddress]:
    if not value or len(value) % size:
        raise WireError(f"{what} of {len(value)} bytes is not a list of {size}-byte addresses")
    return [kind(value[i : i + size]) for i in range(0, len(value), size)]


def learned_from(wire: bytes, message: Message) -> Learned:
    """The chain, addresses and smallest TTL of an answer (no addresses: nothing to route).

    Only records owned by a name of the chain count: an address for another name in
    the same answer says nothing about where the client will connect.
    """
    question = message.question
    answers = message.section(Section.ANSWER)
    if question is None or question.qclass != CLASS_IN or not answers:
        return Learned((), (), 0)
    chain = cname_chain(wire, message)
    owners = frozenset(chain)
    addresses: dict[IPAddress, None] = {}  # ordered, without repeats
    for record in answers:
        if record.name not in owners or record.rclass != CLASS_IN:
            continue
        data = wire[record.rdata : record.end]
        if record.rtype in _ADDRESS_SIZE:
            if len(data) != _ADDRESS_SIZE[record.rtype]:
                raise WireError(
                    f"{QTYPE.get(record.rtype)} record of {record.name!r} has {len(data)} bytes"
                )
            addresses[_ADDRESS_OF[record.rtype](data)] = None
        elif record.rtype in _HINTED:
            addresses.update(dict.fromkeys(svcb_hints(data)))
    ttl = min(r.effective_ttl for r in answers)
    return Learned(chain, tuple(addresses), ttl)


def cap_ttls(wire: bytes, message: Message, cap: int) -> bytes:
    """``wire`` with every answer-section TTL above ``cap`` lowered to it (DESIGN §4)."""
    cap = max(0, cap)
    out = bytearray(wire)
    for record in message.section(Section.ANSWER):
        if record.effective_ttl > cap:
            struct.pack_into("!I", out, record.ttl_offset, cap)
    return bytes(out)


def with_id(wire: bytes, query_id: int) -> bytes:
    return struct.pack("!H", query_id) + wire[2:]


def udp_limit(query: Message) -> int:
    """The largest UDP reply the client who sent ``query`` accepts."""
    opt = query.opt
    if opt is None:
        return CLASSIC_UDP_LIMIT
    return max(CLASSIC_UDP_LIMIT, min(opt.rclass, MAX_UDP_PAYLOAD))


def truncate(wire: bytes, message: Message) -> bytes:
    """The reply cut to header, question and OPT with TC set: the client retries over TCP.

    RFC 6891 §7 keeps the OPT record in a truncated reply; RFC 2181 §9 prefers dropping
    whole sections to sending partial RRsets.
    """
    opt = message.opt
    header = message.header
    out = bytearray(
        struct.pack(
            "!HHHHHH",
            header.id,
            header.flags | Flag.TC,
            header.qdcount,
            0,
            0,
            0 if opt is None else 1,
        )
    )
    out += wire[HEADER_LEN : message.question_end]
    if opt is not None:
        out += b"\x00" + wire[opt.fixed : opt.end]  # the owner is the root, uncompressed
    return bytes(out)

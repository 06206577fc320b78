"""Which client packets are forwarded, and the replies the proxy makes itself."""

from __future__ import annotations

import struct

import pytest
from dnslib import EDNS0, OPCODE, QTYPE, RCODE, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from iptserver.dns.queries import BadQuery, own_reply, read_query
from iptserver.dns.wire import parse_header
from tests.dns.client import query


def with_header(flags: int, qd: int = 1, ar: int = 0, body: bytes = b"") -> bytes:
    return struct.pack("!HHHHHH", 0x4242, flags, qd, 0, 0, ar) + body


QUESTION = b"\x01a\x04test\x00\x00\x01\x00\x01"
OPT = b"\x00" + struct.pack("!HHIH", QTYPE.OPT, 1232, 0, 0)


@pytest.mark.parametrize(
    ("wire", "rcode", "reason"),
    [
        (b"", None, "shorter than a DNS header"),
        (b"\x42\x42\x01", None, "shorter"),
        (with_header(0x8180, body=QUESTION), None, "a response"),
        (with_header(0x0100), RCODE.FORMERR, "past the end"),
        (with_header(0x0100, body=b"\x3fabc"), RCODE.FORMERR, "past the end"),
        (with_header(0x0100, qd=0), RCODE.FORMERR, "0 questions"),
        (with_header(0x0100, qd=2, body=QUESTION * 2), RCODE.FORMERR, "2 questions"),
        (with_header(0x0100, ar=2, body=QUESTION + OPT + OPT), RCODE.FORMERR, "EDNS"),
        (with_header(0x0100 | (OPCODE.UPDATE << 11), body=QUESTION), RCODE.NOTIMP, "UPDATE"),
        (with_header(0x0100 | (OPCODE.STATUS << 11), qd=0), RCODE.NOTIMP, "STATUS"),
    ],
    ids=[
        "empty",
        "short-header",
        "response",
        "question-missing",
        "bad-label-length",
        "no-question",
        "two-questions",
        "two-opt",
        "update",
        "status",
    ],
)
def test_rejected(wire: bytes, rcode: int | None, reason: str) -> None:
    with pytest.raises(BadQuery, match=reason) as caught:
        read_query(wire)
    assert caught.value.rcode == rcode


def test_accepted() -> None:
    message = read_query(query("Www.Example.TEST", "AAAA", edns=1232))
    assert message.question is not None
    assert (message.question.name, message.question.qtype) == ("www.example.test", QTYPE.AAAA)
    assert message.opt is not None


@pytest.mark.parametrize("edns", [None, 4096], ids=["plain", "edns"])
@pytest.mark.parametrize("rcode", [RCODE.SERVFAIL, RCODE.NXDOMAIN, RCODE.FORMERR])
def test_own_reply(rcode: int, edns: int | None) -> None:
    wire = query("a.example.test", "A", edns=edns, qid=0x1234)
    message = read_query(wire)
    reply = DNSRecord.parse(own_reply(wire, rcode, message.header, message))
    assert reply.header.id == 0x1234
    assert reply.header.qr and reply.header.rd and reply.header.ra
    assert reply.header.rcode == rcode
    assert str(reply.q.qname) == "a.example.test."
    assert [r.rtype for r in reply.ar] == ([] if edns is None else [QTYPE.OPT])


def test_own_reply_without_a_readable_question() -> None:
    wire = with_header(0x0100, body=b"\x3fabc")
    reply = own_reply(wire, RCODE.FORMERR, parse_header(wire))
    parsed = DNSRecord.parse(reply)
    assert (parsed.header.id, parsed.header.rcode, parsed.questions) == (0x4242, RCODE.FORMERR, [])


def test_edns_query_reply_has_opt() -> None:
    record = DNSRecord.question("a.test")
    record.add_ar(EDNS0(udp_len=512))
    message = read_query(bytes(record.pack()))
    reply = own_reply(bytes(record.pack()), RCODE.SERVFAIL, message.header, message)
    assert DNSRecord.parse(reply).ar[0].edns_len == 1232


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([0x0100, 0x0000, 0x2800, 0x8000]))
def test_any_packet_is_a_query_or_a_bad_query(body: bytes, flags: int) -> None:
    wire = with_header(flags, body=body) if len(body) % 3 else body
    try:
        message = read_query(wire)
    except BadQuery as bad:
        if bad.header is not None and bad.rcode is not None:
            reply = own_reply(wire, bad.rcode, bad.header, bad.message)
            assert parse_header(reply).id == bad.header.id
    else:
        assert message.question is not None


@settings(max_examples=300, deadline=None)
@given(
    flips=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
    tail=st.binary(max_size=40),
    cut=st.integers(0, 60),
)
def test_a_damaged_query_is_read_or_refused_and_any_reply_is_no_larger(
    flips: list[tuple[int, int]], tail: bytes, cut: int
) -> None:
    """A real query with bytes flipped, cut short or grown: read_query raises BadQuery and
    nothing else, and the proxy's own reply to it is never larger than the query (no
    amplification)."""
    query = DNSRecord.question("www.example.test", "AAAA")
    query.add_ar(EDNS0(udp_len=1232))
    wire = bytearray(query.pack())
    for offset, value in flips:
        wire[offset % len(wire)] = value
    damaged = bytes(wire[: max(0, len(wire) - cut)]) + tail
    try:
        message = read_query(damaged)
    except BadQuery as bad:
        if bad.rcode is not None and bad.header is not None:
            reply = own_reply(damaged, bad.rcode, bad.header, bad.message)
            assert len(reply) <= len(damaged)
        return
    reply = own_reply(damaged, 2, message.header, message)
    assert len(reply) <= len(damaged)

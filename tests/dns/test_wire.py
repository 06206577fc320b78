"""The message scanner: offsets, names (compression, escapes) and every way bytes lie."""

from __future__ import annotations

import contextlib
import struct

import pytest
from dnslib import QTYPE, RR, A, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from iptserver.dns.wire import (
    Section,
    WireError,
    parse_header,
    parse_message,
    rdata_name,
    read_name,
)


def header(qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0, flags: int = 0x0100) -> bytes:
    return struct.pack("!HHHHHH", 0x1234, flags, qd, an, ns, ar)


def test_scan_matches_dnslib() -> None:
    record = DNSRecord.question("Www.Example.TEST", "A")
    reply = record.reply()
    reply.add_answer(*RR.fromZone("www.example.test. 300 IN CNAME Edge.CDN.test."))
    reply.add_answer(RR("edge.cdn.test", QTYPE.A, ttl=60, rdata=A("198.51.100.1")))
    wire = bytes(reply.pack())

    message = parse_message(wire)

    assert message.header.id == reply.header.id
    assert message.header.is_response
    assert message.question is not None
    assert message.question.name == "www.example.test"
    answers = message.section(Section.ANSWER)
    assert [(r.name, r.rtype, r.ttl) for r in answers] == [
        ("www.example.test", QTYPE.CNAME, 300),
        ("edge.cdn.test", QTYPE.A, 60),
    ]
    assert rdata_name(wire, answers[0]) == "edge.cdn.test"  # compressed against the question
    assert wire[answers[1].rdata : answers[1].end] == bytes([198, 51, 100, 1])
    assert struct.unpack_from("!I", wire, answers[1].ttl_offset) == (60,)
    assert answers[-1].end == len(wire)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (b"\x03WWW\x07example\x00", "www.example"),
        (b"\x00", ""),
        (b"\x03a.b\x00", "a\\046b"),  # a dot inside a label is not a separator
        (b"\x02\x00\xff\x00", "\\000\\255"),
        (b"\x04_dns\x01*\x00", "_dns.*"),
    ],
    ids=["case", "root", "dot-in-label", "binary", "underscore-star"],
)
def test_name_text(name: bytes, text: str) -> None:
    wire = header(qd=0) + name
    assert read_name(wire, 12) == (text, len(wire))


@pytest.mark.parametrize(
    ("name", "error"),
    [
        (b"\x05abc", "past the end"),
        (b"\x03abc", "past the end"),
        (b"\x41abc\x00", "label type 0x40"),
        (b"\x81abc\x00", "label type 0x80"),
        (b"\xc0\x0c", "loop"),  # points at itself
        (b"\xc0", "cut short"),
        (b"\xc0\x05", "outside"),  # into the header
        (b"\xc0\xff", "outside"),
        ((b"\x3f" + b"a" * 63) * 4 + b"\x00", "longer than 255"),
    ],
    ids=[
        "label-past-end",
        "no-root",
        "extended-label",
        "reserved-label",
        "pointer-loop",
        "pointer-cut",
        "pointer-into-header",
        "pointer-past-end",
        "too-long",
    ],
)
def test_bad_names(name: bytes, error: str) -> None:
    with pytest.raises(WireError, match=error):
        read_name(header(qd=0) + name, 12)


def test_pointer_chain_is_followed_without_recursion() -> None:
    # 100 records whose owners each point at the previous owner: fine, just a long walk
    wire = bytearray(header(qd=0, an=100, flags=0x8180))
    owner = len(wire)
    wire += b"\x01a\x00" + struct.pack("!HHIH", QTYPE.A, 1, 5, 4) + b"\x01\x02\x03\x04"
    for _ in range(99):
        start = len(wire)
        wire += struct.pack("!H", 0xC000 | owner)
        wire += struct.pack("!HHIH", QTYPE.A, 1, 5, 4) + b"\x01\x02\x03\x04"
        owner = start
    message = parse_message(bytes(wire))
    assert {r.name for r in message.records} == {"a"}


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        (b"\x12\x34\x01", "shorter than a DNS header"),
        (header() + b"\x01a\x00\x00", "cut short"),
        (header(qd=0, an=1) + b"\x00" + struct.pack("!HHI", 1, 1, 5), "cut short"),
        (header(qd=0, an=1) + b"\x00" + struct.pack("!HHIH", 1, 1, 5, 4) + b"\x01", "4 bytes"),
        (header(qd=2) + b"\x01a\x00\x00\x01\x00\x01", "past the end"),
    ],
    ids=["short-header", "question-cut", "rr-fixed-cut", "rdata-cut", "missing-question"],
)
def test_bad_messages(wire: bytes, error: str) -> None:
    with pytest.raises(WireError, match=error):
        parse_message(wire)


def test_header_fields() -> None:
    h = parse_header(struct.pack("!HHHHHH", 7, 0x8000 | (5 << 11) | 0x0200 | 3, 1, 2, 3, 4))
    assert (h.id, h.is_response, h.opcode, h.truncated, h.rcode) == (7, True, 5, True, 3)
    assert (h.qdcount, h.ancount, h.nscount, h.arcount) == (1, 2, 3, 4)


def test_rdata_name_must_fill_rdata() -> None:
    wire = header(qd=0, an=1) + b"\x00" + struct.pack("!HHIH", QTYPE.CNAME, 1, 5, 4)
    wire += b"\x01a\x00\x00"  # one byte more than the name
    record = parse_message(wire).records[0]
    with pytest.raises(WireError, match="does not fill"):
        rdata_name(wire, record)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_parse_or_wire_error(data: bytes) -> None:
    with contextlib.suppress(WireError):
        parse_message(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=300), st.integers(0, 4), st.integers(0, 4))
def test_any_records_after_a_header(body: bytes, an: int, ar: int) -> None:
    """Random sections behind a plausible header reach the deeper parsing paths."""
    with contextlib.suppress(WireError):
        parse_message(header(qd=1, an=an, ar=ar) + body)

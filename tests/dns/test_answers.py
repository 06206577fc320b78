"""Pure answer handling: the chain, the addresses, SVCB hints, TTL caps, truncation."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from dnslib import CNAME, EDNS0, QTYPE, RD, RR, A, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from iptserver.dns.answers import (
    Learned,
    SvcParamKey,
    cap_ttls,
    cname_chain,
    learned_from,
    svcb_hints,
    truncate,
    udp_limit,
    with_id,
)
from iptserver.dns.wire import Section, WireError, parse_message
from iptserver.lab.canned import HTTPS_RDATA, hints, svcb_rdata


def answer(qname: str, qtype: str, *zone_lines: str, edns: int | None = None) -> bytes:
    reply = DNSRecord.question(qname, qtype).reply()
    for line in zone_lines:
        reply.add_answer(*RR.fromZone(line))
    if edns is not None:
        reply.add_ar(EDNS0(udp_len=edns))
    return bytes(reply.pack())


def raw(name: str, rtype: int, ttl: int, rdata: bytes) -> RR:
    return RR(name, rtype, ttl=ttl, rdata=RD(rdata))


def learned(wire: bytes) -> Learned:
    return learned_from(wire, parse_message(wire))


def ips(*texts: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    return tuple(ipaddress.ip_address(t) for t in texts)


CASES = [
    pytest.param(
        answer("www.example.test", "A", "www.example.test. 300 A 198.51.100.1"),
        Learned(("www.example.test",), ips("198.51.100.1"), 300),
        id="a",
    ),
    pytest.param(
        answer(
            "v6.example.test",
            "AAAA",
            "v6.example.test. 30 AAAA 2001:db8::1",
            "v6.example.test. 60 AAAA 2001:db8::1",
        ),
        Learned(("v6.example.test",), ips("2001:db8::1"), 30),
        id="aaaa-repeated",
    ),
    pytest.param(
        answer(
            "A.Example.Test.",
            "A",
            "a.example.test. 300 CNAME B.example.NET.",
            "b.example.net. 200 CNAME c.example.org.",
            "C.EXAMPLE.ORG. 100 A 198.51.100.2",
            "c.example.org. 100 A 198.51.100.3",
        ),
        Learned(
            ("a.example.test", "b.example.net", "c.example.org"),
            ips("198.51.100.2", "198.51.100.3"),
            100,
        ),
        id="cname-chain-mixed-case",
    ),
    pytest.param(
        answer(
            "a.example.test",
            "A",
            "c.example.org. 100 A 198.51.100.3",
            "b.example.net. 200 CNAME c.example.org.",
            "a.example.test. 300 CNAME b.example.net.",
        ),
        Learned(("a.example.test", "b.example.net", "c.example.org"), ips("198.51.100.3"), 100),
        id="cname-chain-out-of-order",
    ),
    pytest.param(
        answer(
            "a.example.test",
            "A",
            "a.example.test. 300 A 198.51.100.1",
            "evil.example. 300 A 203.0.113.9",
            "b.example.test. 300 A 203.0.113.10",
        ),
        Learned(("a.example.test",), ips("198.51.100.1"), 300),
        id="owners-outside-the-chain-ignored",
    ),
    pytest.param(
        answer(
            "a.example.test",
            "A",
            "a.example.test. 300 CNAME b.example.test.",
            "b.example.test. 300 CNAME a.example.test.",
        ),
        Learned(("a.example.test", "b.example.test"), (), 300),
        id="cname-loop",
    ),
    pytest.param(
        answer("t.example.test", "TXT", 't.example.test. 300 TXT "x"'),
        Learned(("t.example.test",), (), 300),
        id="no-addresses",
    ),
    pytest.param(
        answer("a.example.test", "A"),
        Learned((), (), 0),
        id="nodata",
    ),
    pytest.param(
        answer("a.example.test", "A", "a.example.test. 4294967295 A 198.51.100.1"),
        Learned(("a.example.test",), ips("198.51.100.1"), 0),
        id="ttl-top-bit-means-zero",
    ),
]


@pytest.mark.parametrize(("wire", "expected"), CASES)
def test_learned(wire: bytes, expected: Learned) -> None:
    assert learned(wire) == expected


def test_https_and_svcb_hints_are_addresses() -> None:
    reply = DNSRecord.question("svc.example.test", "HTTPS").reply()
    reply.add_answer(raw("svc.example.test", QTYPE.HTTPS, 600, HTTPS_RDATA))
    reply.add_answer(raw("svc.example.test", QTYPE.SVCB, 600, svcb_rdata(0, "x.test", [])))
    got = learned(bytes(reply.pack()))
    assert got.addresses == ips("198.51.100.130", "198.51.100.131", "2001:db8:1::130")


@pytest.mark.parametrize(
    ("rdata", "expected"),
    [
        (svcb_rdata(0, "alias.example.test", []), ()),
        (svcb_rdata(1, ".", [(SvcParamKey.ALPN, b"\x02h3")]), ()),
        (svcb_rdata(1, "t.test", [(SvcParamKey.IPV4HINT, hints("192.0.2.1"))]), ips("192.0.2.1")),
        (
            svcb_rdata(2, ".", [(SvcParamKey.IPV6HINT, hints("2001:db8::1", "2001:db8::2"))]),
            ips("2001:db8::1", "2001:db8::2"),
        ),
        (svcb_rdata(1, ".", [(9999, b"xyz"), (4, hints("192.0.2.9"))]), ips("192.0.2.9")),
    ],
    ids=["alias-mode", "no-hints", "ipv4hint", "ipv6hint-two", "unknown-key-skipped"],
)
def test_svcb_hints(rdata: bytes, expected: tuple[object, ...]) -> None:
    assert svcb_hints(rdata) == expected


@pytest.mark.parametrize(
    ("rdata", "error"),
    [
        (b"\x00", "too short"),
        (b"\x00\x01\x05ab", "past the end"),
        (b"\x00\x01\xc0\x0c", "compressed"),
        (b"\x00\x01\x00\x00\x04", "cut short"),
        (b"\x00\x01\x00\x00\x04\x00\x08\x01\x02", "says 8 bytes"),
        (svcb_rdata(1, ".", [(4, b"\x01\x02\x03")]), "ipv4hint of 3 bytes"),
        (svcb_rdata(1, ".", [(6, b"")]), "ipv6hint of 0 bytes"),
    ],
    ids=["short", "target-cut", "target-compressed", "key-cut", "value-cut", "v4-size", "v6-empty"],
)
def test_svcb_malformed(rdata: bytes, error: str) -> None:
    with pytest.raises(WireError, match=error):
        svcb_hints(rdata)


@pytest.mark.parametrize(
    ("rtype", "rdata"),
    [(QTYPE.A, b"\x01\x02\x03"), (QTYPE.AAAA, b"\x00" * 4), (QTYPE.HTTPS, b"\x00\x01")],
    ids=["a-3-bytes", "aaaa-4-bytes", "https-cut"],
)
def test_malformed_address_records_raise(rtype: int, rdata: bytes) -> None:
    reply = DNSRecord.question("a.example.test", "A").reply()
    reply.add_answer(raw("a.example.test", rtype, 60, rdata))
    with pytest.raises(WireError):
        learned(bytes(reply.pack()))


def test_cname_chain_without_question() -> None:
    wire = struct.pack("!HHHHHH", 1, 0x8180, 0, 0, 0, 0)
    assert cname_chain(wire, parse_message(wire)) == ()


@pytest.mark.parametrize(
    ("cap", "expected"),
    [(100, [100, 100, 50]), (50, [50, 50, 50]), (1000, [300, 200, 50]), (-5, [0, 0, 0])],
    ids=["some-above", "all-at-cap", "none-above", "negative-is-zero"],
)
def test_cap_ttls(cap: int, expected: list[int]) -> None:
    wire = answer(
        "a.example.test",
        "A",
        "a.example.test. 300 CNAME b.example.test.",
        "b.example.test. 200 A 198.51.100.1",
        "b.example.test. 50 A 198.51.100.2",
        edns=1232,
    )
    capped = cap_ttls(wire, parse_message(wire), cap)
    assert [rr.ttl for rr in DNSRecord.parse(capped).rr] == expected
    assert len(capped) == len(wire)
    opt = parse_message(capped).opt
    assert opt is not None and opt.ttl == 0  # the OPT "TTL" holds flags: never touched


def test_truncate_keeps_question_and_opt() -> None:
    lines = [f"big.example.test. 60 A 198.18.0.{i}" for i in range(50)]
    wire = answer("big.example.test", "A", *lines, edns=1232)
    cut = truncate(wire, parse_message(wire))
    parsed = DNSRecord.parse(cut)
    assert parsed.header.tc
    assert parsed.header.id == DNSRecord.parse(wire).header.id
    assert str(parsed.q.qname) == "big.example.test."
    assert parsed.rr == [] and parsed.auth == []
    assert [r.rtype for r in parsed.ar] == [QTYPE.OPT]
    assert parsed.ar[0].edns_len == 1232


def test_truncate_without_edns() -> None:
    wire = answer("a.example.test", "A", "a.example.test. 60 A 198.51.100.1")
    parsed = parse_message(truncate(wire, parse_message(wire)))
    assert parsed.header.truncated
    assert parsed.records == ()


@pytest.mark.parametrize(
    ("edns", "limit"),
    [(None, 512), (0, 512), (511, 512), (1232, 1232), (4096, 4096), (65535, 4096)],
    ids=lambda v: str(v),
)
def test_udp_limit(edns: int | None, limit: int) -> None:
    query = DNSRecord.question("a.example.test", "A")
    if edns is not None:
        query.add_ar(EDNS0(udp_len=edns))
    assert udp_limit(parse_message(bytes(query.pack()))) == limit


def test_with_id() -> None:
    wire = answer("a.example.test", "A")
    assert parse_message(with_id(wire, 0xBEEF)).header.id == 0xBEEF


def test_sections_are_kept_apart() -> None:
    reply = DNSRecord.question("a.example.test", "A").reply()
    reply.add_auth(*RR.fromZone("a.example.test. 300 A 203.0.113.1"))
    reply.add_ar(*RR.fromZone("a.example.test. 300 A 203.0.113.2"))
    wire = bytes(reply.pack())
    message = parse_message(wire)
    assert [r.section for r in message.records] == [Section.AUTHORITY, Section.ADDITIONAL]
    assert learned_from(wire, message) == Learned((), (), 0)  # only the answer section counts


_LABELS = st.sampled_from(["a", "b", "c", "www", "example", "test"])
_NAMES = st.lists(_LABELS, min_size=1, max_size=3).map(".".join)
_TYPES = st.sampled_from([QTYPE.A, QTYPE.AAAA, QTYPE.CNAME, QTYPE.HTTPS, QTYPE.SVCB, QTYPE.TXT])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(_NAMES, _TYPES, st.integers(0, 2**32 - 1), st.binary(min_size=1, max_size=40)),
        max_size=6,
    ),
    st.integers(-10, 10**6),
)
def test_random_answers_are_learned_or_refused(
    records: list[tuple[str, int, int, bytes]], cap: int
) -> None:
    """Whatever the records hold, extraction raises WireError or gives a consistent
    result, and capping and truncation never fail on a message that parsed."""
    reply = DNSRecord.question("a.example", "A").reply()
    for name, rtype, ttl, rdata in records:
        reply.add_answer(raw(name, rtype, ttl, rdata))
    wire = bytes(reply.pack())
    message = parse_message(wire)
    try:
        got = learned_from(wire, message)
    except WireError:
        pass
    else:
        assert got.names[:1] == (("a.example",) if records else ())
        assert len(set(got.addresses)) == len(got.addresses)
    capped = parse_message(cap_ttls(wire, message, cap))
    assert all(r.effective_ttl <= max(cap, 0) for r in capped.section(Section.ANSWER))
    assert parse_message(truncate(wire, message)).section(Section.ANSWER) == ()


def _answer_with(records: int) -> bytes:
    """A real-shaped answer: a CNAME chain, addresses, an OPT record."""
    reply = DNSRecord.question("www.example.test", "A").reply()
    reply.add_answer(RR("www.example.test", QTYPE.CNAME, rdata=CNAME("edge.example.net"), ttl=600))
    for i in range(records):
        reply.add_answer(RR("edge.example.net", QTYPE.A, rdata=A(f"198.51.100.{i}"), ttl=30 * i))
    reply.add_ar(EDNS0(udp_len=1232))
    return bytes(reply.pack())


@settings(max_examples=300, deadline=None)
@given(
    records=st.integers(1, 6),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, 400),
    cap=st.integers(-5, 2**32),
)
def test_a_damaged_answer_is_read_or_refused_never_crashes(
    records: int, flips: list[tuple[int, int]], cut: int, cap: int
) -> None:
    """Bytes flipped and the end cut off a real answer: every step of the answer path
    either works within its promises or raises WireError, nothing else."""
    wire = bytearray(_answer_with(records))
    for offset, value in flips:
        wire[offset % len(wire)] = value
    damaged = bytes(wire[: max(12, len(wire) - cut)])
    try:
        message = parse_message(damaged)
        learned = learned_from(damaged, message)
        capped = cap_ttls(damaged, message, cap)
        cut_short = truncate(damaged, message)
    except WireError:
        return
    assert len(capped) == len(damaged)
    for before, after in zip(
        parse_message(damaged).section(Section.ANSWER),
        parse_message(capped).section(Section.ANSWER),
        strict=True,
    ):
        assert after.effective_ttl <= max(before.effective_ttl, 0)
        assert after.effective_ttl <= max(0, cap)
    assert len(cut_short) <= len(damaged)
    assert all(a.version in (4, 6) for a in learned.addresses)

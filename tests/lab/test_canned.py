"""The canned zone the DNS proxy's tests are served: answers exactly as written."""

from __future__ import annotations

from dnslib import QTYPE, RCODE, DNSRecord

from iptserver.lab.canned import ZONE, answer, hints, many, svcb_rdata


def test_a_canned_answer_comes_back_as_written_with_the_question_and_id() -> None:
    query = DNSRecord.question("Chain.Example.TEST", "A")
    reply = answer(query)
    assert reply.header.id == query.header.id and reply.header.aa and reply.q == query.q
    assert [str(rr.rname) for rr in reply.rr] == [
        str(rr.rname) for rr in ZONE[("chain.example.test", QTYPE.A)]
    ]
    assert "evil.test." in [str(rr.rname) for rr in reply.rr]  # kept: the proxy must drop it


def test_nxdomain_only_for_names_the_table_lacks_under_every_type() -> None:
    assert answer(DNSRecord.question("nothing.example.test")).header.rcode == RCODE.NXDOMAIN
    nodata = answer(DNSRecord.question("www.example.test", "AAAA"))
    assert nodata.header.rcode == RCODE.NOERROR and not nodata.rr


def test_many_names_answer_for_any_index() -> None:
    (rr,) = answer(DNSRecord.question(many(251))).rr
    assert str(rr.rdata) == "198.18.11.1"
    assert answer(DNSRecord.question(many(50000))).header.rcode == RCODE.NXDOMAIN


def test_svcb_rdata_is_built_byte_by_byte() -> None:
    data = svcb_rdata(1, "a.b", [(4, hints("192.0.2.1")), (1, b"\x02h2")])
    assert (
        data
        == b"\x00\x01\x01a\x01b\x00"
        + b"\x00\x01\x00\x03\x02h2"
        + b"\x00\x04\x00\x04\xc0\x00\x02\x01"
    )

"""The DNS authority: the lab zone's answers without a network (``respond``,
``udp_payload``), then the server itself on loopback."""

from __future__ import annotations

import asyncio
import socket

from dnslib import EDNS0, QTYPE, RCODE, DNSRecord

from iptserver.lab.authority import LAB_ZONE, Authority, respond, tcp_payload, udp_payload
from iptserver.lab.zones import DEFAULT_TTL, NEGATIVE_TTL, ZONE, synthetic


def _ask(name: str, rtype: str = "A", edns: int | None = None) -> DNSRecord:
    query = DNSRecord.question(name, rtype)
    if edns is not None:
        query.add_ar(EDNS0(udp_len=edns))
    return query


def _answers(reply: DNSRecord) -> list[tuple[str, str, str, int]]:
    return [(str(r.rname), QTYPE.get(r.rtype), str(r.rdata), r.ttl) for r in reply.rr]


def test_a_record_with_its_ttl() -> None:
    reply = respond(_ask("www.bbc.co.uk"))
    assert reply.header.rcode == RCODE.NOERROR and reply.header.aa and reply.header.ra
    assert _answers(reply) == [("www.bbc.co.uk.", "A", "198.51.100.10", 60)]


def test_the_owner_keeps_the_clients_spelling() -> None:
    assert _answers(respond(_ask("WWW.Example.COM.")))[0][0] == "WWW.Example.COM."


def test_cname_chain_is_followed_with_each_ttl() -> None:
    assert _answers(respond(_ask("a.chain.test"))) == [
        ("a.chain.test.", "CNAME", "b.chain.test.", 60),
        ("b.chain.test.", "CNAME", "c.chain.ru.", 60),
        ("c.chain.ru.", "A", "203.0.113.80", 60),
    ]


def test_asking_for_the_cname_itself_does_not_follow_it() -> None:
    assert _answers(respond(_ask("cdn.example.net", "CNAME"))) == [
        ("cdn.example.net.", "CNAME", "edge.yandex.net.", 60)
    ]


def test_nxdomain_carries_the_soa_for_negative_caching() -> None:
    reply = respond(_ask("nothing.example.org"))
    assert reply.header.rcode == RCODE.NXDOMAIN and not reply.rr
    assert [(QTYPE.get(a.rtype), a.ttl) for a in reply.auth] == [("SOA", NEGATIVE_TTL)]


def test_cname_to_a_missing_name_is_nxdomain_with_the_chain() -> None:
    reply = respond(_ask("dangling.example.org"))
    assert reply.header.rcode == RCODE.NXDOMAIN
    assert [QTYPE.get(r.rtype) for r in reply.rr] == ["CNAME"]


def test_nodata_for_a_type_the_name_lacks_and_for_empty_non_terminals() -> None:
    for name, rtype in (("www.bbc.co.uk", "AAAA"), ("chain.test", "A")):
        reply = respond(_ask(name, rtype))
        assert reply.header.rcode == RCODE.NOERROR and not reply.rr, name
        assert len(reply.auth) == 1


def test_big_answer_is_truncated_without_edns_and_fits_with_it() -> None:
    query = _ask("big.example.org")
    short = DNSRecord.parse(udp_payload(query, respond(query)))
    assert short.header.tc and not short.rr and short.q == query.q
    query = _ask("big.example.org", edns=1232)
    full = DNSRecord.parse(udp_payload(query, respond(query)))
    assert not full.header.tc and len(full.rr) == 40
    assert any(r.rtype == QTYPE.OPT for r in full.ar)


def test_tcp_is_never_truncated() -> None:
    query = _ask("big.example.org")
    data = tcp_payload(query, respond(query))
    assert int.from_bytes(data[:2], "big") == len(data) - 2
    assert len(DNSRecord.parse(data[2:]).rr) == len(ZONE["big.example.org"])


def test_ttls_from_the_zone_data() -> None:
    assert _answers(respond(_ask("short.example.org")))[0][3] == 2
    assert _answers(respond(_ask("long.example.org")))[0][3] == 86400


def test_every_name_under_bench_ru_has_a_stable_unplaced_address() -> None:
    address = synthetic("q1.bench.ru")[0].value
    assert _answers(respond(_ask("q1.Bench.RU"))) == [("q1.Bench.RU.", "A", address, DEFAULT_TTL)]
    assert _answers(respond(_ask("q1.bench.ru")))[0][2] == address
    addresses = {synthetic(f"n{i}.x.bench.ru")[0].value for i in range(500)}
    assert len(addresses) > 10
    assert all(
        a.startswith("203.0.113.") and 200 <= int(a.rsplit(".")[-1]) < 250 for a in addresses
    )


def test_the_bench_zone_is_nodata_for_aaaa_and_its_apex_and_leaves_zone_alone() -> None:
    for name, rtype in (("q1.bench.ru", "AAAA"), ("bench.ru", "A")):
        reply = respond(_ask(name, rtype))
        assert reply.header.rcode == RCODE.NOERROR and not reply.rr, name
    assert respond(_ask("nothing.ru")).header.rcode == RCODE.NXDOMAIN
    assert not any(name.endswith("bench.ru") for name in ZONE)


def _exchange(authority: Authority, query: DNSRecord, kind: socket.SocketKind) -> DNSRecord:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.settimeout(2)
        sock.connect((str(authority.endpoint.address), authority.endpoint.port))
        if kind == socket.SOCK_DGRAM:
            sock.send(query.pack())
            return DNSRecord.parse(sock.recv(65535))
        data = query.pack()
        sock.sendall(len(data).to_bytes(2, "big") + data)
        length = int.from_bytes(sock.recv(2), "big")
        body = b""
        while len(body) < length:
            body += sock.recv(length - len(body))
        return DNSRecord.parse(body)


def test_the_server_answers_the_lab_zone_over_udp_and_tcp_and_remembers_queries() -> None:
    async def scenario() -> None:
        async with Authority("127.0.0.1", zone=LAB_ZONE) as authority:
            query = _ask("big.example.org")
            udp = await asyncio.to_thread(_exchange, authority, query, socket.SOCK_DGRAM)
            tcp = await asyncio.to_thread(_exchange, authority, query, socket.SOCK_STREAM)
            assert udp.header.tc and not udp.rr
            assert len(tcp.rr) == len(ZONE["big.example.org"]) and not tcp.header.tc
            assert [(s.transport, s.name) for s in authority.seen] == [
                ("udp", "big.example.org"),
                ("tcp", "big.example.org"),
            ]

    asyncio.run(scenario())

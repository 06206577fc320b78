"""Shared connected UDP sockets to an upstream, against real sockets on loopback."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable

import pytest
from dnslib import DNSRecord

from iptserver.dns import udp_pool
from iptserver.dns.udp_pool import QueryIds, UdpPool
from iptserver.dns.wire import Message, Question, parse_message
from iptserver.schema.values import Endpoint
from tests.dns.harness import closed_endpoint, run

Reply = Callable[[bytes], list[bytes]]  # what the fake upstream sends back for a query


class Upstream(asyncio.DatagramProtocol):
    """Answers each query with what ``reply`` makes of it; remembers source ports."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.ports: list[int] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.ports.append(addr[1])
        assert self.transport is not None
        for datagram in self.reply(data):
            self.transport.sendto(datagram, addr)


def answer(query: bytes) -> bytes:
    return DNSRecord.parse(query).reply().pack()


async def upstream(reply: Reply) -> tuple[Upstream, Endpoint]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: Upstream(reply), local_addr=("127.0.0.2", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    return protocol, Endpoint(ipaddress.ip_address("127.0.0.2"), port)


class Checks:
    """The pool's ``match`` and ``ignore``: as the upstream client does, ID and question."""

    def __init__(self) -> None:
        self.ignored: list[str] = []

    def match(self, reply: bytes, query_id: int, question: Question) -> Message | None:
        message = parse_message(reply)
        if message.header.id != query_id or message.question != question:
            self.ignored.append("mismatch")
            return None
        return message

    def ignore(self, reply: bytes, why: str) -> None:
        self.ignored.append(why)


def query(name: str) -> tuple[bytes, Question]:
    wire = DNSRecord.question(name).pack()
    question = parse_message(wire).question
    assert question is not None
    return wire, question


def test_concurrent_queries_each_get_their_own_reply() -> None:
    async def scenario() -> None:
        server, endpoint = await upstream(lambda q: [answer(q)])
        checks = Checks()
        pool = UdpPool(endpoint, checks.match, checks.ignore)
        deadline = asyncio.get_running_loop().time() + 2
        names = [f"n{i}.example.test" for i in range(200)]
        replies = await asyncio.gather(*(pool.exchange(*query(name), deadline) for name in names))
        assert [message.question.name for message, _ in replies] == names  # type: ignore[union-attr]
        assert checks.ignored == []
        # Sockets are shared and replaced: more than one port, far fewer than queries.
        ports = set(server.ports)
        assert len(server.ports) == 200
        assert 1 < len(ports) <= 200 // udp_pool.USES + udp_pool.SOCKETS + 1
        pool.close()

    run(scenario)


def test_a_reply_with_another_id_is_ignored_and_the_real_one_taken() -> None:
    def spoof_first(q: bytes) -> list[bytes]:
        forged = bytearray(answer(q))
        forged[0:2] = ((int.from_bytes(q[:2], "big") + 1) % 65536).to_bytes(2, "big")
        return [bytes(forged), answer(q)]

    async def scenario() -> None:
        _, endpoint = await upstream(spoof_first)
        checks = Checks()
        pool = UdpPool(endpoint, checks.match, checks.ignore)
        loop = asyncio.get_running_loop()
        message, _ = await pool.exchange(*query("www.example.test"), loop.time() + 2)
        assert message.question is not None and message.question.name == "www.example.test"
        assert checks.ignored == ["no query waits for its ID"]
        pool.close()

    run(scenario)


def test_no_reply_times_out_at_the_deadline_and_frees_its_id() -> None:
    async def scenario() -> None:
        _, endpoint = await upstream(lambda q: [])
        pool = UdpPool(endpoint, Checks().match, Checks().ignore)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await pool.exchange(*query("www.example.test"), started + 0.2)
        assert 0.15 <= loop.time() - started < 1.0
        assert all(not sock.waiting for sock in pool._all)
        pool.close()

    run(scenario)


def test_a_closed_port_fails_at_once() -> None:
    async def scenario() -> None:
        pool = UdpPool(closed_endpoint(), Checks().match, Checks().ignore)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(OSError):
            await pool.exchange(*query("www.example.test"), started + 2)
        assert loop.time() - started < 1.0
        pool.close()

    run(scenario)


def test_query_ids_are_random_16_bit_numbers() -> None:
    ids = QueryIds()
    drawn = [ids.next() for _ in range(5000)]
    assert all(0 <= i < 65536 for i in drawn)
    assert len(set(drawn)) > 4000  # 5,000 draws from 65,536: about 4,800 distinct


def test_close_releases_every_socket() -> None:
    async def scenario() -> None:
        _, endpoint = await upstream(lambda q: [answer(q)])
        pool = UdpPool(endpoint, Checks().match, Checks().ignore)
        loop = asyncio.get_running_loop()
        await pool.exchange(*query("www.example.test"), loop.time() + 2)
        pool.close()
        await asyncio.sleep(0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.2", 0))  # the loop still runs: nothing left half-closed

    run(scenario)


def test_a_lost_datagram_is_sent_again_and_its_answer_taken() -> None:
    seen: set[bytes] = set()

    def drop_first(q: bytes) -> list[bytes]:
        if q not in seen:  # the first copy is "lost"
            seen.add(q)
            return []
        return [answer(q)]

    async def scenario() -> None:
        server, endpoint = await upstream(drop_first)
        pool = UdpPool(endpoint, Checks().match, Checks().ignore)
        loop = asyncio.get_running_loop()
        started = loop.time()
        message, _ = await pool.exchange(*query("www.example.test"), started + 2, resend=0.2)
        assert message.question is not None and message.question.name == "www.example.test"
        assert 0.15 < loop.time() - started < 1.0
        assert len(server.ports) == 2 and len(set(server.ports)) == 1  # same socket, resent
        pool.close()

    run(scenario)

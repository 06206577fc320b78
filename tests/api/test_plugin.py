"""The recursor plugin's datagram endpoint over real UDP on 127.0.0.1, in front of a real
Learner and Policy (the same harness as the HTTP API's tests: only the kernel is replaced).

It must answer exactly as ``POST /v1/answers`` does, and treat hostile datagrams as the
API treats hostile bodies: an error reply naming the problem, nothing routed, and the
endpoint still serving.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iptserver.api.plugin import (
    MAX_DATAGRAM,
    REPLY_GAP,
    BadDatagram,
    format_error,
    parse_request,
    start_plugin_endpoint,
)
from iptserver.dataplane.plan import LearnedEntry
from iptserver.errors import DataplaneError
from iptserver.learning import Learner
from tests.api.harness import TOKEN, Harness, make_harness

ANSWER = (
    b"IPT1 7 3600\ns3cret-token\nwww.example.com. cdn.example.net.\n198.51.100.10 2001:db8::1\n"
)


SHARED_ANSWER = ANSWER.replace(b"IPT1 7 3600\n", b"IPT1 7 3600 shared\n")


def another(answer: bytes, n: int) -> bytes:
    """``answer`` with other addresses: a repeat of an answer within its hold is not
    written again and gets a TTL capped to what is left of its entries."""
    return answer.replace(b"198.51.100.10 2001:db8::1", f"198.51.100.{n} 2001:db8::{n:x}".encode())


class Client:
    """A plugin's side: one datagram out, its reply back (or None after ``timeout``)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.connect(("127.0.0.1", port))

    async def ask(self, data: bytes, timeout: float = 5.0) -> bytes | None:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(self.sock, data)
        try:
            return await asyncio.wait_for(loop.sock_recv(self.sock, 65536), timeout)
        except (TimeoutError, ConnectionRefusedError):
            return None


def serve(
    scenario: Callable[[Client, Harness], Awaitable[None]], token: str | None = TOKEN
) -> Harness:
    harness = make_harness()

    async def main() -> None:
        endpoint = await start_plugin_endpoint(
            harness.learner, ipaddress.ip_address("127.0.0.1"), 0, token
        )
        client = Client(endpoint.port)
        try:
            await scenario(client, harness)
        finally:
            client.sock.close()
            endpoint.close()

    asyncio.run(main())
    return harness


def test_answer_is_routed_and_its_ttl_capped_as_by_the_api() -> None:
    async def scenario(client: Client, h: Harness) -> None:
        assert await client.ask(ANSWER) == b"IPT1 7 120\n"  # the rule's hold
        short = b"IPT1 8 30\ns3cret-token\nwww.example.com.\n198.51.100.10\n"
        assert await client.ask(short) == b"IPT1 8 30\n"
        unmatched = b"IPT1 9 9000\ns3cret-token\nOther.ORG.\n192.0.2.1\n"
        assert await client.ask(unmatched) == b"IPT1 9 300\n"  # the schema's hold

    h = serve(scenario)
    learned = {(str(e.network), e.mark, e.timeout) for e in h.kernel.applied}
    assert learned == {("198.51.100.10/32", 256, 122), ("2001:db8::1/128", 256, 122)}
    assert h.learner.recent[-1][0] == ("other.org",)
    assert h.learner.recent[0][0] == ("www.example.com", "cdn.example.net")
    assert h.learner.answers == 3


def test_kernel_failure_is_an_error_reply_then_it_recovers() -> None:
    async def scenario(client: Client, h: Harness) -> None:
        h.kernel.fail = True
        reply = await client.ask(ANSWER)
        assert reply is not None and reply.startswith(b"IPT1 7 ERR the kernel refused")
        assert b"test failure" in reply
        h.kernel.fail = False
        assert await client.ask(ANSWER) == b"IPT1 7 120\n"

    serve(scenario)


def test_token() -> None:
    async def scenario(client: Client, h: Harness) -> None:
        for wrong in (b"", b"s3cret-tokem", b"s3cret-token ", b"Bearer s3cret-token"):
            reply = await client.ask(ANSWER.replace(b"s3cret-token", wrong, 1))
            assert reply == b"IPT1 7 ERR a valid token is required on the second line\n"
        assert await client.ask(ANSWER) == b"IPT1 7 120\n"

    h = serve(scenario)
    assert h.learner.answers == 1


def test_no_token_configured_needs_none() -> None:
    async def scenario(client: Client, h: Harness) -> None:
        assert await client.ask(ANSWER.replace(b"s3cret-token", b"", 1)) == b"IPT1 7 120\n"
        assert await client.ask(another(ANSWER, 2)) == b"IPT1 7 120\n"  # a token: ignored

    serve(scenario, token=None)


@pytest.mark.parametrize(
    ("data", "expected_id", "expected"),
    [
        (b"", "-", "expected 4 lines"),
        (b"IPT1 7 60\n\nexample.com\n192.0.2.1", "-", "expected 4 lines"),
        (b"IPT1 7 60\n\nexample.com\n192.0.2.1\n\n", "-", "expected 4 lines"),
        (b"IPT1 7 60\r\n\r\nexample.com\r\n192.0.2.1\r\n", "7", "ttl must be"),
        (b"IPT2 7 60\n\nexample.com\n192.0.2.1\n", "-", "the first line"),
        (b"IPT1 7\n\nexample.com\n192.0.2.1\n", "-", "the first line"),
        (b"IPT1 7 60 1\n\nexample.com\n192.0.2.1\n", "-", "the first line"),
        (b"IPT1 -7 60\n\nexample.com\n192.0.2.1\n", "-", "the id must be"),
        (b"IPT1 x 60\n\nexample.com\n192.0.2.1\n", "-", "the id must be"),
        (b"IPT1 99999999999999999999 60\n\nexample.com\n192.0.2.1\n", "-", "the id must be"),
        (b"IPT1 \xd9\xa3 60\n\nexample.com\n192.0.2.1\n", "-", "not ASCII"),
        (b"IPT1 7 -1\n\nexample.com\n192.0.2.1\n", "7", "ttl must be"),
        (b"IPT1 7 2147483648\n\nexample.com\n192.0.2.1\n", "7", "ttl must be"),
        (b"IPT1 7 1.5\n\nexample.com\n192.0.2.1\n", "7", "ttl must be"),
        (b"IPT1 7 \n\nexample.com\n192.0.2.1\n", "7", "ttl must be"),
        (b"IPT1 7 60\n\n\n192.0.2.1\n", "7", "not a DNS name"),
        (b"IPT1 7 60\n\n.\n192.0.2.1\n", "7", "not a DNS name"),
        (b"IPT1 7 60\n\nexample.com  cdn.net\n192.0.2.1\n", "7", "not a DNS name"),
        (b"IPT1 7 60\n\na\tb.com\n192.0.2.1\n", "7", "not a DNS name"),
        (b"IPT1 7 60\n\n" + b"a" * 300 + b"\n192.0.2.1\n", "7", "not a DNS name"),
        (b"IPT1 7 60\n\n" + b"x.net " * 17 + b"x.net\n192.0.2.1\n", "7", "chain has more"),
        (b"IPT1 7 60\n\nexample.com\n\n", "7", "not an IP"),
        (b"IPT1 7 60\n\nexample.com\n300.1.1.1\n", "7", "not an IP"),
        (b"IPT1 7 60\n\nexample.com\n192.0.2.0/24\n", "7", "not an IP"),
        (b"IPT1 7 60\n\nexample.com\n192.0.2.1  192.0.2.2\n", "7", "not an IP"),
        (b"IPT1 7 60\n\nexample.com\n" + b"192.0.2.1 " * 512 + b"192.0.2.1\n", "7", "more than"),
        (b"\xff\xfe\x00garbage", "-", "not ASCII"),
        (b"x" * (MAX_DATAGRAM + 1), "-", "larger than"),
    ],
    ids=lambda value: value[:24].decode("ascii", "replace") if isinstance(value, bytes) else value,
)
def test_bad_datagrams_get_an_error_naming_the_problem(
    data: bytes, expected_id: str, expected: str
) -> None:
    with pytest.raises(BadDatagram, match=expected) as raised:
        parse_request(data, None)
    assert raised.value.request_id == expected_id

    async def scenario(client: Client, h: Harness) -> None:
        # The bad datagram, then a good one: the error reply (sent at once) comes first,
        # unless it would be longer than the bad datagram (no more bytes out than in, so
        # a reflection would gain nothing): then the good one's reply is the first.
        error = format_error(expected_id, str(raised.value))
        good = ANSWER.replace(b"s3cret-token", b"", 1)
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(client.sock, data)
        first = await client.ask(good)
        if len(error) <= len(data):
            assert first == error
            assert await asyncio.wait_for(loop.sock_recv(client.sock, 512), 5) == b"IPT1 7 120\n"
        else:
            assert first == b"IPT1 7 120\n"

    h = serve(scenario, token=None)
    assert h.learner.answers == 1  # the good one after it


def test_error_replies_are_one_short_ascii_line() -> None:
    reply = format_error("3", "bad \n\x00 é" + "x" * 1000)
    assert reply.startswith(b"IPT1 3 ERR bad ?? ?") and reply.endswith(b"\n")
    assert reply.count(b"\n") == 1 and len(reply) < 512  # the recursor reads 512 bytes


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048) | st.text(max_size=300).map(lambda t: t.encode()))
def test_any_datagram_is_rejected_or_parsed_never_crashes(data: bytes) -> None:
    try:
        request = parse_request(data, TOKEN)
    except BadDatagram as e:
        assert str(e)
        assert e.request_id == "-" or e.request_id.isdigit()
    else:
        assert request.names and request.addresses


def test_many_answers_at_once_all_get_their_own_reply() -> None:
    async def scenario(client: Client, h: Harness) -> None:
        clients = [Client(client.sock.getpeername()[1]) for _ in range(50)]
        try:
            replies = await asyncio.gather(
                *(
                    c.ask(f"IPT1 {i} 60\n{TOKEN}\nhost{i}.example.com.\n198.51.100.{i}\n".encode())
                    for i, c in enumerate(clients)
                )
            )
        finally:
            for c in clients:
                c.sock.close()
        assert replies == [f"IPT1 {i} 60\n".encode() for i in range(50)]

    h = serve(scenario)
    assert len(h.kernel.applied) == 50


@dataclass
class KernelNow:
    """A Learner's ``apply_now``: writes (records) at once, refuses, or is busy."""

    state: str = "idle"  # or "refusing", "busy"
    writes: list[list[LearnedEntry]] = field(default_factory=list)

    def apply_now(self, entries: list[LearnedEntry]) -> bool:
        if self.state == "refusing":
            raise DataplaneError("ipset ipts-d0-4: the kernel refused the entries: test")
        if self.state == "busy":
            return False
        self.writes.append(list(entries))
        return True


def test_answers_read_together_share_one_immediate_write_or_wait_for_a_busy_kernel() -> None:
    harness = make_harness()
    now = KernelNow()
    learner = Learner(harness.learner.state, harness.kernel.apply, apply_now=now.apply_now)

    def answer(i: int) -> bytes:
        return f"IPT1 {i} 60\n{TOKEN}\nhost{i}.example.com.\n198.51.100.{i}\n".encode()

    async def main() -> None:
        endpoint = await start_plugin_endpoint(learner, ipaddress.ip_address("127.0.0.1"), 0, TOKEN)
        clients = [Client(endpoint.port) for _ in range(3)]
        loop = asyncio.get_running_loop()
        try:
            for i, c in enumerate(clients):  # all sent before the endpoint wakes up
                await loop.sock_sendall(c.sock, answer(i))
            replies = [await asyncio.wait_for(loop.sock_recv(c.sock, 512), 5) for c in clients]
            assert replies == [f"IPT1 {i} 60\n".encode() for i in range(3)]
            assert [len(batch) for batch in now.writes] == [3]  # one write for the three
            assert harness.kernel.applied == []

            now.state = "refusing"
            reply = await clients[0].ask(answer(10))
            assert reply is not None and reply.startswith(b"IPT1 10 ERR the kernel refused")

            now.state = "busy"  # e.g. a reload on the kernel thread: the Batcher writes it
            assert await clients[0].ask(answer(11)) == b"IPT1 11 60\n"
            assert [str(e.network) for e in harness.kernel.applied] == ["198.51.100.11/32"]
            assert len(now.writes) == 1
        finally:
            for c in clients:
                c.sock.close()
            endpoint.close()

    asyncio.run(main())


def test_replies_to_a_shared_source_port_are_spaced() -> None:
    """Two requests in flight from one port that says it may be shared (the recursor's
    sockets can share one): the second reply goes REPLY_GAP after the first, so a socket
    that stopped reading after the first has gone by then, and the other gets its reply.
    A request sent after the last reply came (a new socket that got the port again) is
    not held back."""
    harness = make_harness()

    async def main() -> None:
        endpoint = await start_plugin_endpoint(
            harness.learner, ipaddress.ip_address("127.0.0.1"), 0, TOKEN
        )
        client = Client(endpoint.port)
        loop = asyncio.get_running_loop()
        try:
            first = SHARED_ANSWER
            second = first.replace(b"IPT1 7 ", b"IPT1 8 ")
            await loop.sock_sendall(client.sock, first)
            await loop.sock_sendall(client.sock, second)
            first_reply = await asyncio.wait_for(loop.sock_recv(client.sock, 512), 5)
            first_at = loop.time()
            second_reply = await asyncio.wait_for(loop.sock_recv(client.sock, 512), 5)
            assert loop.time() - first_at >= REPLY_GAP * 0.9  # the loop's timer resolution
            assert {first_reply, second_reply} == {b"IPT1 7 120\n", b"IPT1 8 120\n"}
            assert endpoint.spaced == 1
            for n in range(20, 23):  # one after the other: none held back
                assert await client.ask(another(SHARED_ANSWER, n)) == b"IPT1 7 120\n"
            assert endpoint.spaced == 1
        finally:
            client.sock.close()
            endpoint.close()

    asyncio.run(main())


def test_requests_from_a_port_of_its_own_are_answered_at_once() -> None:
    """A client that sends many requests from one socket, without ``shared``, gets
    every reply at once (with spacing 200 pipelined requests would take 4 s)."""
    harness = make_harness()

    async def main() -> None:
        endpoint = await start_plugin_endpoint(
            harness.learner, ipaddress.ip_address("127.0.0.1"), 0, TOKEN
        )
        client = Client(endpoint.port)
        loop = asyncio.get_running_loop()
        try:
            for n in range(200):
                request = another(ANSWER, n % 250).replace(b"IPT1 7 ", f"IPT1 {n} ".encode())
                await loop.sock_sendall(client.sock, request)
            replies = set()
            while len(replies) < 200:
                reply = await asyncio.wait_for(loop.sock_recv(client.sock, 512), 5)
                replies.add(reply.split(b" ")[1])
            assert replies == {str(n).encode() for n in range(200)}
            assert endpoint.spaced == 0
        finally:
            client.sock.close()
            endpoint.close()

    asyncio.run(main())

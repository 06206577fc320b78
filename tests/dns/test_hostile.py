"""Malformed and hostile client packets: FORMERR or silence, counted, and the next good
query is still answered. Nothing here may reach the log as a traceback."""

from __future__ import annotations

import asyncio
import logging
import random
import struct

import pytest
from dnslib import OPCODE, RCODE

from tests.dns import client
from tests.dns.client import frame, parse, query, tcp_exchange, tcp_read, udp_exchange
from tests.dns.harness import Lab, lab, run

QID = 0x5151


def packet(flags: int = 0x0100, qd: int = 1, ar: int = 0, body: bytes = b"") -> bytes:
    return struct.pack("!HHHHHH", QID, flags, qd, 0, 0, ar) + body


GOOD_QUESTION = b"\x03www\x07example\x04test\x00\x00\x01\x00\x01"
OPT = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"

# (bytes, what the proxy does: an rcode, or None for silence, and the counter it bumps)
HOSTILE = [
    pytest.param(b"", None, "dropped", id="empty"),
    pytest.param(b"\x51\x51\x01", None, "dropped", id="truncated-header"),
    pytest.param(packet(0x8180, body=GOOD_QUESTION), None, "dropped", id="a-response"),
    pytest.param(packet(), RCODE.FORMERR, "formerr", id="header-only"),
    pytest.param(
        packet(body=b"\x3fwww\x00\x00\x01\x00\x01"), RCODE.FORMERR, "formerr", id="label-len"
    ),
    pytest.param(packet(body=b"\x43www\x00\x00\x01"), RCODE.FORMERR, "formerr", id="label-type"),
    pytest.param(packet(body=b"\xc0\x0c\x00\x01\x00\x01"), RCODE.FORMERR, "formerr", id="ptr-loop"),
    pytest.param(
        packet(body=(b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01"),
        RCODE.FORMERR,
        "formerr",
        id="name-too-long",
    ),
    pytest.param(packet(body=GOOD_QUESTION[:-3]), RCODE.FORMERR, "formerr", id="question-cut"),
    pytest.param(packet(qd=0), RCODE.FORMERR, "formerr", id="no-question"),
    pytest.param(packet(qd=2, body=GOOD_QUESTION * 2), RCODE.FORMERR, "formerr", id="two-q"),
    pytest.param(
        packet(ar=2, body=GOOD_QUESTION + OPT + OPT), RCODE.FORMERR, "formerr", id="two-opt"
    ),
    pytest.param(
        packet(ar=1, body=GOOD_QUESTION + OPT[:5]), RCODE.FORMERR, "formerr", id="opt-cut"
    ),
    pytest.param(
        packet(0x0100 | OPCODE.UPDATE << 11, body=GOOD_QUESTION),
        RCODE.NOTIMP,
        "notimp",
        id="update",
    ),
]


async def expect(lb: Lab, wire: bytes, rcode: int | None) -> None:
    if rcode is None:
        assert await client.udp_silence(lb.udp, wire, 0.15)
    else:
        reply = parse(await udp_exchange(lb.udp, wire))
        assert (reply.header.id, reply.header.rcode) == (QID, rcode)


async def still_answers(lb: Lab, transport: str = "udp") -> None:
    wire = query("www.example.test")
    if transport == "udp":
        reply = await udp_exchange(lb.udp, wire)
    else:
        (reply,) = await tcp_exchange(lb.tcp, [wire])
    assert str(parse(reply).rr[0].rdata) == "198.51.100.10"


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize(("wire", "rcode", "counter"), HOSTILE)
def test_hostile_udp_packet(
    wire: bytes, rcode: int | None, counter: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="iptserver")

    async def scenario() -> None:
        async with lab() as lb:
            await expect(lb, wire, rcode)
            assert getattr(lb.proxy.counters, counter) == 1
            assert lb.authority.seen == []
            await still_answers(lb)

    run(scenario)
    no_tracebacks(caplog)
    assert any("127.0.0.1:" in r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)


@pytest.mark.parametrize(("wire", "rcode", "counter"), HOSTILE)
def test_hostile_tcp_frame(wire: bytes, rcode: int | None, counter: str) -> None:
    """Over TCP the frame length keeps the stream in step: the connection stays usable."""

    async def scenario() -> None:
        async with lab() as lb:
            reader, writer = await client.tcp_connect(lb.tcp)
            writer.write(frame(wire) + frame(query("www.example.test", qid=7)))
            first = parse(await tcp_read(reader))
            if rcode is not None:
                assert (first.header.id, first.header.rcode) == (QID, rcode)
                first = parse(await tcp_read(reader))
            assert first.header.id == 7
            assert str(first.rr[0].rdata) == "198.51.100.10"
            assert getattr(lb.proxy.counters, counter) == 1
            writer.close()

    run(scenario)


def test_random_packets(caplog: pytest.LogCaptureFixture) -> None:
    """500 random datagrams (some with a plausible header) then one good query."""
    caplog.set_level(logging.DEBUG, logger="iptserver")
    rng = random.Random(20240601)

    async def scenario() -> None:
        async with lab() as lb:
            with client.udp_socket(lb.udp) as sock:
                for i in range(500):
                    body = rng.randbytes(rng.randrange(0, 300))
                    if i % 2:
                        body = (
                            packet(rng.choice([0x0100, 0x0000]), qd=1, ar=rng.randrange(3)) + body
                        )
                    sock.send(body)
                    await asyncio.sleep(0)  # a blast would overflow the socket buffer
            await asyncio.sleep(0.2)
            await still_answers(lb)
            c = lb.proxy.counters
            assert c.queries == 501
            assert c.formerr + c.dropped + c.notimp + c.answers >= 500

    run(scenario)
    no_tracebacks(caplog)


@pytest.mark.parametrize(
    ("data", "counted"),
    [
        (b"\x00\x00", "dropped"),  # a zero-length frame
        (b"\xff\xff" + b"\x00" * 20, "dropped"),  # says 65535 bytes, sends 20, then EOF
        (b"\x00", "dropped"),  # half a length prefix, then EOF
        (b"\x00\x05abcde", "dropped"),  # a frame shorter than a header
    ],
    ids=["zero-length", "huge-length", "half-prefix", "tiny-frame"],
)
def test_bad_tcp_framing(data: bytes, counted: str) -> None:
    async def scenario() -> None:
        async with lab() as lb:
            reader, writer = await client.tcp_connect(lb.tcp)
            writer.write(data)
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 2.0) == b""  # closed, no reply
            writer.close()
            assert getattr(lb.proxy.counters, counted) == 1
            await still_answers(lb, "tcp")

    run(scenario)


def test_zero_length_frame_keeps_the_connection() -> None:
    async def scenario() -> None:
        async with lab() as lb:
            reader, writer = await client.tcp_connect(lb.tcp)
            writer.write(b"\x00\x00" + frame(query("www.example.test", qid=9)))
            assert parse(await tcp_read(reader)).header.id == 9
            writer.close()

    run(scenario)


def test_idle_tcp_connection_is_closed() -> None:
    async def scenario() -> None:
        async with lab(tcp_idle_timeout=0.2) as lb:
            reader, writer = await client.tcp_connect(lb.tcp)
            assert await asyncio.wait_for(reader.read(), 2.0) == b""
            writer.close()
            # a connection stuck inside a frame is closed the same way
            reader, writer = await client.tcp_connect(lb.tcp)
            writer.write(b"\x00\x40abc")
            assert await asyncio.wait_for(reader.read(), 2.0) == b""
            writer.close()
            assert lb.proxy.counters.dropped == 1

    run(scenario)


def test_tcp_connection_cap() -> None:
    async def scenario() -> None:
        async with lab(max_tcp_clients=2) as lb:
            held = [await client.tcp_connect(lb.tcp) for _ in range(2)]
            await asyncio.sleep(0.05)
            reader, writer = await client.tcp_connect(lb.tcp)
            assert await asyncio.wait_for(reader.read(), 2.0) == b""  # closed at once
            writer.close()
            assert lb.proxy.counters.tcp_refused == 1
            for r, w in held:  # the two already open still work
                w.write(frame(query("www.example.test")))
                assert parse(await tcp_read(r)).rr
                w.close()

    run(scenario)

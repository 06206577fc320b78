"""Upstreams that are dead, refuse, lie or babble: the next one is asked, or SERVFAIL."""

from __future__ import annotations

import time
from typing import Any

import pytest
from dnslib import RCODE

from iptserver.dns import Transport
from iptserver.lab.authority import DECOY, Mode
from tests.dns.client import parse, query, tcp_exchange, udp_exchange
from tests.dns.harness import Lab, closed_endpoint, lab, run

# A loopback authority answers in about a millisecond; these keep the dead-upstream
# cases short while leaving that a hundredfold margin.
QUICK: dict[str, Any] = {"upstream_timeout": 0.1, "timeout": 0.25}

BROKEN = [
    pytest.param(Mode.SILENT, "upstream_timeouts", id="silent"),
    pytest.param(Mode.GARBAGE, "upstream_errors", id="garbage"),
    pytest.param(Mode.WRONG_ID, "upstream_errors", id="wrong-id"),
    pytest.param(Mode.WRONG_QUESTION, "upstream_errors", id="wrong-question"),
    pytest.param(Mode.REFUSED, "upstream_errors", id="refused"),
    pytest.param(None, "upstream_errors", id="port-closed"),
]


async def ask(lb: Lab, transport: Transport, name: str = "www.example.test") -> bytes:
    wire = query(name, qid=0x3C3C)
    if transport is Transport.UDP:
        return await udp_exchange(lb.udp, wire)
    (reply,) = await tcp_exchange(lb.tcp, [wire])
    return reply


@pytest.mark.parametrize("transport", [Transport.UDP, Transport.TCP], ids=lambda t: t.value)
@pytest.mark.parametrize(("first", "counter"), BROKEN)
def test_failover_to_the_second_upstream(
    first: Mode | None, counter: str, transport: Transport
) -> None:
    async def scenario() -> None:
        broken = closed_endpoint() if first is None else first
        async with lab(broken, Mode.ANSWER, **QUICK) as lb:
            reply = parse(await ask(lb, transport))
            assert reply.header.id == 0x3C3C
            assert reply.header.rcode == RCODE.NOERROR
            assert str(reply.rr[0].rdata) == "198.51.100.10"
            assert getattr(lb.proxy.counters, counter) >= 1
            assert lb.sink.addresses() == {"198.51.100.10"}
            # the one that answered is asked first from now on
            asked_before = len(lb.authorities[0].seen) if first is not None else 0
            await ask(lb, transport)
            if first is not None:
                assert len(lb.authorities[0].seen) == asked_before
            assert lb.authorities[-1].seen_names() == ["www.example.test"] * 2

    run(scenario)


@pytest.mark.parametrize("transport", [Transport.UDP, Transport.TCP], ids=lambda t: t.value)
@pytest.mark.parametrize(
    "modes",
    [
        (Mode.SILENT, Mode.SILENT),
        (Mode.GARBAGE, Mode.WRONG_ID),
        (Mode.REFUSED, None),
        (Mode.SILENT, Mode.SILENT, Mode.SILENT),
    ],
    ids=["two-silent", "garbage-then-wrong-id", "refused-then-closed", "three-silent"],
)
def test_all_upstreams_fail_servfail_within_the_timeout(
    modes: tuple[Mode | None, ...], transport: Transport
) -> None:
    async def scenario() -> None:
        upstreams = [closed_endpoint() if m is None else m for m in modes]
        async with lab(*upstreams, **QUICK) as lb:
            started = time.monotonic()
            reply = parse(await ask(lb, transport))
            elapsed = time.monotonic() - started
            assert reply.header.id == 0x3C3C
            assert reply.header.rcode == RCODE.SERVFAIL
            assert elapsed < QUICK["timeout"] + 0.15
            assert lb.proxy.counters.servfail == 1
            assert lb.sink.started == []
            # the proxy is still fine
            assert lb.proxy.counters.queries == 1

    run(scenario)


def test_spoofed_reply_is_ignored_and_the_real_one_taken() -> None:
    async def scenario() -> None:
        async with lab(Mode.SPOOF_FIRST) as lb:
            reply = parse(await udp_exchange(lb.udp, query("www.example.test")))
            assert [str(rr.rdata) for rr in reply.rr] == ["198.51.100.10"]
            assert str(DECOY) not in lb.sink.addresses()
            assert lb.proxy.counters.upstream_errors == 1

    run(scenario)


def test_the_last_upstream_gets_the_whole_time_left() -> None:
    """One upstream answering after 0.5 s, a try being 0.2 s and the query's time 1 s:
    the answer comes (it used to be SERVFAIL once the try was over)."""

    async def scenario() -> None:
        async with lab(Mode.ANSWER, upstream_timeout=0.2, timeout=1.0) as lb:
            started = time.monotonic()
            reply = parse(await udp_exchange(lb.udp, query("slow.example.test"), timeout=3.0))
            assert reply.header.rcode == RCODE.NOERROR
            assert 0.45 < time.monotonic() - started < 1.0
            assert lb.proxy.counters.upstream_timeouts == 0

    run(scenario)

"""The sink could not route an answer: fail-open answers (short TTL), fail-closed SERVFAILs."""

from __future__ import annotations

import logging
import time

import pytest
from dnslib import RCODE

from tests.dns.client import parse, query, udp_exchange
from tests.dns.harness import lab, run
from tests.dns.sinks import RecordingSink

FAILURES = [
    pytest.param({"fail": True}, 0, id="dataplane-error"),
    pytest.param({"delay": 2.0}, 1, id="timeout"),
    pytest.param({"crash": True}, 0, id="sink-bug"),
    pytest.param({"full": True}, 0, id="set-full"),
]


@pytest.mark.parametrize("fail_closed", [False, True], ids=["fail-open", "fail-closed"])
@pytest.mark.parametrize(("behaviour", "timeouts"), FAILURES)
def test_sink_failure(
    behaviour: dict[str, object],
    timeouts: int,
    fail_closed: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        sink = RecordingSink(**behaviour)  # type: ignore[arg-type]
        async with lab(sink=sink, sink_timeout=0.2, fail_closed=fail_closed) as lb:
            started = time.monotonic()
            reply = parse(await udp_exchange(lb.udp, query("www.example.test", qid=31)))
            assert time.monotonic() - started < 0.6
            assert reply.header.id == 31
            if fail_closed:
                assert reply.header.rcode == RCODE.SERVFAIL
                assert reply.rr == []
                assert lb.proxy.counters.servfail == 1
            else:
                assert reply.header.rcode == RCODE.NOERROR
                assert [(str(rr.rdata), rr.ttl) for rr in reply.rr] == [("198.51.100.10", 30)]
            assert sink.started == [("www.example.test",)]
            assert lb.proxy.counters.sink_errors == 1
            assert lb.proxy.counters.sink_timeouts == timeouts
            assert lb.proxy.counters.set_full == int("full" in behaviour)
            assert lb.proxy.counters.learned == 0

    run(scenario)
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "www.example.test" in warning.getMessage()
    assert ("fail-closed" if fail_closed else "fail-open") in warning.getMessage()
    # only a bug in the sink itself deserves a traceback
    assert bool(warning.exc_info) == ("crash" in behaviour)


def test_fail_open_ttl_is_configurable() -> None:
    async def scenario() -> None:
        async with lab(sink=RecordingSink(fail=True), fail_open_ttl=5) as lb:
            reply = parse(await udp_exchange(lb.udp, query("www.example.test")))
            assert [rr.ttl for rr in reply.rr] == [5]

    run(scenario)


def test_a_slow_sink_within_its_bound_is_waited_for() -> None:
    async def scenario() -> None:
        async with lab(sink=RecordingSink(delay=0.1, cap=77), sink_timeout=1.0) as lb:
            reply = parse(await udp_exchange(lb.udp, query("www.example.test")))
            assert [rr.ttl for rr in reply.rr] == [77]
            assert lb.proxy.counters.sink_errors == 0

    run(scenario)

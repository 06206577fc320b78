"""The proxy's counters: plain integers the daemon exports, counted where they are given."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress

from iptserver.dns import DnsCounters, DnsProxy, DnsProxyConfig, Transport
from tests.dns.sinks import RecordingSink

LOOPBACK = ipaddress.ip_address("127.0.0.1")


def test_snapshot_names_every_counter_and_is_a_copy() -> None:
    counters = DnsCounters(queries=3, dropped=1)
    snapshot = counters.snapshot()
    assert list(snapshot) == [f.name for f in dataclasses.fields(DnsCounters)]
    assert {k: v for k, v in snapshot.items() if v} == {"queries": 3, "dropped": 1}
    counters.queries += 1
    assert snapshot["queries"] == 3


def test_the_proxy_counts_into_the_counters_it_is_given() -> None:
    counters = DnsCounters()
    config = DnsProxyConfig(listen=((LOOPBACK, 0),), upstream=((LOOPBACK, 53),))
    proxy = DnsProxy(config, RecordingSink(), counters=counters)
    assert proxy.counters is counters
    assert asyncio.run(proxy.answer(b"", "192.0.2.1:5353", Transport.UDP)) is None
    assert (counters.queries, counters.dropped, counters.answers) == (1, 1, 0)

"""A bounded fuzz run against the real daemon: 20,000 datagrams (random bytes, queries
damaged as parsers meet them, whole queries) from the client at full speed, the rate
limit off so that every one is read. Every reply must be a DNS reply to an ID that was
sent, the proxy's own replies no larger than their query, and a control query between
the noise must keep getting its address. ``make fuzz`` runs a million."""

from __future__ import annotations

from iptserver.lab.fuzz import fuzz
from iptserver.lab.zones import ZONE
from tests.e2e.conftest import BASE_SCHEMA, ENTRY_DNS, Iptservers

SCHEMA = (
    BASE_SCHEMA.replace("dns:\n", "dns:\n  rate_limit: {client: 0, network: 0}\n")
    + """
default: direct
rules:
  - exit: ru
    domains: [ru]
"""
)
CONTROL = ("mail.ru", ZONE["mail.ru"][0].value)


def test_fuzzed_datagrams_get_dns_replies_or_nothing(iptservers: Iptservers) -> None:
    daemon = iptservers.start(SCHEMA)
    lab = daemon.lab
    names = [*ZONE, *(f"n{i}.bench.ru" for i in range(50)), "x" * 63 + ".ru"]
    result = fuzz(
        lambda family, kind: lab.socket("client", family, kind),
        (ENTRY_DNS, 53),
        20_000,
        names,
        CONTROL,
        rate=4000,
        control_every=2000,
    )
    assert not result.problems, [(why, data.hex()) for data, why in result.samples[:10]]
    assert result.controls == 11
    assert result.replies > 1000, result
    assert daemon.alive and "Traceback" not in daemon.output, daemon.log

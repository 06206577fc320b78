"""The hold and TTL arithmetic of learned entries, without a kernel or a clock."""

from __future__ import annotations

import ipaddress

import pytest

from iptserver.dataplane.plan import plan
from iptserver.learning.holds import (
    HOLD_MARGIN,
    PRUNE_AT,
    REWRITE_AT,
    RuleTarget,
    Written,
    WrittenEntries,
    client_ttl,
    repeat_ttl,
    route_answer,
    rule_targets,
)
from iptserver.policy import Decision, MatchKind, Reason
from iptserver.schema import parse_schema

SCHEMA = """
exits:
  uk: {interface: wg-uk}
  ru: {interface: wg-ru}
rules:
  - exit: uk
    domains: [bbc.co.uk]
    hold: 100
  - exit: ru
    domains: [ru]
    weight: 5
  - exit: uk
    nets: [203.0.113.0/24]
ttl: {hold: 300, client_max: 200}
"""

TARGET = RuleTarget(hold=100, mark=0x100, sets=("ipts-d0-4", "ipts-d0-6"))


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def domain(address: str, rule: int = 0, exit_: str = "uk") -> Decision:
    return Decision(ip(address), exit_, Reason.RULE, rule, MatchKind.DOMAIN)


def test_rule_targets_give_each_domain_rule_its_hold_mark_and_sets() -> None:
    schema = parse_schema(SCHEMA, "holds.yaml").schema
    kernel = plan(schema, {})
    targets = rule_targets(schema, kernel)
    assert set(targets) == {0, 1}  # the net rule learns nothing
    assert targets[0] == RuleTarget(
        100, kernel.exit("uk").mark, (kernel.learned_set(0, 4), kernel.learned_set(0, 6))
    )
    assert targets[1].hold == 300  # ttl.hold when the rule has none
    assert targets[1].mark == kernel.exit("ru").mark
    assert targets[1].sets == (kernel.learned_set(5, 4), kernel.learned_set(5, 6))


@pytest.mark.parametrize(
    ("ttl", "client_max", "expected"),
    [(3600, None, 300), (60, None, 60), (3600, 120, 120), (0, 120, 0)],
    ids=["hold-caps", "shorter-kept", "client-max-caps", "zero"],
)
def test_client_ttl(ttl: int, client_max: int | None, expected: int) -> None:
    schema = parse_schema(SCHEMA, "holds.yaml").schema
    caps = schema.ttl.model_copy(update={"client_max": client_max})
    assert client_ttl(ttl, caps) == expected


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        (None, None),
        ((0x200, 1000.0 + 90, "", 0), None),  # another mark: rewrite
        ((0x100, 1000.0 + 90 + HOLD_MARGIN, "", 0), 90),
        ((0x100, 1000.0 + 500, "", 0), 100),  # never more than the hold
        ((0x100, 1000.0 + 100 * REWRITE_AT + HOLD_MARGIN, "", 0), 50),
        ((0x100, 1000.0 + 100 * REWRITE_AT + HOLD_MARGIN - 1, "", 0), None),
    ],
    ids=["unknown", "other-mark", "held", "capped-to-hold", "at-threshold", "below-threshold"],
)
def test_repeat_ttl(written: Written | None, expected: int | None) -> None:
    assert repeat_ttl(written, TARGET, now=1000.0) == expected


def test_route_answer_writes_host_entries_of_domain_decisions_only() -> None:
    written = WrittenEntries()
    decisions = [
        domain("198.51.100.7"),
        domain("2001:db8::7"),
        Decision(ip("203.0.113.9"), "uk", Reason.RULE, 2, MatchKind.NET),
        Decision(ip("10.0.0.1"), None, Reason.PRIVATE),
    ]
    routed = route_answer(decisions, {0: TARGET}, written, 250, ("www.bbc.co.uk",), 1000.0)
    assert [(e.set_name, str(e.network), e.mark, e.timeout) for e in routed.entries] == [
        ("ipts-d0-4", "198.51.100.7/32", 0x100, 100 + HOLD_MARGIN),
        ("ipts-d0-6", "2001:db8::7/128", 0x100, 100 + HOLD_MARGIN),
    ]
    assert routed.ttl == 100  # capped to the hold
    assert routed.shortest == 100
    assert routed.exits == ["uk", "uk"]
    assert routed.rules == [0, 0]
    assert routed.names == ("www.bbc.co.uk",)
    assert routed.pending


def test_a_repeat_is_not_written_again_while_held_and_its_ttl_is_what_is_left() -> None:
    written = WrittenEntries()
    first = route_answer([domain("198.51.100.7")], {0: TARGET}, written, 250, ("a",), 1000.0)
    written.remember(first)
    later = route_answer([domain("198.51.100.7")], {0: TARGET}, written, 250, ("b",), 1030.0)
    assert later.entries == []
    assert later.ttl == 100 + HOLD_MARGIN - 30 - HOLD_MARGIN
    assert later.exits == ["uk"]  # still counted as routed
    late = route_answer([domain("198.51.100.7")], {0: TARGET}, written, 250, ("c",), 1060.0)
    assert len(late.entries) == 1  # less than REWRITE_AT of the hold left: written again
    assert written.written_by("ipts-d0-4", 4, int(ip("198.51.100.7"))) == (("a",), 0)


def test_answers_decided_before_forget_are_not_remembered() -> None:
    written = WrittenEntries()
    routed = route_answer([domain("198.51.100.7")], {0: TARGET}, written, 250, ("a",), 1000.0)
    written.forget()  # a reload while the write was on its way
    written.remember(routed)
    assert len(written) == 0
    again = route_answer([domain("198.51.100.7")], {0: TARGET}, written, 250, ("a",), 1001.0)
    assert len(again.entries) == 1


def test_expired_entries_are_swept_once_the_table_is_large() -> None:
    written = WrittenEntries()
    base = int(ipaddress.IPv4Address("198.18.0.0"))
    for i in range(PRUNE_AT - 1):
        address = str(ipaddress.IPv4Address(base + i))
        written.remember(route_answer([domain(address)], {0: TARGET}, written, 250, (), 0.0))
    assert len(written) == PRUNE_AT - 1
    # Long after those expired, one more reaches the threshold: only it is left.
    written.remember(route_answer([domain("203.0.113.1")], {0: TARGET}, written, 250, (), 1e6))
    assert len(written) == 1


def test_past_its_limit_the_oldest_written_are_forgotten_first() -> None:
    written = WrittenEntries(limit=PRUNE_AT)
    base = int(ipaddress.IPv4Address("198.18.0.0"))
    for i in range(PRUNE_AT + 1):  # none expired: all live, one over the limit
        address = str(ipaddress.IPv4Address(base + i))
        written.remember(route_answer([domain(address)], {0: TARGET}, written, 250, (), 0.0))
    assert len(written) == PRUNE_AT * 9 // 10
    assert written.evicted == PRUNE_AT + 1 - PRUNE_AT * 9 // 10
    assert written.get(TARGET.sets[0], ip("198.18.0.0")) is None  # the first went first
    newest = written.get(TARGET.sets[0], ipaddress.IPv4Address(base + PRUNE_AT))
    assert newest is not None
    # A forgotten address is simply written again when it comes back.
    again = route_answer([domain("198.18.0.0")], {0: TARGET}, written, 250, (), 1.0)
    assert len(again.entries) == 1


def test_remembered_names_and_addresses_come_back_as_written() -> None:
    written = WrittenEntries()
    chain = ("www.example.ru", "edge.cdn.example", "x\\032y.example")
    decisions = [domain("198.51.100.7"), domain("2001:db8::7"), domain("::198.51.100.7")]
    written.remember(route_answer(decisions, {0: TARGET}, written, 250, chain, 1000.0))
    assert written.written_by("ipts-d0-4", 4, int(ip("198.51.100.7"))) == (chain, 0)
    assert written.written_by("ipts-d0-6", 6, int(ip("2001:db8::7"))) == (chain, 0)
    # the same int as the IPv4 one, another set
    assert written.written_by("ipts-d0-6", 6, int(ip("::198.51.100.7"))) == (chain, 0)
    assert written.written_by("ipts-d0-4", 4, int(ip("198.51.100.8"))) is None
    assert written.written_by("ipts-d1-4", 4, int(ip("198.51.100.7"))) is None

"""Rules with ``sources``: they apply to the named clients only, and compete with the
other rules for them exactly as DESIGN §3 orders rules."""

from __future__ import annotations

import ipaddress

import pytest

from iptserver.errors import SchemaError
from iptserver.policy import MatchKind, Policy, Reason
from iptserver.policy.sources import source_classes
from iptserver.schema import parse_schema

EXITS = """\
exits:
  uk: {interface: wg-uk}
  ru: {interface: wg-ru}
  direct: {interface: _DEFAULT}
default: direct
"""
SCHEMA = (
    EXITS
    + """\
rules:
  - exit: ru
    sources: [10.77.1.3, "fd77:1::3"]
    domains: [shop.example]
    nets: [203.0.113.0/24]
  - exit: uk
    domains: [example]
  - exit: uk
    sources: [10.77.1.0/24]
    nets: [198.51.100.0/24]
"""
)
ONE = ipaddress.ip_address("10.77.1.2")
THREE = ipaddress.ip_address("10.77.1.3")
THREE_V6 = ipaddress.ip_address("fd77:1::3")
ELSEWHERE = ipaddress.ip_address("192.168.9.9")
ip = ipaddress.ip_address


def policy(text: str = SCHEMA) -> Policy:
    return Policy(parse_schema(text).schema)


def test_source_classes_cut_overlapping_sources_into_disjoint_classes() -> None:
    classes = source_classes(parse_schema(SCHEMA).schema)
    by_rules = {c.rules: {str(n) for n in c.networks} for c in classes}
    assert by_rules == {
        (0,): {"fd77:1::3/128"},
        (0, 2): {"10.77.1.3/32"},
        (2,): {
            "10.77.1.0/31",
            "10.77.1.2/32",
            "10.77.1.4/30",
            "10.77.1.8/29",
            "10.77.1.16/28",
            "10.77.1.32/27",
            "10.77.1.64/26",
            "10.77.1.128/25",
        },
    }


def test_two_clients_resolving_one_name_get_different_exits() -> None:
    p = policy()
    for client, expected in ((ONE, "uk"), (THREE, "ru"), (THREE_V6, "ru"), (ELSEWHERE, "uk")):
        source = p.source_of(client)
        [decision] = p.decide(["shop.example"], [ip("198.18.5.5")], source)
        assert decision.exit == expected, client
        assert p.decide_name(["shop.example"], source).exit == expected, client


def test_without_a_client_only_the_rules_without_sources_apply() -> None:
    p = policy()
    assert p.decide(["shop.example"], [ip("203.0.113.9")])[0].exit == "uk"
    assert p.decide_ip(ip("203.0.113.9")).reason is Reason.DEFAULT
    assert p.decide_ip(ip("198.51.100.9")).reason is Reason.DEFAULT


def test_a_sourced_net_applies_to_its_clients_only() -> None:
    p = policy()
    assert p.decide_ip(ip("203.0.113.9"), p.source_of(THREE)).exit == "ru"
    assert p.decide_ip(ip("203.0.113.9"), p.source_of(ONE)).exit == "direct"
    # 10.77.1.3 is in both rules' sources: each applies to it
    assert p.decide_ip(ip("198.51.100.9"), p.source_of(THREE)).exit == "uk"
    assert p.decide_ip(ip("198.51.100.9"), p.source_of(ONE)).exit == "uk"
    assert p.decide_ip(ip("198.51.100.9"), p.source_of(ELSEWHERE)).exit == "direct"


def test_sourced_rules_compete_by_weight_then_specificity_then_order() -> None:
    text = (
        EXITS
        + """\
rules:
  - exit: uk
    nets: [203.0.113.0/25]
  - exit: ru
    sources: [10.77.1.3]
    nets: [203.0.113.0/24]
  - exit: ru
    sources: [10.77.1.3]
    domains: [a.example]
    weight: -1
"""
    )
    p = policy(text)
    source = p.source_of(THREE)
    assert p.decide_ip(ip("203.0.113.9"), source).exit == "uk", "the longer prefix wins"
    assert p.decide_ip(ip("203.0.113.200"), source).exit == "ru"
    [decision] = p.decide(["a.example"], [ip("203.0.113.9")], source)
    assert (decision.exit, decision.kind) == ("uk", MatchKind.NET), "weight -1 loses"


def test_private_destinations_stay_private_for_sourced_clients() -> None:
    p = policy(EXITS + "rules:\n  - exit: ru\n    sources: [10.77.1.3]\n    nets: [0.0.0.0/0]\n")
    assert p.decide_ip(ip("10.1.2.3"), p.source_of(THREE)).reason is Reason.PRIVATE
    assert p.decide_ip(ip("8.8.8.8"), p.source_of(THREE)).exit == "ru"


def test_candidates_list_sourced_rules_only_for_their_clients() -> None:
    p = policy()
    mine = p.candidates(["shop.example"], ip("203.0.113.9"), p.source_of(THREE))
    theirs = p.candidates(["shop.example"], ip("203.0.113.9"), p.source_of(ONE))
    assert {c.rule for c in mine} == {0, 1}
    assert {c.rule for c in theirs} == {1}


def test_a_source_may_name_a_client_of_the_mesh() -> None:
    text = (
        EXITS
        + """\
nodes:
  entry: {entry: true, endpoint: 192.0.2.1}
clients:
  node: entry
  subnet: 10.88.0.0/24
  peers:
    phone: {}
    laptop: {address: 10.88.0.9}
rules:
  - exit: ru
    sources: [laptop]
    domains: [example]
"""
    )
    p = policy(text)
    assert p.decide_name(["x.example"], p.source_of(ip("10.88.0.9"))).exit == "ru"
    assert p.decide_name(["x.example"], p.source_of(ip("10.88.0.2"))).exit == "direct"


def test_an_unknown_client_name_is_an_error_on_its_line() -> None:
    text = EXITS + "rules:\n  - exit: ru\n    sources: [laptp]\n    domains: [example]\n"
    with pytest.raises(SchemaError) as caught:
        parse_schema(text, "s.yaml")
    assert str(caught.value) == (
        "s.yaml:8:15: rules.0.sources.0: no client 'laptp' (clients.peers: none)"
    )

"""Policy decisions, through the public API, against DESIGN §3.

Each destination IP gets one exit: highest weight, then most specific match (a DNS-learned
IP is a host route, a net counts by its prefix, a country by its GeoIP network), then the
rule written first. Private and mesh destinations are never diverted. The lab GeoIP
database places 198.51.100.0/26 and 2001:db8:44::/48 in GB, .64/26 and 2001:db8:7::/48 in
RU, .128/26 and 2001:db8:1::/48 in US, .192/26 and 2001:db8:49::/48 in DE.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Sequence
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from iptserver.errors import SchemaError
from iptserver.geoip import GeoIPDatabase
from iptserver.lab.addresses import LAB_COUNTRIES
from iptserver.policy import Decision, GeoLookup, MatchKind, Policy, Reason
from iptserver.schema import parse_schema
from iptserver.schema.values import IPAddress, PatternKind, parse_domain_pattern

EXITS = """\
exits:
  uk: {interface: wg-uk}
  ru: {interface: wg-ru}
  us: {interface: wg-us}
  direct: {interface: _DEFAULT}
"""

DOMAIN, NET, COUNTRY = MatchKind.DOMAIN, MatchKind.NET, MatchKind.COUNTRY


def make_policy(rules: Sequence[str], geo: GeoLookup | None = None, extra: str = "") -> Policy:
    """A policy from rules written one per line in YAML flow style."""
    text = EXITS + extra + "rules:\n" + "".join(f"  - {rule}\n" for rule in rules)
    return Policy(parse_schema(text, "t.yaml").schema, geo)


def ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


def decide_one(policy: Policy, names: Sequence[str], address: str) -> Decision:
    """The decision for one IP: of an answer for ``names``, or of no answer at all."""
    if names:
        [decision] = policy.decide(names, [ip(address)])
        return decision
    return policy.decide_ip(ip(address))


# fmt: off
# (id, rules, names of the answer ([] = an IP seen in no answer), IP, exit, rule, kind)
ARBITRATION: list[tuple[str, list[str], list[str], str, str, int, MatchKind]] = [
    # 1. weight beats specificity
    ("weight:net-/24-beats-host-route",
     ["{exit: uk, nets: [203.0.113.0/24], weight: 10}", "{exit: ru, domains: [example.com]}"],
     ["example.com"], "203.0.113.5", "uk", 0, NET),
    ("weight:net-/16-beats-net-/24",
     ["{exit: ru, nets: [198.51.100.0/24]}", "{exit: uk, nets: [198.51.0.0/16], weight: 1}"],
     [], "198.51.100.5", "uk", 1, NET),
    ("weight:country-/26-beats-net-/28",
     ["{exit: uk, nets: [198.51.100.0/28]}", "{exit: ru, countries: [GB], weight: 2}"],
     [], "198.51.100.5", "ru", 1, COUNTRY),
    ("weight:net-/0-beats-country",
     ["{exit: ru, countries: [GB]}", "{exit: uk, nets: [0.0.0.0/0], weight: 1}"],
     [], "198.51.100.5", "uk", 1, NET),
    ("weight:negative-loses-to-default-weight",
     ["{exit: uk, nets: [203.0.113.5/32], weight: -1}", "{exit: ru, nets: [203.0.113.0/24]}"],
     [], "203.0.113.5", "ru", 1, NET),
    ("weight:domain-beats-host-net",
     ["{exit: uk, nets: [203.0.113.5/32]}", "{exit: ru, domains: [example.com], weight: 1}"],
     ["example.com"], "203.0.113.5", "ru", 1, DOMAIN),
    # 2. specificity at equal weight
    ("specific:host-route-beats-net-/24",
     ["{exit: uk, nets: [203.0.113.0/24]}", "{exit: ru, domains: [example.com]}"],
     ["example.com"], "203.0.113.5", "ru", 1, DOMAIN),
    ("specific:same-ip-without-answer-takes-net",
     ["{exit: uk, nets: [203.0.113.0/24]}", "{exit: ru, domains: [example.com]}"],
     [], "203.0.113.5", "uk", 0, NET),
    ("specific:net-/25-beats-/24",
     ["{exit: uk, nets: [203.0.113.0/24]}", "{exit: ru, nets: [203.0.113.128/25]}"],
     [], "203.0.113.200", "ru", 1, NET),
    ("specific:outside-the-/25-the-/24",
     ["{exit: uk, nets: [203.0.113.0/24]}", "{exit: ru, nets: [203.0.113.128/25]}"],
     [], "203.0.113.5", "uk", 0, NET),
    ("specific:country-/26-beats-net-/24",
     ["{exit: uk, nets: [198.51.100.0/24]}", "{exit: ru, countries: [GB]}"],
     [], "198.51.100.5", "ru", 1, COUNTRY),
    ("specific:net-/28-beats-country-/26",
     ["{exit: ru, countries: [GB]}", "{exit: uk, nets: [198.51.100.0/28]}"],
     [], "198.51.100.5", "uk", 1, NET),
    ("specific:country-outside-the-/28",
     ["{exit: ru, countries: [GB]}", "{exit: uk, nets: [198.51.100.0/28]}"],
     [], "198.51.100.20", "ru", 0, COUNTRY),
    ("specific:host-route-beats-country",
     ["{exit: ru, countries: [GB]}", "{exit: uk, domains: [example.com]}"],
     ["example.com"], "198.51.100.5", "uk", 1, DOMAIN),
    # 3. full tie: the rule written first
    ("tie:same-net-first-rule",
     ["{exit: uk, nets: [203.0.113.0/24]}", "{exit: ru, nets: [203.0.113.0/24]}"],
     [], "203.0.113.5", "uk", 0, NET),
    ("tie:same-net-first-rule-reversed",
     ["{exit: ru, nets: [203.0.113.0/24]}", "{exit: uk, nets: [203.0.113.0/24]}"],
     [], "203.0.113.5", "ru", 0, NET),
    ("tie:same-net-equal-nonzero-weights",
     ["{exit: us, nets: [203.0.113.0/24], weight: 3}",
      "{exit: ru, nets: [203.0.113.0/24], weight: 3}"],
     [], "203.0.113.5", "us", 0, NET),
    ("tie:country-/26-and-net-/26",
     ["{exit: ru, countries: [GB]}", "{exit: uk, nets: [198.51.100.0/26]}"],
     [], "198.51.100.5", "ru", 0, COUNTRY),
    ("tie:net-/26-and-country-/26",
     ["{exit: uk, nets: [198.51.100.0/26]}", "{exit: ru, countries: [GB]}"],
     [], "198.51.100.5", "uk", 0, NET),
    ("tie:same-country-twice",
     ["{exit: us, countries: [GB]}", "{exit: ru, countries: [GB]}"],
     [], "198.51.100.5", "us", 0, COUNTRY),
    ("tie:host-route-and-net-/32",
     ["{exit: ru, domains: [example.com]}", "{exit: uk, nets: [203.0.113.5/32]}"],
     ["example.com"], "203.0.113.5", "ru", 0, DOMAIN),
    ("tie:net-/32-and-host-route",
     ["{exit: uk, nets: [203.0.113.5/32]}", "{exit: ru, domains: [example.com]}"],
     ["example.com"], "203.0.113.5", "uk", 0, NET),
    ("tie:two-domain-rules",
     ["{exit: uk, domains: [example.com]}", "{exit: ru, domains: ['~.*\\.example\\.com$']}"],
     ["www.example.com"], "203.0.113.5", "uk", 0, DOMAIN),
    # a domain rule matches through the CNAME chain
    ("cname:match-by-second-name-only",
     ["{exit: uk, domains: [example.com]}", "{exit: ru, domains: ['=edge.cdn.net']}"],
     ["www.shop.org", "edge.cdn.net"], "203.0.113.5", "ru", 1, DOMAIN),
    ("cname:match-by-last-name-of-three",
     ["{exit: ru, domains: ['*.cdn.net']}"],
     ["www.shop.org", "shop.edgekey.org", "e1.cdn.net"], "203.0.113.5", "ru", 0, DOMAIN),
    ("cname:weight-across-the-chain",
     ["{exit: uk, domains: [shop.org]}", "{exit: ru, domains: [cdn.net], weight: 1}"],
     ["www.shop.org", "e1.cdn.net"], "203.0.113.5", "ru", 1, DOMAIN),
    ("cname:file-order-across-the-chain",
     ["{exit: uk, domains: [cdn.net]}", "{exit: ru, domains: [shop.org]}"],
     ["www.shop.org", "e1.cdn.net"], "203.0.113.5", "uk", 0, DOMAIN),
    # case and trailing dot, in names and in patterns
    ("case:upper-case-name-trailing-dot",
     ["{exit: ru, domains: [example.com]}"],
     ["WWW.Example.COM."], "203.0.113.5", "ru", 0, DOMAIN),
    ("case:upper-case-pattern-trailing-dot",
     ["{exit: ru, domains: [Example.COM.]}"],
     ["www.example.com"], "203.0.113.5", "ru", 0, DOMAIN),
    ("case:exact-with-trailing-dot",
     ["{exit: ru, domains: ['=www.example.com']}"],
     ["www.EXAMPLE.com."], "203.0.113.5", "ru", 0, DOMAIN),
    ("case:regex-on-upper-case-cname",
     ["{exit: ru, domains: ['~.*\\.example\\.com$']}"],
     ["a.org", "CDN.EXAMPLE.COM."], "203.0.113.5", "ru", 0, DOMAIN),
    # IPv6
    ("v6:host-route-/128-beats-net-/64",
     ["{exit: uk, nets: ['2001:db8:ff::/64']}", "{exit: ru, domains: [example.com]}"],
     ["example.com"], "2001:db8:ff::5", "ru", 1, DOMAIN),
    ("v6:net-/64-without-answer",
     ["{exit: uk, nets: ['2001:db8:ff::/64']}", "{exit: ru, domains: [example.com]}"],
     [], "2001:db8:ff::5", "uk", 0, NET),
    ("v6:net-/128-ties-host-route",
     ["{exit: uk, nets: ['2001:db8:ff::5/128']}", "{exit: ru, domains: [example.com]}"],
     ["example.com"], "2001:db8:ff::5", "uk", 0, NET),
    ("v6:country",
     ["{exit: ru, countries: [RU]}"],
     [], "2001:db8:7::5", "ru", 0, COUNTRY),
    ("v6:country-/48-beats-net-/32",
     ["{exit: uk, nets: ['2001:db8::/32']}", "{exit: ru, countries: [RU]}"],
     [], "2001:db8:7::5", "ru", 1, COUNTRY),
    ("v6:net-/64-beats-country-/48",
     ["{exit: ru, countries: [RU]}", "{exit: uk, nets: ['2001:db8:7::/64']}"],
     [], "2001:db8:7::5", "uk", 1, NET),
    ("v6:v4-default-route-does-not-hold-v6",
     ["{exit: uk, nets: [0.0.0.0/0], weight: 5}", "{exit: ru, nets: ['::/0']}"],
     [], "2001:db8:ff::5", "ru", 1, NET),
    # country rules with the lab database
    ("country:each-lab-country",
     ["{exit: uk, countries: [GB]}", "{exit: ru, countries: [RU]}",
      "{exit: us, countries: [US, DE]}"],
     [], "198.51.100.200", "us", 2, COUNTRY),
    ("country:answer-ip-in-country",
     ["{exit: uk, domains: [example.com], weight: -1}", "{exit: us, countries: [US]}"],
     ["example.com"], "198.51.100.130", "us", 1, COUNTRY),
]
# fmt: on


@pytest.mark.parametrize(
    ("rules", "names", "address", "exit_", "rule", "kind"),
    [case[1:] for case in ARBITRATION],
    ids=[case[0] for case in ARBITRATION],
)
def test_arbitration(
    lab_geoip: GeoIPDatabase,
    rules: list[str],
    names: list[str],
    address: str,
    exit_: str,
    rule: int,
    kind: MatchKind,
) -> None:
    policy = make_policy(rules, lab_geoip)
    assert decide_one(policy, names, address) == Decision(
        ip(address), exit_, Reason.RULE, rule, kind
    )
    best = policy.candidates(names, ip(address))[0]
    assert (best.rule, best.kind) == (rule, kind)


# -- never diverted -------------------------------------------------------------------

CLAIM_EVERYTHING = [
    "{exit: uk, nets: [0.0.0.0/0, '::/0'], weight: 100}",
    "{exit: ru, domains: [example.com, '~.*'], countries: [GB, RU, US, DE], weight: 100}",
    "{exit: us, nets: [10.0.0.0/8, 192.168.0.0/16, 100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16,"
    " 172.16.0.0/12, 203.0.113.0/28, 'fe80::/10', 'fc00::/7', '::1/128'], weight: 200}",
]
MESH = "default: direct\nmesh: [203.0.113.0/28, '2001:db8:ff::/64']\n"

NEVER_DIVERTED = [
    ("rfc1918-10", "10.1.2.3"),
    ("rfc1918-172.16", "172.16.0.1"),
    ("rfc1918-172.31", "172.31.255.255"),
    ("rfc1918-192.168", "192.168.1.1"),
    ("cgnat-first", "100.64.0.1"),
    ("cgnat-last", "100.127.255.254"),
    ("link-local", "169.254.1.1"),
    ("loopback", "127.0.0.1"),
    ("loopback-127.8", "127.8.9.10"),
    ("v6-link-local", "fe80::1"),
    ("v6-ula-fc00", "fc00::1"),
    ("v6-ula-fd", "fd12:3456::1"),
    ("v6-loopback", "::1"),
    ("v4-mapped-v6", "::ffff:198.51.100.10"),
    ("mesh-v4", "203.0.113.5"),
    ("mesh-v6", "2001:db8:ff::5"),
]


@pytest.mark.parametrize(
    "address", [a for _, a in NEVER_DIVERTED], ids=[i for i, _ in NEVER_DIVERTED]
)
def test_private_and_mesh_never_diverted(lab_geoip: GeoIPDatabase, address: str) -> None:
    """Not by 0.0.0.0/0 or ::/0, a net naming the range, a domain, a country or a default."""
    policy = make_policy(CLAIM_EVERYTHING, lab_geoip, MESH)
    private = Decision(ip(address), None, Reason.PRIVATE)
    assert policy.decide(["www.example.com", "cdn.example.com"], [ip(address)]) == [private]
    assert policy.decide_ip(ip(address)) == private
    assert policy.is_private(ip(address))


@pytest.mark.parametrize("weight", [1_000_000, sys.maxsize, 10**30], ids=["1e6", "maxsize", "1e30"])
def test_no_weight_diverts_private(weight: int) -> None:
    """Private ranges outrank every rule: a schema may refuse a weight, never obey it here."""
    text = EXITS + f"rules:\n  - {{exit: uk, nets: [0.0.0.0/0, 10.0.0.0/8], weight: {weight}}}\n"
    try:
        schema = parse_schema(text, "t.yaml").schema
    except SchemaError as e:
        assert "weight" in str(e)
        return
    policy = Policy(schema)
    assert policy.decide_ip(ip("10.1.2.3")) == Decision(ip("10.1.2.3"), None, Reason.PRIVATE)
    assert policy.decide_ip(ip("203.0.113.5")).exit == "uk"


DIVERTIBLE = [
    ("test-net-1", "192.0.2.1"),
    ("test-net-2", "198.51.100.1"),
    ("test-net-3", "203.0.113.200"),
    ("v6-documentation", "2001:db8:1::1"),
    ("just-below-cgnat", "100.63.255.255"),
    ("just-above-cgnat", "100.128.0.1"),
    ("just-below-172.16", "172.15.255.255"),
    ("just-above-172.31", "172.32.0.1"),
    ("just-above-192.168", "192.169.0.1"),
    ("just-above-mesh", "203.0.113.16"),
    ("beside-v6-mesh", "2001:db8:ff:1::1"),
]


@pytest.mark.parametrize("address", [a for _, a in DIVERTIBLE], ids=[i for i, _ in DIVERTIBLE])
def test_public_and_documentation_ranges_are_diverted(address: str) -> None:
    """Documentation ranges stand in for the internet in the lab: they must route."""
    policy = make_policy(["{exit: uk, nets: [0.0.0.0/0, '::/0']}"], extra=MESH)
    assert policy.decide_ip(ip(address)) == Decision(ip(address), "uk", Reason.RULE, 0, NET)
    assert not policy.is_private(ip(address))


# -- no match --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "exit_", "reason"),
    [("default: direct\n", "direct", Reason.DEFAULT), ("", None, Reason.MAIN)],
    ids=["default-exit", "main-table"],
)
def test_unmatched(lab_geoip: GeoIPDatabase, extra: str, exit_: str | None, reason: Reason) -> None:
    policy = make_policy(
        ["{exit: uk, domains: [example.com], nets: [198.51.100.0/26], countries: [RU]}"],
        lab_geoip,
        extra,
    )
    for address in ("203.0.113.5", "198.51.100.130", "2001:db8:ff::1"):
        assert policy.decide(["other.org"], [ip(address)]) == [Decision(ip(address), exit_, reason)]
        assert policy.decide_ip(ip(address)) == Decision(ip(address), exit_, reason)
        assert policy.candidates(["other.org"], ip(address)) == []
    assert policy.decide_name(["other.org", "cdn.other.org"]) == Decision(None, exit_, reason)


def test_no_geoip_means_no_country_matches() -> None:
    """Without a database a country rule matches nothing; nets and domains still do."""
    rules = ["{exit: ru, countries: [GB], weight: 5}", "{exit: uk, nets: [198.51.100.0/24]}"]
    policy = make_policy(rules, None, "default: direct\n")
    assert policy.decide_ip(ip("198.51.100.5")) == Decision(
        ip("198.51.100.5"), "uk", Reason.RULE, 1, NET
    )
    assert policy.decide_ip(ip("2001:db8:44::1")) == Decision(
        ip("2001:db8:44::1"), "direct", Reason.DEFAULT
    )
    assert [c.rule for c in policy.candidates([], ip("198.51.100.5"))] == [1]


def test_country_matches_with_the_lab_database(lab_geoip: GeoIPDatabase) -> None:
    """Every lab network, v4 and v6, goes to its country's exit; unplaced ones do not."""
    exit_of = {"GB": "uk", "RU": "ru", "US": "us", "DE": "direct"}
    rules = [f"{{exit: {e}, countries: [{cc}]}}" for cc, e in exit_of.items()]
    policy = make_policy(rules, lab_geoip)
    for index, (country, nets) in enumerate(LAB_COUNTRIES.items()):
        for net in nets:
            for address in (net.network_address, net.network_address + 7, net.broadcast_address):
                decision = policy.decide_ip(address)
                assert decision == Decision(address, exit_of[country], Reason.RULE, index, COUNTRY)
    assert policy.decide_ip(ip("203.0.113.5")).reason is Reason.MAIN


# -- one answer, several IPs ---------------------------------------------------------


def test_each_ip_of_an_answer_is_decided_on_its_own(lab_geoip: GeoIPDatabase) -> None:
    policy = make_policy(
        [
            "{exit: ru, domains: [example.com]}",
            "{exit: uk, nets: [203.0.113.128/25], weight: 5}",
            "{exit: us, countries: [US], weight: 5}",
        ],
        lab_geoip,
    )
    addresses = [
        ip(a)
        for a in (
            "203.0.113.5",
            "203.0.113.200",
            "10.0.0.1",
            "198.51.100.130",
            "2001:db8:ff::1",
            "2001:db8:1::1",
        )
    ]
    assert policy.decide(["www.example.com"], addresses) == [
        Decision(addresses[0], "ru", Reason.RULE, 0, DOMAIN),
        Decision(addresses[1], "uk", Reason.RULE, 1, NET),
        Decision(addresses[2], None, Reason.PRIVATE),
        Decision(addresses[3], "us", Reason.RULE, 2, COUNTRY),
        Decision(addresses[4], "ru", Reason.RULE, 0, DOMAIN),
        Decision(addresses[5], "us", Reason.RULE, 2, COUNTRY),
    ]
    assert policy.decide(["www.example.com"], []) == []


# -- decide_name ----------------------------------------------------------------------

NAME_ONLY = [
    ("subtree", ["news.bbc.co.uk"], "uk", 1),
    ("cname", ["www.shop.org", "x.yandex.ru"], "ru", 0),
    ("weight-over-order", ["mail.yandex.ru"], "us", 2),
    ("trailing-dot-and-case", ["NEWS.BBC.CO.UK."], "uk", 1),
]


@pytest.mark.parametrize(
    ("names", "exit_", "rule"), [c[1:] for c in NAME_ONLY], ids=[c[0] for c in NAME_ONLY]
)
def test_decide_name(names: list[str], exit_: str, rule: int) -> None:
    """A query with no IP yet: the domain rules alone decide; a heavy net does not count."""
    policy = make_policy(
        [
            "{exit: ru, domains: [ru]}",
            "{exit: uk, domains: ['*.bbc.co.uk']}",
            "{exit: us, domains: ['=mail.yandex.ru'], weight: 1}",
            "{exit: direct, nets: [0.0.0.0/0, '::/0'], weight: 100}",
        ]
    )
    assert policy.decide_name(names) == Decision(None, exit_, Reason.RULE, rule, DOMAIN)


# -- candidates -----------------------------------------------------------------------


def test_candidates_list_every_matching_rule_best_first(lab_geoip: GeoIPDatabase) -> None:
    policy = make_policy(
        [
            "{exit: uk, nets: [198.51.100.0/24]}",
            "{exit: ru, countries: [GB]}",
            "{exit: us, domains: [example.com]}",
            "{exit: uk, nets: [0.0.0.0/0], weight: 1}",
            "{exit: ru, domains: ['~.*example'], nets: [198.51.100.0/28]}",
            "{exit: us, nets: [203.0.113.0/24], countries: [RU], domains: [other.org]}",
        ],
        lab_geoip,
    )
    names, address = ["www.example.com", "cdn.example.net"], ip("198.51.100.5")
    found = [(c.rule, c.kind, c.weight, c.specificity) for c in policy.candidates(names, address)]
    assert found == [
        (3, NET, 1, 0),
        (2, DOMAIN, 0, 32),
        (4, DOMAIN, 0, 32),  # its /28 is a weaker match of the same rule
        (1, COUNTRY, 0, 26),
        (0, NET, 0, 24),
    ]
    [decision] = policy.decide(names, [address])
    assert (decision.rule, decision.kind) == (3, NET)
    by_rule = {c.rule: c for c in policy.candidates(names, address)}
    assert by_rule[1].detail == "GB (198.51.100.0/26)"
    assert by_rule[2].name == "www.example.com"
    assert by_rule[4].detail == "~.*example"


def test_candidates_without_ip_are_domain_rules() -> None:
    policy = make_policy(
        [
            "{exit: uk, nets: [0.0.0.0/0]}",
            "{exit: ru, domains: [example.com]}",
            "{exit: us, domains: ['*.example.com'], weight: 1}",
        ]
    )
    found = [(c.rule, c.kind) for c in policy.candidates(["WWW.example.com."], None)]
    assert found == [(2, DOMAIN), (1, DOMAIN)]
    assert policy.decide_name(["WWW.example.com."]).rule == 2


# The same name claimed by rules of two exits: every entry point names the §3 winner.
TWO_EXITS = [
    (
        "equal-weight-first-rule",
        ["{exit: uk, domains: [example.com]}", "{exit: ru, domains: ['~.*\\.example\\.com$']}"],
        "uk",
        0,
    ),
    (
        "equal-weight-first-rule-reversed",
        ["{exit: ru, domains: ['~.*\\.example\\.com$']}", "{exit: uk, domains: [example.com]}"],
        "ru",
        0,
    ),
    (
        "weight",
        [
            "{exit: uk, domains: [example.com]}",
            "{exit: ru, domains: ['~.*\\.example\\.com$'], weight: 1}",
        ],
        "ru",
        1,
    ),
    (
        "exact-and-subtree",
        ["{exit: uk, domains: [example.com]}", "{exit: ru, domains: ['=www.example.com']}"],
        "uk",
        0,
    ),
]


@pytest.mark.parametrize(
    ("rules", "exit_", "rule"), [c[1:] for c in TWO_EXITS], ids=[c[0] for c in TWO_EXITS]
)
def test_two_exits_claim_one_name(rules: list[str], exit_: str, rule: int) -> None:
    policy = make_policy(rules)
    names = ["www.example.com"]
    assert policy.decide_name(names) == Decision(None, exit_, Reason.RULE, rule, DOMAIN)
    for address in (ip("203.0.113.5"), ip("2001:db8:ff::5")):
        assert policy.decide(names, [address]) == [
            Decision(address, exit_, Reason.RULE, rule, DOMAIN)
        ]
        assert policy.candidates(names, address)[0].rule == rule
    assert policy.decide(["a.org", *names], [ip("203.0.113.5")])[0].exit == exit_


# -- decide against an independent reading of §3 -------------------------------------

EXIT_NAMES = ["uk", "ru", "us"]
NET_POOL = [
    "198.51.100.0/24",
    "198.51.100.0/26",
    "198.51.100.0/28",
    "198.51.100.64/27",
    "198.51.100.5/32",
    "203.0.113.0/24",
    "203.0.113.128/25",
    "0.0.0.0/0",
    "2001:db8::/32",
    "2001:db8:7::/48",
    "2001:db8:7::/64",
    "::/0",
    "2001:db8:ff::/56",
    "2001:db8:ff::5/128",
]
DOMAIN_POOL = [
    "example.com",
    "*.example.com",
    "=www.example.com",
    r"~.*\.example\.com$",
    "~www",
    "cdn.net",
    "~.*cdn",
    r"~(.*\.)?cdn\.net$",
]
ADDRESS_POOL = [
    "198.51.100.5",
    "198.51.100.20",
    "198.51.100.70",
    "198.51.100.130",
    "198.51.100.200",
    "203.0.113.5",
    "203.0.113.200",
    "192.0.2.1",
    "2001:db8:7::5",
    "2001:db8:7:1::5",
    "2001:db8:44::1",
    "2001:db8:ff::5",
    "2001:db8:ff:1::5",
    "2001:db8:1::1",
]
NAME_POOL = ["www.example.com", "example.com", "e1.cdn.net", "mycdn.org", "www.other.org"]


def reference(
    rules: list[dict[str, Any]], names: Sequence[str], address: IPAddress
) -> tuple[tuple[int, int, int], set[MatchKind]] | None:
    """§3 read directly: the best (weight, specificity, -rule) and its match kinds."""
    lowered = [n.rstrip(".").lower() for n in names]
    options: list[tuple[tuple[int, int, int], MatchKind]] = []
    for i, rule in enumerate(rules):
        weight = rule.get("weight", 0)
        for text in rule.get("domains", []):
            pattern = parse_domain_pattern(text)
            value = pattern.value
            for name in lowered:
                if pattern.kind is PatternKind.REGEX:
                    hit = re.match(value, name, re.IGNORECASE) is not None
                elif pattern.kind is PatternKind.EXACT:
                    hit = name == value
                elif pattern.kind is PatternKind.BELOW:
                    hit = name.endswith("." + value)
                else:
                    hit = name == value or name.endswith("." + value)
                if hit:
                    options.append(((weight, address.max_prefixlen, -i), DOMAIN))
        for text in rule.get("nets", []):
            net = ipaddress.ip_network(text)
            if net.version == address.version and address in net:
                options.append(((weight, net.prefixlen, -i), NET))
        for country in rule.get("countries", []):
            for net in LAB_COUNTRIES[country]:
                if net.version == address.version and address in net:
                    options.append(((weight, net.prefixlen, -i), COUNTRY))
    if not options:
        return None
    best = max(key for key, _ in options)
    return best, {kind for key, kind in options if key == best}


@st.composite
def rule_dicts(draw: st.DrawFn) -> dict[str, Any]:
    rule: dict[str, Any] = {"exit": draw(st.sampled_from(EXIT_NAMES))}
    parts = draw(st.sets(st.sampled_from(["domains", "nets", "countries"]), min_size=1))
    if "domains" in parts:
        rule["domains"] = draw(st.lists(st.sampled_from(DOMAIN_POOL), min_size=1, max_size=2))
    if "nets" in parts:
        rule["nets"] = draw(st.lists(st.sampled_from(NET_POOL), min_size=1, max_size=3))
    if "countries" in parts:
        rule["countries"] = draw(
            st.lists(st.sampled_from(list(LAB_COUNTRIES)), min_size=1, max_size=2)
        )
    weight = draw(st.sampled_from([None, 0, 0, 1, 2, -1]))
    if weight is not None:
        rule["weight"] = weight
    return rule


@settings(max_examples=200, deadline=None)
@given(
    st.lists(rule_dicts(), min_size=1, max_size=6),
    st.lists(st.sampled_from(NAME_POOL), max_size=3),
    st.sampled_from(ADDRESS_POOL),
)
def test_decide_agrees_with_reference(
    lab_geoip: GeoIPDatabase, rules: list[dict[str, Any]], names: list[str], address: str
) -> None:
    """decide, decide_ip, decide_name and candidates all name the §3 winner."""
    text = yaml.safe_dump(
        {"exits": {e: {"interface": f"wg-{e}"} for e in EXIT_NAMES}, "rules": rules}
    )
    policy = Policy(parse_schema(text, "t.yaml").schema, lab_geoip)
    target = ip(address)
    for query in (names, []):
        expected = reference(rules, query, target)
        decision = policy.decide(query, [target])[0] if query else policy.decide_ip(target)
        candidates = policy.candidates(query, target)
        if expected is None:
            assert decision == Decision(target, None, Reason.MAIN)
            assert candidates == []
            continue
        (_, _, neg_rule), kinds = expected
        assert (decision.exit, decision.rule, decision.reason) == (
            rules[-neg_rule]["exit"],
            -neg_rule,
            Reason.RULE,
        )
        assert decision.kind in kinds
        assert (candidates[0].rule, candidates[0].kind) == (decision.rule, decision.kind)
        assert [c.key for c in candidates] == sorted((c.key for c in candidates), reverse=True)
    domain_rules = [
        {"exit": r["exit"], "weight": r.get("weight", 0), "domains": r.get("domains", [])}
        for r in rules
    ]
    by_name = reference(domain_rules, names, ipaddress.IPv6Address("2001:db8:ff::5"))
    expected_rule = -by_name[0][2] if by_name else None
    assert policy.decide_name(names).rule == expected_rule

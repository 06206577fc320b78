"""sing-box source rule-sets: the keys a routing list needs, rules that only apply with
keys the router cannot honour skipped whole, and each entry cited on its own line."""

from __future__ import annotations

import json

import pytest

from iptserver.lists import ListFormat, ParsedList, parse_list
from iptserver.lists.singbox import parse_singbox
from iptserver.policy.domains import DomainMatcher
from iptserver.schema.values import PatternKind


def matched(parsed: ParsedList, name: str) -> set[str]:
    """The texts of the list's patterns that match ``name``."""
    matcher = DomainMatcher([(0, p) for p in parsed.domains])
    return {hit.pattern.text for hit in matcher.match(name)}


def line_of(text: str, needle: str, start: int = 1) -> int:
    """The line of the first ``needle`` at or after line ``start``, to check citations
    against the text itself."""
    for number, line in enumerate(text.split("\n"), 1):
        if number >= start and needle in line:
            return number
    raise AssertionError(f"{needle!r} not in the text")


RULE_SET = """\
{
  "version": 3,
  "rules": [
    {
      "domain": ["telegram.org", "t.me"],
      "domain_suffix": ["telegram.me", ".tdesktop.com"],
      "domain_keyword": "telegra",
      "domain_regex": ["^t\\\\.me$", "tg[0-9]+\\\\.example"]
    },
    {
      "ip_cidr": [
        "91.108.4.0/22",
        "2001:67c:4e8::/48",
        "149.154.160.1/20",
        "149.154.175.50"
      ]
    },
    {
      "domain": "port-only.example",
      "port": [443, 8443]
    },
    {
      "type": "logical",
      "mode": "and",
      "rules": [{"domain": "logical.example"}]
    },
    {"domain": "inverted.example", "invert": true},
    "not an object",
    {"domain_suffix": ["telegram.me", "late.example"], "ip_is_private": true},
    {"domain": ["bad..name", 42, "good.example"], "domain_keyword": "no spaces allowed"}
  ]
}
"""


def test_rule_set_keys_become_their_schema_kinds() -> None:
    parsed = parse_singbox("telegram.json", RULE_SET)
    assert parsed.format is ListFormat.SING_BOX
    assert [(p.kind, p.text) for p in parsed.domains] == [
        (PatternKind.EXACT, "=telegram.org"),
        (PatternKind.EXACT, "=t.me"),
        (PatternKind.SUBTREE, "telegram.me"),
        (PatternKind.BELOW, "*.tdesktop.com"),
        (PatternKind.REGEX, "~.*telegra"),
        (PatternKind.REGEX, "~^t\\.me$"),
        (PatternKind.REGEX, "~.*tg[0-9]+\\.example"),
        (PatternKind.SUBTREE, "late.example"),
        (PatternKind.EXACT, "=good.example"),
    ], "telegram.me a second time is kept once; skipped rules give nothing"
    assert [str(n) for n in parsed.networks] == [
        "91.108.4.0/22",
        "2001:67c:4e8::/48",
        "149.154.175.50/32",
    ]


def test_each_entry_is_cited_on_its_own_line() -> None:
    parsed = parse_singbox("telegram.json", RULE_SET)
    values = ["telegram.org", "t.me", "telegram.me", ".tdesktop.com", "telegra"]
    values += ["^t\\\\.me$", "tg[0-9]+\\\\.example"]  # as the JSON text spells them
    expected = [line_of(RULE_SET, f'"{v}"') for v in values]
    # after the skipped rules, not inside them
    expected += [line_of(RULE_SET, "late.example"), line_of(RULE_SET, "good.example")]
    assert list(parsed.domain_lines) == expected
    assert list(parsed.network_lines) == [12, 13, 15]


def test_matching_meanings() -> None:
    """``domain`` is exact, ``"x"`` suffix is x and below, ``".x"`` only below."""
    parsed = parse_singbox("telegram.json", RULE_SET)
    assert matched(parsed, "telegram.org") == {"=telegram.org", "~.*telegra"}
    assert matched(parsed, "web.t.me") == set()
    assert matched(parsed, "t.me") == {"=t.me", "~^t\\.me$"}
    assert matched(parsed, "telegram.me") == {"telegram.me", "~.*telegra"}
    assert matched(parsed, "tdesktop.com") == set()
    assert matched(parsed, "updates.tdesktop.com") == {"*.tdesktop.com"}
    assert matched(parsed, "cdn.tg42.example.net") == {"~.*tg[0-9]+\\.example"}
    assert matched(parsed, "port-only.example") == set(), "applies only with its port"
    assert matched(parsed, "logical.example") == set()
    assert matched(parsed, "inverted.example") == set()


def test_unsupported_rules_and_values_are_reported_on_their_line() -> None:
    parsed = parse_singbox("telegram.json", RULE_SET)
    problems = [(p.line, p.message) for p in parsed.problems]
    assert [line for line, _ in problems] == [
        line_of(RULE_SET, "149.154.160.1/20"),
        line_of(RULE_SET, '"domain": "port-only.example"'),
        line_of(RULE_SET, '"type": "logical"'),
        line_of(RULE_SET, "inverted.example"),
        line_of(RULE_SET, "not an object"),
        line_of(RULE_SET, "ip_is_private"),
        line_of(RULE_SET, "bad..name"),
        line_of(RULE_SET, "bad..name"),
        line_of(RULE_SET, "bad..name"),
    ]
    messages = [message for _, message in problems]
    assert "ip_cidr: '149.154.160.1/20' has host bits set" in messages[0]
    assert messages[1].startswith("rule keys port are not supported; the rule is skipped")
    assert "'logical' rules are not supported" in messages[2]
    assert "inverted rules ('invert': true) are not supported" in messages[3]
    assert 'a rule must be a JSON object, not "not an object"' in messages[4]
    assert "rule key ip_is_private is not supported; the rule's other keys are" in messages[5]
    assert "domain: 'bad..name' is not a domain name" in messages[6]
    assert "domain: 42 is not a string" in messages[7]
    assert "domain_keyword: keyword 'no spaces allowed' must be letters" in messages[8]


@pytest.mark.parametrize("version", [1, 2, 3])
def test_every_known_version_reads_the_same(version: int) -> None:
    document = {
        "version": version,
        "rules": [{"domain_suffix": "example.com", "ip_cidr": "10.0.0.0/8"}],
    }
    parsed = parse_singbox("v.json", json.dumps(document))
    assert [p.text for p in parsed.domains] == ["example.com"]
    assert [str(n) for n in parsed.networks] == ["10.0.0.0/8"]
    assert parsed.problems == ()


def test_an_unknown_version_is_reported_and_the_known_keys_still_read() -> None:
    """Even when "version" comes after the rules: looking it up must not move the
    entries' line cursor past them."""
    text = '{\n  "rules": [\n    {"domain": "a.example"}\n  ],\n  "version": 9\n}\n'
    parsed = parse_singbox("v.json", text)
    assert [p.text for p in parsed.domains] == ["=a.example"]
    assert list(parsed.domain_lines) == [3]
    assert [(p.line, p.message[:24]) for p in parsed.problems] == [(5, "rule-set version 9 is no")]


def test_a_domain_after_a_skipped_rule_is_cited_in_its_own_rule() -> None:
    text = (
        '{"version": 2, "rules": [\n'
        '  {"domain": "a.example", "port": 443},\n'
        '  {"type": "logical", "mode": "or", "rules": [{"domain": "b.example"}]},\n'
        '  {"domain": ["a.example", "b.example"]}\n'
        "]}\n"
    )
    parsed = parse_singbox("x.json", text)
    assert [p.text for p in parsed.domains] == ["=a.example", "=b.example"]
    assert list(parsed.domain_lines) == [4, 4]


def test_invalid_json_is_reported_at_the_line_of_the_error() -> None:
    text = '{\n  "version": 1,\n  "rules": [\n    {"domain": ["a.example",]}\n  ]\n}\n'
    parsed = parse_singbox("broken.json", text)
    assert parsed.domains == ()
    assert [(p.line, p.message.split(":")[0]) for p in parsed.problems] == [(4, "not JSON")]


@pytest.mark.parametrize(
    "text", ["[]", '{"version": 1}', '{"version": 1, "rules": {}}', '"rules"', "null"]
)
def test_json_that_is_not_a_rule_set_is_one_problem(text: str) -> None:
    parsed = parse_singbox("x.json", text)
    assert parsed.domains == () and parsed.networks == ()
    assert [p.message for p in parsed.problems] == [
        'not a sing-box rule-set: expected {"version": N, "rules": [...]}'
    ]


def test_a_binary_rule_set_is_refused_with_one_clear_problem() -> None:
    """A compiled ``.srs`` is zlib data after its magic: never UTF-8, and nothing to
    report about that beyond asking for the source."""
    parsed = parse_list("geosite-cn.srs", b"SRS\x03\x78\x9c\xff\xfe\x00\x01")
    assert parsed.format is ListFormat.SING_BOX
    assert parsed.domains == () and parsed.networks == ()
    assert [(p.line, p.message) for p in parsed.problems] == [
        (1, "a binary rule-set (.srs) is not supported: give its source (.json)")
    ]

"""Validation: every malformed file is rejected with FILE:LINE:COL of the offending value."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iptserver.errors import SchemaError
from iptserver.schema import parse_schema
from iptserver.schema.legacy import Format
from iptserver.schema.model import Route
from tests.conftest import EXAMPLES

HEAD = "exits:\n  uk: {interface: wg-uk}\n  ru: {interface: wg-ru}\nrules:\n"


def problems(text: str) -> list[str]:
    with pytest.raises(SchemaError) as caught:
        parse_schema(text, "s.yaml")
    return [str(p) for p in caught.value.problems]


# (id, file text, the problems expected, exactly)
MALFORMED = [
    (
        "yaml-syntax",
        "exits:\n  uk: {interface: wg-uk\nrules: []\n",
        [
            "s.yaml:3:6: YAML syntax error: while parsing a flow mapping did not find expected "
            "',' or '}' (the construct began on line 2)"
        ],
    ),
    (
        "yaml-bad-indent",
        "exits:\n  uk:\n    interface: wg-uk\n   mark: 3\n",
        [
            "s.yaml:4:4: YAML syntax error: while parsing a block mapping did not find expected "
            "key (the construct began on line 2)"
        ],
    ),
    (
        "unknown-top-key",
        HEAD + "  - {exit: uk, nets: [203.0.113.0/24]}\ndefualt: uk\n",
        ["s.yaml:6:1: defualt: unknown key 'defualt'; did you mean 'default'?"],
    ),
    (
        "unknown-rule-key",
        HEAD + "  - exit: uk\n    domain: [co.uk]\n",
        ["s.yaml:6:5: rules.0.domain: unknown key 'domain'; did you mean 'domains'?"],
    ),
    (
        "open-resolver",
        "exits:\n  uk: {interface: wg-uk}\ndns:\n  allow: [10.0.0.0/8, 0.0.0.0/0]\n",
        [
            "s.yaml:4:10: dns.allow: 0.0.0.0/0 would make the proxy an open resolver: list your "
            "clients' networks (nothing broader than a /8, or an IPv6 /16)"
        ],
    ),
    (
        "unknown-exit-key",
        "exits:\n  uk: {interfac: wg-uk}\n",
        [
            "s.yaml:2:7: exits.uk.interface: is required",
            "s.yaml:2:8: exits.uk.interfac: unknown key 'interfac'; did you mean 'interface'?",
        ],
    ),
    (
        "prefix-too-long",
        HEAD + "  - exit: uk\n    nets: [10.0.0.0/33]\n",
        [
            "s.yaml:6:12: rules.0.nets.0: '10.0.0.0/33' is not a network: "
            "prefix length must be 0-32 for IPv4"
        ],
    ),
    (
        "host-bits-set",
        HEAD + "  - exit: uk\n    nets:\n      - 203.0.113.7/24\n",
        [
            "s.yaml:7:9: rules.0.nets.0: '203.0.113.7/24' has host bits set; "
            "did you mean 203.0.113.0/24?"
        ],
    ),
    (
        "ipv6-prefix",
        HEAD + "  - exit: uk\n    nets: ['2001:db8::/129']\n",
        [
            "s.yaml:6:12: rules.0.nets.0: '2001:db8::/129' is not a network: "
            "prefix length must be 0-128 for IPv6"
        ],
    ),
    (
        "not-an-address",
        HEAD + "  - exit: uk\n    nets: [example.com/24]\n",
        [
            "s.yaml:6:12: rules.0.nets.0: 'example.com/24' is not a network: "
            "'example.com' is not an IP address"
        ],
    ),
    (
        "country-uk",
        HEAD + "  - exit: uk\n    countries: [GB, UK]\n",
        [
            "s.yaml:6:21: rules.0.countries.1: 'UK' is not an ISO 3166-1 alpha-2 country code; "
            "did you mean GB?"
        ],
    ),
    (
        "country-unknown",
        HEAD + "  - exit: uk\n    countries: [XX]\n",
        ["s.yaml:6:17: rules.0.countries.0: 'XX' is not an ISO 3166-1 alpha-2 country code"],
    ),
    (
        "country-three-letters",
        HEAD + "  - exit: uk\n    countries: [GBR]\n",
        ["s.yaml:6:17: rules.0.countries.0: 'GBR' is not an ISO 3166-1 alpha-2 country code"],
    ),
    (
        "regex-does-not-compile",
        HEAD + "  - exit: ru\n    domains: ['~.*\\.(ru']\n",
        [
            "s.yaml:6:15: rules.0.domains.0: regular expression '.*\\.(ru' does not compile: "
            "missing ), unterminated subpattern at position 4"
        ],
    ),
    (
        "bad-domain",
        HEAD + "  - exit: ru\n    domains: [mail.*.ru]\n",
        [
            "s.yaml:6:15: rules.0.domains.0: 'mail.*.ru' is not a domain name: label '*' must be "
            "1-63 letters, digits, '-' or '_' (for a regular expression write '~' before it)"
        ],
    ),
    (
        "weight-not-integer",
        HEAD + "  - exit: uk\n    nets: [203.0.113.0/24]\n    weight: high\n",
        ["s.yaml:7:13: rules.0.weight: must be a whole number, not 'high'"],
    ),
    (
        "weight-float",
        HEAD + "  - exit: uk\n    nets: [203.0.113.0/24]\n    weight: 1.5\n",
        ["s.yaml:7:13: rules.0.weight: must be a whole number, not 1.5"],
    ),
    (
        "undefined-exit",
        HEAD + "  - exit: us\n    countries: [US]\n",
        ["s.yaml:5:11: rules.0.exit: exit 'us' is not defined (defined: ru, uk)"],
    ),
    (
        "undefined-default",
        HEAD + "  - {exit: uk, countries: [GB]}\ndefault: direct\n",
        ["s.yaml:6:10: default: exit 'direct' is not defined (defined: ru, uk)"],
    ),
    (
        "duplicate-exit",
        "exits:\n  uk: {interface: wg-uk}\n  uk: {interface: wg-uk2}\n",
        ["s.yaml:3:3: exits.uk: duplicate key 'uk' (first written on line 2)"],
    ),
    (
        "duplicate-mark",
        "exits:\n  uk: {interface: wg-uk, mark: 7}\n  ru: {interface: wg-ru, mark: 7}\n",
        ["s.yaml:3:32: exits.ru.mark: mark 7 is already used by exit 'uk'"],
    ),
    (
        "empty-rule",
        HEAD + "  - exit: uk\n  - exit: ru\n    domains: []\n",
        [
            "s.yaml:5:5: rules.0: empty rule: give at least one of domains, countries, nets, lists",
            "s.yaml:6:5: rules.1: empty rule: give at least one of domains, countries, nets, lists",
        ],
    ),
    (
        "rule-without-exit",
        HEAD + "  - countries: [GB]\n",
        ["s.yaml:5:5: rules.0.exit: is required"],
    ),
    (
        "bad-endpoint",
        HEAD + "  - {exit: uk, countries: [GB]}\ndns:\n  listen: ['10.0.0.1']\n",
        ["s.yaml:7:12: dns.listen.0: '10.0.0.1' is not ADDR:PORT (port 1-65535)"],
    ),
    (
        "unknown-format",
        "servers: [a]\n",
        [
            "s.yaml:1:1: cannot tell the format: expected 'exits' and 'rules' (native), 'routes' "
            "(ipt-server settings.yaml) or 'routing' (MRVPN2 schema)"
        ],
    ),
    (
        "empty-file",
        "# nothing\n",
        ["s.yaml:1:1: the file is empty"],
    ),
    (
        "legacy-settings",
        "routes:\n  - net: ['203.0.113.0/33']\n    interface: wg-uk\n"
        "  - domain: '.*\\.(ru'\n    interface: wg-ru\n  - country: UK\n    interface: wg-uk\n"
        "  - net: 1.2.3.0/24\n  - net: 1.2.4.0/24\n    interface: wg-uk\n    wieght: 3\n"
        "table: two\n",
        [
            "s.yaml:2:11: routes.0.net.0: '203.0.113.0/33' is not a network: "
            "prefix length must be 0-32 for IPv4",
            "s.yaml:4:13: routes.1.domain: regular expression '.*\\.(ru' does not compile: "
            "missing ), unterminated subpattern at position 4",
            "s.yaml:6:14: routes.2.country: 'UK' is not an ISO 3166-1 alpha-2 country code; "
            "did you mean GB?",
            "s.yaml:8:5: routes.3.interface: is required",
            "s.yaml:11:5: routes.4.wieght: unknown key 'wieght'; did you mean 'weight'?",
            "s.yaml:12:8: table: must be a whole number, not 'two'",
        ],
    ),
    (
        "legacy-mrvpn2",
        'routing:\n  routes:\n    - interface: wg_uk\n      geo: ["country=GB", "RU"]\n'
        "      static: [10.1.2.3/8]\n  interfaces: [wg-firezone]\n  pbr_mrk: 200\n",
        [
            "s.yaml:4:27: routing.routes.0.geo.1: geo entry 'RU' must look like country='RU'",
            "s.yaml:5:16: routing.routes.0.static.0: '10.1.2.3/8' has host bits set; "
            "did you mean 10.0.0.0/8?",
            "s.yaml:7:3: routing.pbr_mrk: unknown key 'pbr_mrk'; did you mean 'pbr_mark'?",
        ],
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_malformed_file_reports_every_problem_where_it_was_written(
    text: str, expected: list[str]
) -> None:
    assert problems(text) == expected


def test_many_problems_are_all_reported() -> None:
    text = HEAD + (
        "  - exit: nowhere\n    nets: [10.0.0.0/33]\n    countries: [XX]\n    weight: x\n"
        "  - exit: uk\n    domains: ['~(']\n"
    )
    found = problems(text)
    assert len(found) == 5, found
    assert [p.split(":")[1] for p in found] == ["5", "6", "7", "8", "10"]


@pytest.mark.parametrize("path", sorted(EXAMPLES.rglob("*.yaml")), ids=lambda p: p.name)
def test_every_example_is_valid(path: Path) -> None:
    parse_schema(path.read_text(), str(path))


def test_native_values_are_typed() -> None:
    loaded = parse_schema(
        HEAD.replace("wg-ru", "_DEFAULT")
        + "  - exit: ru\n    domains: [Mail.RU., '*.Co.UK', '=WWW.example.com', 'пример.рф']\n"
        "    countries: [gb]\n    nets: [203.0.113.7]\n",
        "s.yaml",
    )
    schema = loaded.schema
    assert loaded.format is Format.NATIVE
    assert schema.exits["ru"].route is Route.HOST_GATEWAY
    assert schema.exits["uk"].route is Route.INTERFACE
    rule = schema.rules[0]
    assert [p.value for p in rule.domains] == [
        "mail.ru",
        "co.uk",
        "www.example.com",
        "xn--e1afmkfd.xn--p1ai",
    ]
    assert rule.countries == ["GB"]
    assert [str(n) for n in rule.nets] == ["203.0.113.7/32"]
    assert loaded.rule_lines == (5,)


EXAMPLE_TEXT = (EXAMPLES / "uk-ru-us.yaml").read_text()
LEGACY_TEXT = (EXAMPLES / "legacy" / "ipt-server-settings.yaml").read_text()


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from([EXAMPLE_TEXT, LEGACY_TEXT]),
    edits=st.lists(
        st.tuples(
            st.floats(0, 1),
            st.integers(0, 8),
            st.text(alphabet=":-[]{}'\"#&*!|>%@`,\n ~=.0123456789abcXYZ\t\\", max_size=6),
        ),
        min_size=1,
        max_size=5,
    ),
)
def test_a_damaged_file_is_rejected_cleanly_or_accepted(
    base: str, edits: list[tuple[float, int, str]]
) -> None:
    """Whatever an editor leaves in the file, loading ends in a schema or a SchemaError."""
    text = base
    for where, cut, insert in edits:
        at = int(where * len(text))
        text = text[:at] + insert + text[at + cut :]
    try:
        parse_schema(text, "damaged.yaml")
    except SchemaError as e:
        assert e.problems
        for problem in e.problems:
            assert str(problem).startswith("damaged.yaml:")
            assert problem.line >= 1 and problem.column >= 1


HOSTILE = [
    ("self-alias", "exits: &a [*a]\n", "x:1:8: exits.0: an alias refers to itself"),
    (
        "python-tag",
        "exits: !!python/object:os.system {}\n",
        "x:1:8: exits: unsupported YAML tag tag:yaml.org,2002:python/object:os.system",
    ),
    (
        "huge-weight",
        "exits: {a: {interface: wg0}}\n"
        "rules: [{exit: a, weight: 99999999999999999999, nets: [1.1.1.0/24]}]\n",
        "x:2:27: rules.0.weight: must be at most 1000000, not 99999999999999999999",
    ),
    ("nul-byte", "\x00\n", "x:1:1: YAML error: unacceptable character #x0000"),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE]
)
def test_hostile_yaml_is_rejected_with_a_message(text: str, expected: str) -> None:
    with pytest.raises(SchemaError) as caught:
        parse_schema(text, "x")
    assert any(str(p).startswith(expected) for p in caught.value.problems), caught.value


def test_a_key_that_looks_like_a_pydantic_marker_is_still_a_key() -> None:
    """Found by the damaged-file test: a top-level key ending in "]"."""
    assert problems("exits: {}\nrules: []\n000ml-languag]: x\n") == [
        "s.yaml:3:1: 000ml-languag]: unknown key '000ml-languag]'"
    ]

"""The schema's value types, without I/O: what a user may write for a domain pattern, a
country, a network or an endpoint, what it means, and what the error says otherwise."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from pydantic import BaseModel

from iptserver.schema.values import (
    Country,
    Domain,
    DomainPattern,
    Endpoint,
    Network,
    PatternKind,
    format_endpoint,
    normalize_name,
    parse_country,
    parse_domain_pattern,
    parse_endpoint,
    parse_network,
)

V4 = ipaddress.ip_address("192.0.2.1")
V6 = ipaddress.ip_address("2001:db8::1")


@pytest.mark.parametrize(
    ("raw", "kind", "value"),
    [
        ("example.com", PatternKind.SUBTREE, "example.com"),
        (".example.com", PatternKind.SUBTREE, "example.com"),
        ("*.example.com", PatternKind.BELOW, "example.com"),
        ("=example.com", PatternKind.EXACT, "example.com"),
        ("~^ads[0-9]+\\.", PatternKind.REGEX, "^ads[0-9]+\\."),
        ("  Example.COM.  ", PatternKind.SUBTREE, "example.com"),
        ("_dmarc.example.com", PatternKind.SUBTREE, "_dmarc.example.com"),
        ("bücher.de", PatternKind.SUBTREE, "xn--bcher-kva.de"),
        ("ru", PatternKind.SUBTREE, "ru"),
    ],
    ids=[
        "subtree",
        "dot-subtree",
        "below",
        "exact",
        "regex",
        "case-dot-space",
        "underscore",
        "idna",
        "tld",
    ],
)
def test_domain_patterns(raw: str, kind: PatternKind, value: str) -> None:
    pattern = parse_domain_pattern(raw)
    assert (pattern.kind, pattern.value) == (kind, value)
    assert str(pattern) == raw.strip()  # written back as the user wrote it


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "'' names no domain"),
        ("=", "'=' names no domain"),
        ("exa mple.com", "label 'exa mple' must be 1-63"),
        ("-bad.com", "label '-bad' must be 1-63"),
        ("a..com", "label '' must be 1-63"),
        ("x" * 64 + ".com", "must be 1-63"),
        ("~", "empty regular expression after '~'"),
        ("~(unclosed", "regular expression '(unclosed' does not compile"),
        (42, "a domain pattern must be a string, not int"),
    ],
    ids=[
        "empty",
        "bare-equals",
        "space",
        "leading-hyphen",
        "empty-label",
        "long-label",
        "empty-regex",
        "bad-regex",
        "not-a-string",
    ],
)
def test_bad_domain_patterns_say_why(raw: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_domain_pattern(raw)
    assert message in str(caught.value)


def test_a_pattern_passes_through_and_names_normalize() -> None:
    pattern = DomainPattern(PatternKind.EXACT, "example.com", "=example.com")
    assert parse_domain_pattern(pattern) is pattern
    assert normalize_name(" WWW.Example.Com. ") == "www.example.com"


@pytest.mark.parametrize(
    ("raw", "code"), [("RU", "RU"), ("ru", "RU"), (" gb ", "GB")], ids=["upper", "lower", "space"]
)
def test_countries(raw: str, code: str) -> None:
    assert parse_country(raw) == code


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("UK", "'UK' is not an ISO 3166-1 alpha-2 country code; did you mean GB?"),
        ("XX", "'XX' is not an ISO 3166-1 alpha-2 country code"),
        ("RUS", "'RUS' is not an ISO 3166-1 alpha-2 country code"),
        (7, "a country must be a two-letter code, not int"),
    ],
    ids=["common-mistake", "unknown", "three-letters", "not-a-string"],
)
def test_bad_countries_say_why(raw: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_country(raw)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("raw", "network"),
    [
        ("203.0.113.0/24", "203.0.113.0/24"),
        (" 203.0.113.7 ", "203.0.113.7/32"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("2001:db8::1", "2001:db8::1/128"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("::/0", "::/0"),
    ],
    ids=["v4", "v4-host", "v6", "v6-host", "v4-any", "v6-any"],
)
def test_networks(raw: str, network: str) -> None:
    assert parse_network(raw) == ipaddress.ip_network(network)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("203.0.113.7/24", "'203.0.113.7/24' has host bits set; did you mean 203.0.113.0/24?"),
        ("2001:db8::1/32", "'2001:db8::1/32' has host bits set; did you mean 2001:db8::/32?"),
        ("203.0.113.0/33", "is not a network: prefix length must be 0-32 for IPv4"),
        ("2001:db8::/129", "prefix length must be 0-128 for IPv6"),
        ("10.0.0.0/x", "prefix length must be 0-32 for IPv4"),
        ("10.0.0.0/-1", "prefix length must be 0-32 for IPv4"),
        ("example.com/24", "'example.com/24' is not a network: 'example.com' is not an IP address"),
        (["10.0.0.0/8"], "a network must be a CIDR string, not list"),
    ],
    ids=[
        "v4-host-bits",
        "v6-host-bits",
        "v4-too-long",
        "v6-too-long",
        "not-a-number",
        "negative",
        "not-an-address",
        "not-a-string",
    ],
)
def test_bad_networks_say_why(raw: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_network(raw)
    assert message in str(caught.value)


def test_a_network_passes_through() -> None:
    net = ipaddress.ip_network("10.0.0.0/8")
    assert parse_network(net) is net


@pytest.mark.parametrize(
    ("raw", "endpoint"),
    [
        ("192.0.2.1:53", Endpoint(V4, 53)),
        (" 192.0.2.1:5353 ", Endpoint(V4, 5353)),
        ("[2001:db8::1]:853", Endpoint(V6, 853)),
        ("192.0.2.1:65535", Endpoint(V4, 65535)),
    ],
    ids=["v4", "space", "v6-brackets", "top-port"],
)
def test_endpoints_in_a_schema(raw: str, endpoint: Endpoint) -> None:
    assert parse_endpoint(raw) == endpoint


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("192.0.2.1", "'192.0.2.1' is not ADDR:PORT (port 1-65535)"),
        ("192.0.2.1:0", "is not ADDR:PORT (port 1-65535)"),
        ("192.0.2.1:65536", "is not ADDR:PORT (port 1-65535)"),
        ("192.0.2.1:dns", "is not ADDR:PORT (port 1-65535)"),
        ("192.0.2.1:-1", "is not ADDR:PORT (port 1-65535)"),
        ("[2001:db8::1]", "is not ADDR:PORT (port 1-65535)"),
        ("ns.example:53", "'ns.example:53' is not ADDR:PORT: 'ns.example' is not an IP address"),
        ("2001:db8::1", "is not ADDR:PORT: '2001:db8:' is not an IP address"),
        (53, "an address must be written ADDR:PORT, not int"),
    ],
    ids=[
        "no-port",
        "port-0",
        "port-too-big",
        "port-name",
        "negative-port",
        "v6-no-port",
        "hostname",
        "v6-no-brackets",
        "not-a-string",
    ],
)
def test_bad_endpoints_in_a_schema_say_why(raw: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_endpoint(raw)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "endpoint"),
    [
        ("192.0.2.1", Endpoint(V4, 53)),
        ("192.0.2.1:5353", Endpoint(V4, 5353)),
        ("192.0.2.1:0", Endpoint(V4, 0)),
        ("2001:db8::1", Endpoint(V6, 53)),
        ("[2001:db8::1]", Endpoint(V6, 53)),
        ("[2001:db8::1]:5353", Endpoint(V6, 5353)),
        (" 192.0.2.1:65535 ", Endpoint(V4, 65535)),
    ],
    ids=["v4", "v4-port", "port-0", "v6-bare", "v6-brackets", "v6-brackets-port", "space"],
)
def test_endpoints_of_a_dns_proxy_setting(text: str, endpoint: Endpoint) -> None:
    assert Endpoint.parse(text) == endpoint


def test_a_missing_port_is_the_default_given() -> None:
    assert Endpoint.parse("192.0.2.1", default_port=5300) == Endpoint(V4, 5300)
    assert Endpoint.parse("[2001:db8::1]", default_port=5300) == Endpoint(V6, 5300)
    assert Endpoint.parse("192.0.2.1:54", default_port=5300).port == 54


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[2001:db8::1", "'[2001:db8::1' is not ADDR:PORT or [ADDR6]:PORT"),
        ("[2001:db8::1]53", "is not ADDR:PORT or [ADDR6]:PORT"),
        ("192.0.2.1:65536", "'192.0.2.1:65536': port '65536' is not a number from 0 to 65535"),
        ("[2001:db8::1]:x", "port 'x' is not a number from 0 to 65535"),
        ("192.0.2.1:", "port '' is not a number from 0 to 65535"),
        ("ns.example", "'ns.example': 'ns.example' is not an IP address"),
        ("192.0.2.300:53", "'192.0.2.300' is not an IP address"),
    ],
    ids=["unclosed", "no-colon", "port-too-big", "port-name", "empty-port", "hostname", "bad-v4"],
)
def test_bad_endpoints_of_a_dns_proxy_setting_say_why(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        Endpoint.parse(text)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("endpoint", "text"),
    [(Endpoint(V4, 53), "192.0.2.1:53"), (Endpoint(V6, 853), "[2001:db8::1]:853")],
    ids=["v4", "v6-brackets"],
)
def test_endpoints_are_written_back_as_read(endpoint: Endpoint, text: str) -> None:
    assert str(endpoint) == text
    assert format_endpoint((endpoint.address, endpoint.port)) == text
    assert parse_endpoint(text) == endpoint == Endpoint.parse(text)


def test_an_endpoint_is_a_plain_tuple_and_defaults_to_port_53() -> None:
    assert Endpoint(V4) == (V4, 53)
    address, port = Endpoint(V6, 5353)
    assert (address, port) == (V6, 5353)


class Fields(BaseModel):
    """A model using the schema's field types, as the schema model does."""

    domain: Domain
    country: Country
    net: Network
    listen: Endpoint


def test_schema_fields_validate_and_write_back_as_written() -> None:
    fields = Fields.model_validate(
        {"domain": "*.Example.com", "country": "ru", "net": "10.0.0.0/8", "listen": "[::1]:53"}
    )
    assert fields.domain.kind is PatternKind.BELOW
    assert fields.country == "RU"
    assert fields.net == ipaddress.ip_network("10.0.0.0/8")
    assert fields.listen == Endpoint(ipaddress.ip_address("::1"), 53)
    assert fields.model_dump(mode="json") == {
        "domain": "*.Example.com",
        "country": "RU",
        "net": "10.0.0.0/8",
        "listen": "[::1]:53",
    }


def test_schema_fields_reject_what_the_parsers_reject() -> None:
    with pytest.raises(ValueError, match="has host bits set"):
        Fields.model_validate(
            {"domain": "a.b", "country": "RU", "net": "10.0.0.1/8", "listen": "127.0.0.1:53"}
        )
    with pytest.raises(ValueError, match=r"is not ADDR:PORT \(port 1-65535\)"):
        Fields.model_validate(
            {"domain": "a.b", "country": "RU", "net": "10.0.0.0/8", "listen": "127.0.0.1"}
        )

"""The one set of answer checks (``iptserver/api/answers.py``), through each way in: the
JSON body of ``POST /v1/answers`` (``posts.parse_answer``) and the plugin's datagram
(``plugin.parse_request``). Both must refuse the same things with the same words and
build the same ``AnswerRequest`` from the same answer. No sockets: the parsers are pure.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from iptserver.api.answers import (
    MAX_ADDRESSES,
    MAX_CHAIN,
    MAX_NAME,
    MAX_TTL,
    AnswerRequest,
    BadRequest,
    check_address,
    check_name,
    check_ttl,
)
from iptserver.api.plugin import BadDatagram, parse_request
from iptserver.api.posts import parse_answer


def as_json(names: list[str], addresses: list[str], ttl: Any) -> dict[str, Any]:
    return {"qname": names[0], "chain": names[1:], "addresses": addresses, "ttl": ttl}


def as_datagram(names: list[str], addresses: list[str], ttl: Any) -> bytes:
    return f"IPT1 42 {ttl}\n\n{' '.join(names)}\n{' '.join(addresses)}\n".encode()


def parse_json(names: list[str], addresses: list[str], ttl: Any) -> AnswerRequest:
    return parse_answer(as_json(names, addresses, ttl))


def parse_datagram(names: list[str], addresses: list[str], ttl: Any) -> AnswerRequest:
    return parse_request(as_datagram(names, addresses, ttl), None)


WAYS_IN = pytest.mark.parametrize("parse", [parse_json, parse_datagram], ids=["json", "datagram"])
LONGEST_NAME = ".".join(["a" * 63] * 3 + ["a" * 61])  # 253 characters


@WAYS_IN
def test_both_ways_in_build_the_same_request(parse: Any) -> None:
    request = parse(["WWW.Example.COM.", "cdn.example.net"], ["198.51.100.10", "2001:db8::1"], 60)
    assert request.names == ("www.example.com", "cdn.example.net")
    assert request.addresses == (
        ipaddress.ip_address("198.51.100.10"),
        ipaddress.ip_address("2001:db8::1"),
    )
    assert request.ttl == 60


def test_a_datagram_request_carries_its_id_and_json_none() -> None:
    assert parse_datagram(["a.com"], ["192.0.2.1"], 1).request_id == "42"
    assert parse_json(["a.com"], ["192.0.2.1"], 1).request_id == "-"


@WAYS_IN
@pytest.mark.parametrize(
    ("names", "addresses", "ttl", "expected"),
    [
        (["."], ["192.0.2.1"], 60, "not a DNS name"),
        (["a" * (MAX_NAME + 1)], ["192.0.2.1"], 60, "not a DNS name"),
        (["a\tb.com"], ["192.0.2.1"], 60, "not a DNS name"),
        (["a.com", "b\x00.net"], ["192.0.2.1"], 60, "not a DNS name"),
        (["a.com"] + ["x.net"] * (MAX_CHAIN + 1), ["192.0.2.1"], 60, "chain has more than 16"),
        (["a.com"], ["300.1.1.1"], 60, "not an IP address"),
        (["a.com"], ["192.0.2.0/24"], 60, "not an IP address"),
        (["a.com"], [""], 60, "not an IP address"),
        (["a.com"], ["192.0.2.1"] * (MAX_ADDRESSES + 1), 60, "more than 512"),
        (["a.com"], ["192.0.2.1"], -1, "ttl must be an integer from 0 to"),
        (["a.com"], ["192.0.2.1"], MAX_TTL + 1, "ttl must be an integer from 0 to"),
        (["a.com"], ["192.0.2.1"], 1.5, "ttl must be an integer from 0 to"),
    ],
    ids=[
        "root",
        "name-too-long",
        "tab-in-name",
        "nul-in-chain",
        "chain-too-long",
        "bad-address",
        "network",
        "empty-address",
        "too-many-addresses",
        "ttl-negative",
        "ttl-too-big",
        "ttl-fraction",
    ],
)
def test_both_ways_in_refuse_the_same_answers_in_the_same_words(
    parse: Any, names: list[str], addresses: list[str], ttl: Any, expected: str
) -> None:
    with pytest.raises(BadRequest, match=expected):
        parse(names, addresses, ttl)


@WAYS_IN
def test_limits_are_inclusive(parse: Any) -> None:
    chain = ["x.net"] * MAX_CHAIN
    request = parse([LONGEST_NAME, *chain], ["192.0.2.1"] * MAX_ADDRESSES, MAX_TTL)
    assert len(request.names) == 1 + MAX_CHAIN
    assert len(request.addresses) == MAX_ADDRESSES
    assert request.ttl == MAX_TTL
    assert parse(["a.com"], ["192.0.2.1"], 0).ttl == 0


def test_a_datagram_refusal_names_its_id() -> None:
    with pytest.raises(BadDatagram, match="not an IP address") as raised:
        parse_datagram(["a.com"], ["nope"], 60)
    assert raised.value.request_id == "42"


def test_json_refusals_name_the_field() -> None:
    with pytest.raises(BadRequest, match=r"^chain\[1\] is not a DNS name"):
        parse_json(["a.com", "b.net", "."], ["192.0.2.1"], 60)
    with pytest.raises(BadRequest, match=r"^addresses\[0\] is not an IP address"):
        parse_json(["a.com"], ["x"], 60)


@pytest.mark.parametrize(
    ("raw", "where", "expected"),
    [
        (5, "qname", "qname must be a string"),
        ("", "qname", "qname is not a DNS name: ''"),
        ("a b.com", None, "not a DNS name: 'a b.com'"),
        ("x" * 300, None, "not a DNS name: '" + "x" * 80 + "'"),  # quoted, cut at 80
    ],
)
def test_check_name(raw: object, where: str | None, expected: str) -> None:
    with pytest.raises(BadRequest) as raised:
        check_name(raw, where)
    assert str(raised.value) == expected


def test_check_address_and_ttl() -> None:
    assert check_address("2001:DB8::1") == ipaddress.ip_address("2001:db8::1")
    with pytest.raises(BadRequest, match=r"^ip must be a string$"):
        check_address(3325256714, "ip")
    for bad in (True, None, "300", MAX_TTL + 1):
        with pytest.raises(BadRequest, match="ttl must be"):
            check_ttl(bad)
    assert check_ttl(MAX_TTL) == MAX_TTL


def test_a_request_is_a_value() -> None:
    request = parse_json(["a.com"], ["192.0.2.1"], 1)
    assert request == parse_json(["A.com."], ["192.0.2.1"], 1)
    with pytest.raises(AttributeError):
        request.ttl = 2  # type: ignore[misc]

"""``iptserver explain --json`` agrees with a brute-force reading of DESIGN §3."""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iptserver.cli import main
from iptserver.schema import load_schema
from tests.conftest import EXAMPLES
from tests.reference import ReferenceGeo, reference_decision

LABELS = ["ru", "uk", "mail", "cdn1", "rumble"]
EXITS = {"a": "wg-a", "b": "wg-b", "c": "wg-c", "direct": "_DEFAULT"}
COUNTRIES = ["GB", "RU", "US", "DE", "FR"]


def run_explain(*args: str) -> list[dict[str, Any]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["explain", *args, "--json"])
    assert status == 0
    result: list[dict[str, Any]] = json.loads(out.getvalue())
    return result


names = st.lists(st.sampled_from(LABELS), min_size=1, max_size=3).map(".".join)
TEMPLATES = [
    "{n}",
    ".{n}",
    "*.{n}",
    "={n}",
    "~.*\\.{e}",
    "~.*\\.{e}$",
    "~(.*\\.)?{e}$",
    "~{e}$",
    "~{e}",
    "~.*{e}",
    "~.*{e}$",
    "~^{e}\\.?$",
    "~^(mail|cdn1)\\.{e}$",
    "~[a-z]+\\.{e}",
    "~.*\\.{n}",
]
BASES = ["198.51.100.64", "203.0.113.0", "10.1.0.0", "2001:db8:7::"]


@st.composite
def networks(draw: st.DrawFn) -> str:
    """Small networks around a few addresses, so rules overlap queries and each other."""
    address = ipaddress.ip_address(draw(st.sampled_from(BASES))) + draw(st.integers(0, 3))
    bits = address.max_prefixlen
    length = draw(st.sampled_from([0, 8, bits - 8, bits - 2, bits - 1, bits, bits]))
    return str(ipaddress.ip_network((address, length), strict=False))


@st.composite
def rules(draw: st.DrawFn) -> dict[str, Any]:
    rule: dict[str, Any] = {"exit": draw(st.sampled_from(sorted(EXITS)))}
    kinds = draw(st.sets(st.sampled_from(["domains", "countries", "nets"]), min_size=1))
    if "domains" in kinds:
        rule["domains"] = [
            template.format(n=name, e=re.escape(name))
            for template, name in draw(
                st.lists(st.tuples(st.sampled_from(TEMPLATES), names), min_size=1, max_size=3)
            )
        ]
    if "countries" in kinds:
        rule["countries"] = draw(st.lists(st.sampled_from(COUNTRIES), min_size=1, max_size=2))
    if "nets" in kinds:
        rule["nets"] = draw(st.lists(networks(), min_size=1, max_size=3))
    weight = draw(st.sampled_from([None, None, 0, 5, -1]))
    if weight is not None:
        rule["weight"] = weight
    return rule


@st.composite
def schemas(draw: st.DrawFn) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "exits": {name: {"interface": iface} for name, iface in EXITS.items()},
        "rules": draw(st.lists(rules(), max_size=8)),
    }
    if draw(st.booleans()):
        schema["default"] = draw(st.sampled_from(sorted(EXITS)))
    if draw(st.booleans()):
        schema["mesh"] = ["203.0.113.2/31"]
    return schema


def _mentioned(schema: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Names and networks the schema's rules mention, to aim queries at them."""
    found_names, found_nets = [], []
    for rule in schema["rules"]:
        for pattern in rule.get("domains", []):
            found_names.append(re.sub(r"[^a-z0-9.-]", "", pattern.replace("\\.", ".")).strip("."))
        found_nets += rule.get("nets", [])
    return [n for n in found_names if n] or ["mail.ru"], found_nets or ["198.51.100.64/30"]


@st.composite
def queries(draw: st.DrawFn, schema: dict[str, Any]) -> str:
    mentioned_names, mentioned_nets = _mentioned(schema)
    aimed = st.sampled_from(mentioned_names)
    one_name = st.one_of(names, aimed, st.tuples(st.sampled_from(LABELS), aimed).map(".".join))
    chain = draw(st.lists(one_name, min_size=0, max_size=3))
    chain = [draw(st.sampled_from([n, n.upper(), n + ".", n.capitalize()])) for n in chain]
    net = ipaddress.ip_network(draw(st.sampled_from(mentioned_nets)))
    inside = str(net.network_address + draw(st.integers(0, min(net.num_addresses - 1, 3))))
    address = draw(
        st.one_of(
            st.just(inside),
            st.sampled_from([*BASES, "198.51.100.1", "2001:db8:44::1", "192.0.2.1"]),
        )
    )
    if not chain:
        return address
    if draw(st.integers(0, 4)) == 0:
        return ",".join(chain)
    return ",".join(chain) + "=" + address


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=schemas(), data=st.data())
def test_explain_agrees_with_brute_force(
    schema: dict[str, Any], data: st.DataObject, lab_mmdb: Path
) -> None:
    batch = data.draw(st.lists(queries(schema), min_size=1, max_size=6))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "schema.yaml"
        path.write_text(yaml.safe_dump(schema))
        results = run_explain(str(path), *batch, "--geoip", str(lab_mmdb))
        parsed = load_schema(path).schema
    geo = ReferenceGeo(lab_mmdb)
    for query, result in zip(batch, results, strict=True):
        names_part, _, ip_part = query.rpartition("=")
        if not _:
            try:
                ip, names_ = ipaddress.ip_address(query), []
            except ValueError:
                ip, names_ = None, query.split(",")
        else:
            ip, names_ = ipaddress.ip_address(ip_part), names_part.split(",")
        expected_exit, expected_rule = reference_decision(parsed, names_, ip, geo)
        assert (result["exit"], result["rule"]) == (expected_exit, expected_rule), query
        expected_interface = EXITS[expected_exit] if expected_exit else None
        assert result["interface"] == expected_interface
        assert result["query"] == query


EXPLAINED = [
    # (query, exit, interface, rule): the UK/RU/US example on the lab GeoIP data
    ("mail.ru=198.51.100.200", "ru", "wg-ru", 0),
    ("MAIL.RU.=198.51.100.200", "ru", "wg-ru", 0),
    ("www.bbc.co.uk=198.51.100.70", "uk", "wg-uk", 1),
    ("198.51.100.70", "ru", "wg-ru", 0),
    ("198.51.100.10", "uk", "wg-uk", 1),
    ("198.51.100.150", "us", "wg-us", None),
    ("203.0.113.130", "uk", "wg-uk", 2),
    ("updates.example.org=198.51.100.10", "direct", "_DEFAULT", 3),
    ("cdn.example.net,edge.yandex.net=203.0.113.40", "ru", "wg-ru", 0),
    ("news.gov.uk=2001:db8:ff:1::1", "uk", "wg-uk", 1),
    ("2001:db8:7::1", "ru", "wg-ru", 0),
    ("10.77.0.5", None, None, None),
    ("mail.ru=10.77.0.5", None, None, None),
    ("shop.example.com", "us", "wg-us", None),
    ("mail.ru", "ru", "wg-ru", 0),
]


@pytest.mark.parametrize(
    ("query", "exit_", "interface", "rule"), EXPLAINED, ids=[q for q, *_ in EXPLAINED]
)
def test_explain_json_on_the_example(
    query: str, exit_: str | None, interface: str | None, rule: int | None, lab_mmdb: Path
) -> None:
    [result] = run_explain(str(EXAMPLES / "uk-ru-us.yaml"), query, "--geoip", str(lab_mmdb))
    assert (result["exit"], result["interface"], result["rule"]) == (exit_, interface, rule)


def test_explain_text_names_the_winner_its_line_and_the_rules_it_beat(lab_mmdb: Path) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(
            [
                "explain",
                str(EXAMPLES / "uk-ru-us.yaml"),
                "www.bbc.co.uk=198.51.100.70",
                "--geoip",
                str(lab_mmdb),
            ]
        )
    text = out.getvalue()
    assert "exit uk (interface wg-uk)" in text
    assert "rule 1 (line 29, exit uk): domain co.uk matched www.bbc.co.uk" in text
    assert "beat rule 0 (line 24, exit ru): country RU (198.51.100.64/26)" in text


def test_bad_query_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["explain", str(EXAMPLES / "minimal.yaml"), "x.com=not-an-ip"])
    assert status == 2
    assert "'not-an-ip' is not an IP address" in capsys.readouterr().err


OFFICES = """
exits:
  uk: {interface: wg_uk}
  direct: {interface: _DEFAULT}
ingress: [wg_office, wg_branch, wg_hq]
kernel: {export_table: 200}
default: uk
rules:
  - {exit: uk, domains: [bbc.co.uk]}
  - {exit: direct, domains: [example.org]}
  - {exit: uk, nets: [192.0.2.0/24]}
nodes:
  entry: {entry: true, endpoint: 198.18.0.1}
  office: {subnets: [10.88.0.0/24]}
  branch: {subnets: [10.89.0.0/24], send: all}
  hq: {subnets: [10.90.0.0/24], send: policy}
tunnels:
  wg_office: {subnet: 10.99.0.0/30, hosts: {entry: {expose: true}, office: {}}}
  wg_branch: {subnet: 10.99.0.4/30, hosts: {entry: {expose: true}, branch: {}}}
  wg_hq: {subnet: 10.99.0.8/30, hosts: {entry: {expose: true}, hq: {}}}
"""


@pytest.mark.parametrize(
    ("query", "client", "office"),
    [
        ("www.bbc.co.uk=198.51.100.10", "10.88.0.5", ("office", "learned", True)),
        ("192.0.2.7", "10.88.0.5", ("office", "learned", False)),  # a net rule: not exported
        ("www.example.org=198.51.100.11", "10.88.0.5", ("office", "learned", False)),  # direct
        ("203.0.113.9", "10.88.0.5", ("office", "learned", False)),  # the default
        ("192.0.2.7", "10.89.0.5", ("branch", "all", True)),
        ("203.0.113.9", "10.89.0.5", ("branch", "all", True)),
        ("192.0.2.7", "10.90.0.5", ("hq", "policy", True)),  # a net rule: announced
        ("www.bbc.co.uk=198.51.100.10", "10.90.0.5", ("hq", "policy", True)),
        ("203.0.113.9", "10.90.0.5", ("hq", "policy", False)),  # the default: not
        ("www.example.org=198.51.100.11", "10.90.0.5", ("hq", "policy", False)),
        ("192.0.2.7", "10.77.1.2", None),  # a client of the entry's own
    ],
)
def test_explain_says_whether_an_office_hosts_traffic_reaches_the_entry(
    tmp_path: Path, query: str, client: str, office: tuple[str, str, bool] | None
) -> None:
    schema = tmp_path / "offices.yaml"
    schema.write_text(OFFICES)
    (found,) = run_explain(str(schema), query, "--from", client)
    view = found["office"]
    got = (view["node"], view["send"], view["reaches_entry"]) if view else None
    assert got == office
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["explain", str(schema), query, "--from", client]) == 0
    if office is not None and not office[2]:
        assert "leaves by the node's own uplink" in out.getvalue()

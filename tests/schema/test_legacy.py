"""The two MRVPN2 formats read as they are, and converted to native without changing a
single decision."""

from __future__ import annotations

import contextlib
import io
import ipaddress
from pathlib import Path

import pytest

from iptserver.cli import main
from iptserver.geoip import GeoIPDatabase
from iptserver.policy import MatchKind, Policy, Reason
from iptserver.schema import load_schema, parse_schema
from iptserver.schema.legacy import Format
from iptserver.schema.model import Route
from tests.conftest import EXAMPLES

SETTINGS = EXAMPLES / "legacy" / "ipt-server-settings.yaml"
MRVPN2 = EXAMPLES / "legacy" / "mrvpn2-schema.yaml"


def test_ipt_server_settings_are_read_as_written() -> None:
    loaded = load_schema(SETTINGS)
    schema = loaded.schema
    assert loaded.format is Format.IPT_SERVER
    # An exit named only by an interface is an exit of that name.
    assert {name: e.interface for name, e in schema.exits.items()} == {
        "wg-ru": "wg-ru",
        "wg-uk": "wg-uk",
        "wg-us": "wg-us",
        "_DEFAULT": "_DEFAULT",
    }
    assert schema.exits["_DEFAULT"].route is Route.HOST_GATEWAY
    assert [r.exit for r in schema.rules] == [
        "wg-ru",
        "wg-ru",
        "wg-uk",
        "wg-us",
        "_DEFAULT",
        "wg-uk",
    ]
    assert [r.weight for r in schema.rules] == [10, 0, 0, 5, 50, 0]
    assert [p.text for p in schema.rules[1].domains] == ["~.*\\.ru", "~.*\\.su"]
    assert schema.rules[1].hold == 600
    assert [str(n) for n in schema.rules[4].nets] == ["203.0.113.9/32"]
    assert schema.ingress == ["wg-clients"]
    assert (schema.kernel.mark_base, schema.kernel.table_base, schema.ttl.hold) == (200, 200, 300)
    assert [n.path for n in loaded.notes] == ["routes.1.metric"]


def test_mrvpn2_routing_section_is_read_as_written() -> None:
    loaded = load_schema(MRVPN2)
    schema = loaded.schema
    assert loaded.format is Format.MRVPN2
    assert sorted(schema.exits) == ["_DEFAULT", "wg_uk"]
    assert [r.countries for r in schema.rules] == [["RU"], ["GB"], []]
    assert [str(n) for n in schema.rules[2].nets] == ["0.0.0.0/0"]
    assert schema.ingress == ["wg-firezone"]
    assert loaded.rule_lines == (19, 25, 28)  # the lines of the route items


LEGACY_DECISIONS = [
    # (file, names, ip, exit, rule)
    (SETTINGS, ["mail.ru"], "198.51.100.200", "wg-ru", 1),
    (SETTINGS, ["x.rumble.com"], "198.51.100.200", "wg-ru", 1),  # MRVPN2's re.match meaning
    (SETTINGS, ["MAIL.SU."], "198.51.100.200", "wg-ru", 1),
    (SETTINGS, [], "198.51.100.70", "wg-ru", 0),  # country RU, weight 10
    (SETTINGS, ["news.co.uk"], "198.51.100.70", "wg-ru", 0),  # weight 10 beats the host route
    (SETTINGS, ["news.co.uk"], "198.51.100.200", "wg-uk", 2),
    (SETTINGS, ["news.co.uk.evil.com"], "198.51.100.200", None, None),  # `$` anchors
    (SETTINGS, [], "203.0.113.9", "_DEFAULT", 4),  # weight 50, host net
    (SETTINGS, [], "198.51.100.130", "wg-us", 3),
    (SETTINGS, [], "198.51.100.10", "wg-uk", 5),
    (SETTINGS, ["mail.ru"], "10.1.2.3", None, None),  # private: never diverted
    (MRVPN2, ["yandex.ru"], "198.51.100.130", "_DEFAULT", 0),
    (MRVPN2, [], "198.51.100.70", "_DEFAULT", 0),
    (MRVPN2, [], "198.51.100.10", "wg_uk", 1),
    (MRVPN2, [], "203.0.113.1", "wg_uk", 2),  # static 0.0.0.0/0
    (MRVPN2, ["bbc.co.uk"], "2001:db8:ff::1", "wg_uk", 1),
]


@pytest.mark.parametrize(
    ("path", "names", "ip", "exit_", "rule"),
    LEGACY_DECISIONS,
    ids=[f"{p.stem}-{','.join(n) or '-'}-{ip}" for p, n, ip, *_ in LEGACY_DECISIONS],
)
def test_legacy_schema_decisions(
    path: Path,
    names: list[str],
    ip: str,
    exit_: str | None,
    rule: int | None,
    lab_geoip: GeoIPDatabase,
) -> None:
    policy = Policy(load_schema(path).schema, lab_geoip)
    [decision] = policy.decide(names, [ipaddress.ip_address(ip)])
    assert (decision.exit, decision.rule) == (exit_, rule)


@pytest.mark.parametrize("path", [SETTINGS, MRVPN2], ids=lambda p: p.stem)
def test_convert_keeps_every_decision(path: Path, lab_geoip: GeoIPDatabase) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["convert", str(path)]) == 0
    converted = parse_schema(out.getvalue(), "converted.yaml")
    assert converted.format is Format.NATIVE
    before = Policy(load_schema(path).schema, lab_geoip)
    after = Policy(converted.schema, lab_geoip)
    names = [[], ["mail.ru"], ["x.rumble.com"], ["news.co.uk"], ["a.b.su"], ["example.com"]]
    ips = [ipaddress.ip_address(f"198.51.100.{i}") for i in range(0, 256, 5)]
    ips += [
        ipaddress.ip_address(a)
        for a in ("203.0.113.9", "203.0.113.77", "2001:db8:7::1", "10.1.1.1")
    ]
    for chain in names:
        assert before.decide(chain, ips) == after.decide(chain, ips), chain
    # The deployment sections come along too (render reads them).
    original = load_schema(path).schema
    assert (converted.schema.tunnels, converted.schema.nodes) == (original.tunnels, original.nodes)


def test_converted_file_says_where_it_came_from() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["convert", str(SETTINGS)])
    assert out.getvalue().startswith(f"# converted from {SETTINGS} (ipt-server settings.yaml)")


def test_a_legacy_domain_rule_is_a_domain_match() -> None:
    schema = parse_schema("routes:\n  - domain: '.*\\.am'\n    interface: eth1\n").schema
    [decision] = Policy(schema).decide(["shop.am"], [ipaddress.ip_address("192.0.2.1")])
    assert (decision.reason, decision.kind, decision.exit) == (
        Reason.RULE,
        MatchKind.DOMAIN,
        "eth1",
    )

"""A legacy MRVPN2 ipt-server ``settings.yaml``, as shipped in schema/examples, runs the
lab: each destination leaves through the exit its route's ``interface`` names.

A legacy schema names no DNS settings, so ``--listen`` and ``--upstream`` wire the
daemon (DESIGN §6). An exit given only by an interface routes ``default dev IFACE`` in
its table, which suits point-to-point WireGuard links.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from iptserver.lab import Lab
from tests.conftest import EXAMPLES
from tests.e2e.conftest import ENTRY_DNS, Running, explained, serving
from tests.e2e.entry_kernel import EntryState

SETTINGS = EXAMPLES / "legacy" / "ipt-server-settings.yaml"


@pytest.fixture(scope="module")
def legacy(
    lab: Lab, lab_mmdb: Path, tmp_path_factory: pytest.TempPathFactory, pristine_entry: EntryState
) -> Iterator[Running]:
    schema = tmp_path_factory.mktemp("legacy") / "settings.yaml"
    schema.write_text(lab.schema_text(SETTINGS))
    with serving(lab, schema, lab_mmdb, pristine_entry, "--listen", f"{ENTRY_DNS}:53") as daemon:
        yield daemon


# (query: a name and record type, or an address; the exit's interface: a lab tunnel,
# _DEFAULT (the host gateway) or None (no route matches: the main table); the route that
# sends it there)
WAYS = [
    ("mail.ru", "A", "ru", "country RU (weight 10), and domain .*\\.ru"),
    ("mail.ru", "AAAA", "ru", "country RU over IPv6"),
    ("www.bbc.co.uk", "A", "uk", "domain .*\\.co\\.uk$ (and country GB)"),
    ("a.chain.test", "A", "us", "its CNAME c.chain.ru matches .*\\.ru, but the net has weight 5"),
    ("www.example.com", "A", "us", "net 198.51.100.128/26, weight 5"),
    ("de.example.de", "A", None, "no route matches, no default: the main table"),
    ("203.0.113.9", None, "_DEFAULT", "net 203.0.113.9 on _DEFAULT, weight 50"),
    ("198.51.100.20", None, "uk", "country GB"),
    ("198.51.100.75", None, "ru", "country RU"),
]


@pytest.mark.parametrize(
    ("query", "rtype", "exit_", "why"), WAYS, ids=[f"{w[0]}-{w[1] or 'ip'}" for w in WAYS]
)
def test_legacy_routes_leave_through_their_interface(
    legacy: Running, query: str, rtype: str | None, exit_: str | None, why: str
) -> None:
    """What the far side saw, and what explain says, for each kind of legacy route."""
    lab = legacy.lab
    if rtype is None:
        address, explain = query, query
    else:
        records = lab.resolve("client", query, rtype, server=ENTRY_DNS)
        address = next(value for _, kind, value, _ in records if kind == rtype)
        chain = [query, *(value for _, kind, value, _ in records if kind == "CNAME")]
        explain = f"{','.join(chain)}={address}"
    if exit_ is None or exit_ == "_DEFAULT":
        seen, interface = "direct", exit_
    else:
        seen, interface = exit_, lab.wg_interface(exit_)
    assert lab.whoami("client", address) == seen, why
    assert explained(legacy, explain)["interface"] == interface, why


def test_each_exit_routes_default_dev_its_interface(legacy: Running) -> None:
    """The kernel side of the contract: an exit named by its interface has a table whose
    default route is ``dev IFACE`` (no gateway), for IPv4 and IPv6."""
    lab = legacy.lab
    for way in ("uk", "ru", "us"):
        interface = lab.wg_interface(way)
        for version in ("-4", "-6"):
            routes = lab.run("entry", ["ip", version, "route", "show", "table", "all"]).stdout
            found = [line for line in routes.splitlines() if f"default dev {interface} " in line]
            assert len(found) == 1 and " table " in found[0], (version, routes)

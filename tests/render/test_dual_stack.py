"""A dual-stack mesh (tunnels with ``subnet6``): both addresses on every tunnel end, and
OSPFv3 (ospf6d) beside OSPFv2 where a tunnel carries IPv6, stable to the byte."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from iptserver.cli import main
from iptserver.lab.frr import dry_run
from tests.render.test_wireguard import one, parse

GOLDEN = Path(__file__).parent / "frr"
MESH = """
exits:
  uk: {interface: wg_uk}
  ru: {interface: wg_ru}
kernel: {export_table: 200}
nodes:
  entry: {entry: true, endpoint: 198.18.0.1, subnets: [10.77.1.0/24, "fd77:1::/64"]}
  uk: {endpoint: 198.18.1.1, router_id: 10.255.0.11}
  ru: {endpoint: 198.18.2.1, router_id: 10.255.0.12}
  office: {endpoint: 198.18.9.1, subnets: [10.88.0.0/24, "fd88::/64"]}
  mt: {mikrotik: true}
tunnels:
  wg_uk:
    subnet: 10.99.0.0/30
    subnet6: "fd99::/64"
    hosts:
      entry: {}
      uk: {expose: 51821, interface: wg_uk_x}
  wg_ru:
    subnet: 10.99.0.12/30
    hosts:
      entry: {}
      ru: {expose: 51822, interface: wg_ru_x}
  wg_office:
    subnet: 10.99.0.4/30
    subnet6: "fd99:0:0:4::/127"
    hosts:
      office: {ospf_cost: 50}
      entry: {expose: true, interface: wg_office, ospf_cost: 50}
  wg_mt:
    subnet: 10.99.0.8/30
    subnet6: "fd99:0:0:8::/64"
    hosts:
      entry: {expose: 51830}
      mt: {}
"""


@pytest.fixture
def schema(write_schema: Callable[[str], Path]) -> Path:
    return write_schema(MESH)


def test_each_tunnel_end_gets_both_addresses(schema: Path, tmp_path: Path) -> None:
    out = tmp_path / "wg"
    assert main(["render", "wireguard", str(schema), "--out", str(out)]) == 0
    address = {
        path: one(parse((out / path).read_text()), 0, "Address")
        for path in ("entry/wg_uk.conf", "uk/wg_uk_x.conf", "office/wg_office.conf")
    }
    assert address == {
        "entry/wg_uk.conf": "10.99.0.1/30, fd99::1/64",
        "uk/wg_uk_x.conf": "10.99.0.2/30, fd99::2/64",
        "office/wg_office.conf": "10.99.0.5/30, fd99:0:0:4::/127",  # a /127: both
    }
    assert one(parse((out / "entry/wg_ru.conf").read_text()), 0, "Address") == "10.99.0.13/30"


def test_routeros_adds_both_addresses(schema: Path, tmp_path: Path) -> None:
    out = tmp_path / "ros"
    assert main(["render", "routeros", str(schema), "--node", "mt", "--out", str(out)]) == 0
    script = (out / "mt" / "deploy.rsc").read_text()
    assert '/ip address add address=10.99.0.10/30 interface="wg_mt" comment=' in script
    assert (
        '/ipv6 address add address=fd99:0:0:8::2/64 interface="wg_mt" advertise=no comment='
    ) in script


def test_ospfv3_runs_where_a_tunnel_carries_ipv6(schema: Path, tmp_path: Path) -> None:
    """Golden files: the entry (exports IPv6 learned routes from main, its IPv6 subnet by
    redistribute connected), an exit that refuses them, the office; ru has no IPv6 tunnel
    and keeps its OSPFv2-only files."""
    out = tmp_path / "frr"
    assert main(["render", "frr", str(schema), "--out", str(out)]) == 0
    for node in ("entry", "uk", "office"):
        text = (out / node / "frr.conf").read_text()
        assert text == (GOLDEN / f"dual-{node}.conf").read_text(), node
    assert (out / "uk" / "daemons").read_text() == (GOLDEN / "dual-daemons").read_text()
    ru = (out / "ru" / "frr.conf").read_text()
    assert "ospf6" not in ru and "ipv6" not in ru
    ipv4_only = (GOLDEN / "daemons").read_text().replace("# uk:", "# ru:")
    assert (out / "ru" / "daemons").read_text() == ipv4_only
    for path in sorted(out.glob("*/frr.conf")):
        valid, said = dry_run(path)
        assert valid, f"{path}: {said}"

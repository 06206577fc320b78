"""Two entries: the exits and the office have a tunnel to each, each entry runs iptserver
with the same policy (``--node``), OSPF carries each entry's learned routes.

Built from rendered files only (``TwoEntryLab``: real wireguard-go, FRR per node). What
is asserted is seen from outside: OSPF neighbours, the office's kernel routes, and the
address the far side saw. When entry's tunnels are gone, the office's route to a ruled
address moves to entry2 within OSPF's dead interval (measured; artifacts/two-entries.txt).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from iptserver.lab.entry import ENTRY_DNS, Iptserver, start_iptserver, stop_iptserver
from iptserver.lab.mesh import OFFICE_TUNNEL
from iptserver.lab.mesh2 import ENTRY2, ENTRY2_ROUTER_ID, ENTRY2_TUNNELS, TwoEntryLab
from iptserver.lab.zones import BENCH_ZONE, distinct_names
from iptserver.render.frr import DEAD
from tests.conftest import REPO

EXPORT_TABLE = 200
ROUTED_NAME, ROUTED_IP = "news.gov.uk", "203.0.113.60"  # gov.uk -> uk
ENTRY_DNS_OFFICE = str(next(OFFICE_TUNNEL.hosts()))  # entry's end of the office tunnel
ENTRY2_DNS_OFFICE = str(next(ENTRY2_TUNNELS["office"].hosts()))  # entry2's (resolved)
(ONE_IP, ONE_NAME), (TWO_IP, TWO_NAME), (CLIENT_IP, CLIENT_NAME) = distinct_names(
    BENCH_ZONE, 3, "two"
).items()  # bench.ru -> ru
FAILOVER_BOUND = 3 * DEAD  # seconds: asserted; the measured figure is in the artifact
ARTIFACT = REPO / "artifacts" / "two-entries.txt"


def schema_text(lab: TwoEntryLab) -> str:
    return (
        lab.entry_schema()
        + f"""\
kernel: {{export_table: {EXPORT_TABLE}}}
rules:
  - {{exit: uk, domains: [gov.uk]}}
  - {{exit: ru, domains: [{BENCH_ZONE}]}}
"""
        + lab.mesh_schema()
    )


@dataclass
class Mesh:
    lab: TwoEntryLab
    schema: Path
    entries: dict[str, Iptserver]


def office_route(lab: TwoEntryLab, address: str) -> str:
    return lab.run("office", ["ip", "route", "show", address]).stdout.strip()


def wait_office_route(lab: TwoEntryLab, address: str, via: str, timeout: float = 10.0) -> float:
    """Until the office routes ``address`` out of interface ``via``: when (monotonic)."""
    deadline = time.monotonic() + timeout
    while f"dev {via} " not in office_route(lab, address) + " ":
        assert time.monotonic() < deadline, f"office: {office_route(lab, address)!r}, not {via}"
        time.sleep(0.02)
    return time.monotonic()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, lab_mmdb: Path) -> Iterator[Mesh]:
    work = tmp_path_factory.mktemp("two-entries")
    with TwoEntryLab() as lab:
        schema = work / "mesh.yaml"
        schema.write_text(schema_text(lab), encoding="utf-8")
        lab.deploy(schema, work)
        lab.frr("office").wait_route("10.77.1.0/24")
        entries: dict[str, Iptserver] = {}
        try:
            entries["entry"] = start_iptserver(lab, schema, lab_mmdb, "--node", "entry")
            entries[ENTRY2] = start_iptserver(
                lab,
                schema,
                lab_mmdb,
                "--node",
                ENTRY2,
                node=ENTRY2,
                probe=("officehost", ENTRY2_DNS_OFFICE, 53),
            )
            yield Mesh(lab, schema, entries)
        finally:
            for running in entries.values():
                stop_iptserver(running)


def test_ospf_is_full_on_every_tunnel_of_both_entries(mesh: Mesh) -> None:
    lab = mesh.lab
    for entry, router_id in (("entry", "10.255.0.1"), (ENTRY2, ENTRY2_ROUTER_ID)):
        neighbours = lab.frr(entry).wait_full(4)
        assert {n.interface for n in neighbours} == set(lab.entry_tunnels(entry))
        for node in ("uk", "ru", "us", "office"):
            assert router_id in {n.router_id for n in lab.frr(node).wait_full(2)}, node


def test_a_route_learned_on_each_entry_reaches_the_office(mesh: Mesh) -> None:
    lab = mesh.lab
    for server, address, name, tunnel in (
        (ENTRY_DNS_OFFICE, ONE_IP, ONE_NAME, lab.office_interface("office")),
        (ENTRY2_DNS_OFFICE, TWO_IP, TWO_NAME, lab.entry2_interface("office", "office")),
    ):
        answer = lab.resolve("officehost", name, server=server)
        assert [v for _, kind, v, _ in answer if kind == "A"] == [address]
        # The answer was held back until the route was at the office: at once.
        assert f"dev {tunnel} proto ospf" in office_route(lab, address)
        assert lab.whoami("officehost", address) == "ru"
    # Each entry routes by its own policy: neither took the other's learned route.
    assert not lab.run("entry", ["ip", "route", "show", TWO_IP]).stdout.strip()
    assert not lab.run(ENTRY2, ["ip", "route", "show", ONE_IP]).stdout.strip()


def test_a_client_that_switches_to_entry2_resolves_and_routes_there_at_once(
    mesh: Mesh,
) -> None:
    lab = mesh.lab
    assert lab.whoami("client", CLIENT_IP) == "direct"  # nothing learned yet
    lab.switch_client(ENTRY2)
    try:
        answer = lab.resolve("client", CLIENT_NAME, server=ENTRY_DNS)
        assert [v for _, kind, v, _ in answer if kind == "A"] == [CLIENT_IP]
        assert lab.whoami("client", CLIENT_IP) == "ru"
        # entry2 learned it, entry did not: it was entry2 that answered.
        assert not lab.run("entry", ["ip", "route", "show", CLIENT_IP, "table", "all"]).stdout
        assert lab.whoami("client", ROUTED_IP) == ENTRY2  # unruled until asked: direct
    finally:
        lab.switch_client("entry")
    assert lab.whoami("client", CLIENT_IP) == "direct"  # entry never saw the answer


def test_when_entry_dies_the_office_routes_move_to_entry2_within_the_dead_interval(
    mesh: Mesh,
) -> None:
    lab = mesh.lab
    to_entry, to_entry2 = lab.office_interface("office"), lab.entry2_interface("office", "office")
    names = {to_entry: "entry", to_entry2: ENTRY2}
    # The office's host asks both entries (its resolver lists both): each learns it.
    for server in (ENTRY_DNS_OFFICE, ENTRY2_DNS_OFFICE):
        answer = lab.resolve("officehost", ROUTED_NAME, server=server)
        assert [v for _, kind, v, _ in answer if kind == "A"] == [ROUTED_IP]
    wait_office_route(lab, ROUTED_IP, to_entry)  # the cheaper way
    assert lab.whoami("officehost", ROUTED_IP) == "uk"
    before = _office_routes(lab, names)

    # entry dies: its uplink goes, and with it every tunnel of entry at the same instant.
    # The far ends know only when OSPF's dead interval has passed without a hello.
    began = time.monotonic()
    lab.ip_batch("internet", ["link set up-entry down"])
    dead = wait_office_route(lab, ROUTED_IP, to_entry2, timeout=FAILOVER_BOUND) - began
    assert lab.whoami("officehost", ROUTED_IP) == "uk"  # through entry2 now
    during = _office_routes(lab, names)

    # Back: the office returns to entry as soon as the adjacency is Full again.
    began = time.monotonic()
    lab.ip_batch("internet", ["link set up-entry up"])
    back = wait_office_route(lab, ROUTED_IP, to_entry, timeout=30) - began

    # entry's tunnels deleted one after another (its WireGuard stopping), the office's
    # first: entry's new router LSA still reaches the office through an exit's tunnel and
    # entry2, faster than the dead interval.
    gone = sorted(lab.entry_tunnels("entry"), key=lambda i: i != lab.office_interface("entry"))
    began = time.monotonic()
    lab.ip_batch("entry", [f"link del {interface}" for interface in gone])
    deleted = wait_office_route(lab, ROUTED_IP, to_entry2, timeout=FAILOVER_BOUND) - began
    assert lab.whoami("officehost", ROUTED_IP) == "uk"

    lines = [
        "# Two entries (TwoEntryLab): the office's route to a ruled address that both",
        "# entries learned, from the event to the route via the other entry",
        f"# (OSPF hello 1 s, dead {DEAD} s)",
        f"entry_uplink_cut_to_entry2_s {dead:.2f}",
        f"entry_uplink_back_to_entry_s {back:.2f}",
        f"entry_tunnels_deleted_to_entry2_s {deleted:.2f}",
        f"office_ospf_routes_by_entry_before {before}",
        f"office_ospf_routes_by_entry_entry_cut {during}",
    ]
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    assert dead <= FAILOVER_BOUND and deleted <= FAILOVER_BOUND


def _office_routes(lab: TwoEntryLab, names: dict[str, str]) -> dict[str, dict[str, int]]:
    """Per entry (by the office's tunnel to it): OSPF routes at the office, and of those
    the learned host routes (tagged with the export table)."""
    counts = {name: {"routes": 0, "learned": 0} for name in names.values()}
    for prefix, hops in lab.frr("office").rib().items():
        for hop in hops:
            if hop.get("protocol") != "ospf" or not hop.get("selected"):
                continue
            for nexthop in hop.get("nexthops", []):
                entry = names.get(nexthop.get("interfaceName", ""))
                if entry is None:
                    continue
                counts[entry]["routes"] += 1
                if ipaddress.ip_network(prefix).prefixlen == 32 and hop.get("tag") == EXPORT_TABLE:
                    counts[entry]["learned"] += 1
    return counts

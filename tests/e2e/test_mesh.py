"""The mesh: the office behind its own tunnel, OSPF over every tunnel, DNS-learned routes.

The mesh lab's tunnels and routing come only from ``iptserver render wireguard`` and
``iptserver render frr`` output (real wireguard-go, real FRR zebra + ospfd per node).
Tests prove reachability by what the far side saw.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from iptserver.lab import LabError
from iptserver.lab.entry import ENTRY_DNS, start_iptserver, stop_iptserver
from iptserver.lab.mesh import (
    LAN_WHOAMI_PORT,
    OFFICE_LAN,
    ROUTER_IDS,
    MeshLab,
    RouteWatch,
    render_files,
)
from iptserver.lab.zones import BENCH_ZONE, distinct_names, synthetic
from tests.conftest import REPO

EXPORT_TABLE = 200
ROUTED_NAME = "news.gov.uk"  # 203.0.113.60: a domain rule sends it to uk
ROUTED_IP = "203.0.113.60"
BESIDE_IP = "203.0.113.61"  # no rule, never resolved: the office goes direct
CLIENT_IP = "10.77.1.2"
OFFICEHOST_IP = OFFICE_LAN[1]
SHORT_HOLD = 2  # seconds: www.example.com's rule
SHORT_NAME, SHORT_IP = "www.example.com", "198.51.100.150"
CONVERGENCE_RUNS = 5
ARTIFACT = REPO / "artifacts" / "convergence.txt"


def schema_text(lab: MeshLab) -> str:
    return (
        lab.entry_schema()
        + f"""\
kernel: {{export_table: {EXPORT_TABLE}}}
rules:
  - {{exit: uk, domains: [gov.uk]}}
  - {{exit: ru, domains: [bench.ru]}}
  - {{exit: us, domains: [www.example.com], hold: {SHORT_HOLD}}}
"""
        + lab.mesh_schema()
    )


@dataclass
class Mesh:
    lab: MeshLab
    schema: Path
    rendered: Path


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """The mesh lab, its tunnels and FRR configured from rendered files only."""
    work = tmp_path_factory.mktemp("mesh")
    with MeshLab() as lab:
        schema = work / "mesh.yaml"
        schema.write_text(schema_text(lab), encoding="utf-8")
        lab.deploy(schema, work)
        # Ready when OSPF has taught each side the way to the other's LAN.
        lab.frr("office").wait_route("10.77.1.0/24")
        for exit_name in ("uk", "ru", "us"):
            lab.frr(exit_name).wait_route("10.88.0.0/24")
        yield Mesh(lab, schema, work)


def test_ospf_adjacencies_reach_full_on_every_tunnel(mesh: Mesh) -> None:
    lab = mesh.lab
    entry = lab.frr("entry").wait_full(4)
    assert {(n.interface, n.router_id) for n in entry} == {
        (lab.wg_interface("uk"), "10.255.0.11"),
        (lab.wg_interface("ru"), "10.255.0.12"),
        (lab.wg_interface("us"), "10.255.0.13"),
        (lab.office_interface("entry"), "10.255.0.20"),
    }
    for node, iface in [
        *((e, lab.wg_interface(e, "exit")) for e in ("uk", "ru", "us")),
        ("office", lab.office_interface("office")),
    ]:
        (neighbor,) = lab.frr(node).wait_full(1)
        assert (neighbor.interface, neighbor.router_id) == (iface, "10.255.0.1")


def test_the_office_and_the_exits_learn_the_mesh_subnets_over_ospf(mesh: Mesh) -> None:
    lab = mesh.lab
    lab.frr("office").wait_full(1)
    office = lab.frr("office").routes("ospf")
    assert office[ipaddress.IPv4Network("10.77.1.0/24")] == [lab.office_interface("office")]
    for exit_name in ("uk", "ru", "us"):
        lab.frr(exit_name).wait_full(1)
        learned = lab.frr(exit_name).routes("ospf")
        assert learned[ipaddress.IPv4Network("10.88.0.0/24")] == [
            lab.wg_interface(exit_name, "exit")
        ]


def test_office_lan_and_client_network_reach_each_other_without_nat(mesh: Mesh) -> None:
    lab = mesh.lab
    lab.frr("office").wait_full(1)
    assert lab.seen("client", OFFICEHOST_IP, LAN_WHOAMI_PORT)["seen"] == CLIENT_IP
    assert lab.seen("officehost", CLIENT_IP, LAN_WHOAMI_PORT)["seen"] == OFFICEHOST_IP


def test_rendered_files_pass_vtysh_dryrun(mesh: Mesh) -> None:
    from iptserver.lab.frr import dry_run

    for path in sorted((mesh.rendered / "frr").glob("*/frr.conf")):
        valid, said = dry_run(path)
        assert valid, f"{path}: {said}"


def test_a_route_learned_from_dns_reaches_the_office_and_its_first_connection_takes_the_exit(
    mesh: Mesh, lab_mmdb: Path
) -> None:
    lab = mesh.lab
    lab.frr("office").wait_full(1)
    # Before any answer the office goes out of its own uplink.
    assert lab.whoami("officehost", BESIDE_IP) == "office"
    assert not lab.run("office", ["ip", "route", "show", ROUTED_IP]).stdout.strip()
    running = start_iptserver(lab, mesh.schema, lab_mmdb)
    try:
        answer = lab.resolve("officehost", ROUTED_NAME, server=ENTRY_DNS)
        assert [value for _, kind, value, _ in answer if kind == "A"] == [ROUTED_IP]
        # At once, as a browser would: the answer was held back until OSPF had carried
        # the route to the office (kernel.export_delay_ms).
        assert lab.whoami("officehost", ROUTED_IP) == "uk"
        route = lab.run("office", ["ip", "route", "show", ROUTED_IP]).stdout
        assert f"dev {lab.office_interface('office')} proto ospf" in route, route
        # The exit the route points at does not take it back.
        assert not lab.run("uk", ["ip", "route", "show", ROUTED_IP]).stdout.strip()
        assert lab.whoami("officehost", BESIDE_IP) == "office"
    finally:
        code = stop_iptserver(running)
    assert code == 0, running.log
    # A stopped iptserver takes its exported routes with it, and OSPF withdraws them.
    deadline = time.monotonic() + 10
    while lab.run("office", ["ip", "route", "show", ROUTED_IP]).stdout.strip():
        assert time.monotonic() < deadline, "the office kept the route after iptserver stopped"
        time.sleep(0.05)


def test_a_learned_route_leaves_the_office_when_its_hold_is_over(
    mesh: Mesh, lab_mmdb: Path
) -> None:
    lab = mesh.lab
    lab.frr("office").wait_full(1)
    running = start_iptserver(lab, mesh.schema, lab_mmdb)
    try:
        watch = RouteWatch(lab, "office", SHORT_IP)
        try:
            answer = lab.resolve("officehost", SHORT_NAME, server=ENTRY_DNS)
            assert [(v, ttl) for _, kind, v, ttl in answer if kind == "A"] == [
                (SHORT_IP, SHORT_HOLD)
            ]
            assert watch.wait(10) is not None
        finally:
            watch.close()
        assert lab.whoami("officehost", SHORT_IP) == "us"
        # No repeat answer: the entry deletes its route when the hold is over, and OSPF
        # withdraws it from the office while iptserver keeps running.
        deadline = time.monotonic() + 30
        while lab.run("office", ["ip", "route", "show", SHORT_IP]).stdout.strip():
            assert time.monotonic() < deadline, "the office kept a route whose hold was over"
            time.sleep(0.1)
        assert running.alive
        assert lab.whoami("officehost", SHORT_IP) == "office"
    finally:
        code = stop_iptserver(running)
    assert code == 0, running.log


def test_convergence_from_dns_answer_to_route_at_the_office(
    mesh: Mesh, lab_mmdb: Path, tmp_path: Path
) -> None:
    """Measured, not asserted against a threshold: written to artifacts/convergence.txt.
    Answers are not held back here (export_delay_ms: 0): this is OSPF's own time."""
    lab = mesh.lab
    lab.frr("office").wait_full(1)
    schema = tmp_path / "no-delay.yaml"
    text = mesh.schema.read_text().replace(
        f"export_table: {EXPORT_TABLE}", f"export_table: {EXPORT_TABLE}, export_delay_ms: 0"
    )
    assert text != mesh.schema.read_text()
    schema.write_text(text)
    running = start_iptserver(lab, schema, lab_mmdb)
    rows = []
    try:
        for address, name in distinct_names(BENCH_ZONE, CONVERGENCE_RUNS, "conv").items():
            watch = RouteWatch(lab, "office", address)
            try:
                sent = time.monotonic()
                answer = lab.resolve("officehost", name, server=ENTRY_DNS)
                answered = time.monotonic()
                assert [v for _, kind, v, _ in answer if kind == "A"] == [address]
                seen = watch.wait(10)
            finally:
                watch.close()
            assert seen is not None, f"{address} ({name}) never reached the office"
            rows.append((name, address, answered - sent, seen - answered, seen - sent))
    finally:
        code = stop_iptserver(running)
    assert code == 0, running.log
    lines = [
        "# DNS answer -> learned route at the office (OSPF from the entry), mesh lab,",
        "# answers not held back (kernel.export_delay_ms: 0)",
        "# name address query_ms answer_to_route_ms query_to_route_ms",
        *(
            f"{name} {address} {q * 1000:.1f} {a * 1000:.1f} {t * 1000:.1f}"
            for name, address, q, a, t in rows
        ),
    ]
    worst = max(row[3] for row in rows)
    lines.append(f"# worst answer_to_route_ms {worst * 1000:.1f} over {len(rows)} runs")
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


# Two names of the synthetic zone that answer one address (a CDN's, as it were).
SHARED_RU, SHARED_DIRECT = "n2.bench.ru", "n11.bench.ru"


def test_a_higher_weight_direct_rule_on_an_exported_address_goes_direct(
    mesh: Mesh, lab_mmdb: Path, tmp_path: Path
) -> None:
    """The first name is ruled to ru, so its address is exported and FRR imports the
    host route into the entry's main table; the second is ruled direct with a higher
    weight. A connection after the second answer must leave direct, as explain says:
    the host gateway exit routes by copies of main's default routes, not by main."""
    lab = mesh.lab
    (address,) = {record.value for name in (SHARED_RU, SHARED_DIRECT) for record in synthetic(name)}
    schema = tmp_path / "direct.yaml"
    text = mesh.schema.read_text().replace(
        "rules:\n", f'rules:\n  - {{exit: direct, domains: ["={SHARED_DIRECT}"], weight: 10}}\n'
    )
    schema.write_text(text)
    running = start_iptserver(lab, schema, lab_mmdb)
    try:
        assert [
            v for _, k, v, _ in lab.resolve("client", SHARED_RU, server=ENTRY_DNS) if k == "A"
        ] == [address]
        deadline = time.monotonic() + 10
        while "proto zebra" not in lab.run("entry", ["ip", "route", "show", address]).stdout:
            assert time.monotonic() < deadline, "zebra never put the exported route in main"
            time.sleep(0.05)
        assert lab.whoami("client", address) == "ru"
        lab.resolve("client", SHARED_DIRECT, server=ENTRY_DNS)
        assert lab.whoami("client", address) == "direct"
    finally:
        code = stop_iptserver(running)
    assert code == 0, running.log


def test_an_exit_failed_over_to_direct_leaves_direct_though_its_route_was_exported(
    mesh: Mesh, lab_mmdb: Path, tmp_path: Path
) -> None:
    """uk watched, ``on_down: [direct]``: once uk dies, its traffic to an address exported
    via uk's tunnel (a host route zebra keeps in main) leaves by the entry's own uplink
    within the failover bound, not into the dead tunnel. Last in the module: it kills uk
    and brings it back."""
    lab = mesh.lab
    uk = f"  uk: {{interface: {lab.wg_interface('uk')}}}"
    text = mesh.schema.read_text()
    assert uk in text
    watched = (
        f"  uk: {{interface: {lab.wg_interface('uk')}, on_down: [direct],"
        " health: {probe: ['198.51.100.50:80']}}"
    )
    schema = tmp_path / "failover.yaml"
    schema.write_text(text.replace(uk, watched))
    running = start_iptserver(lab, schema, lab_mmdb)
    try:
        [address] = [
            v for _, k, v, _ in lab.resolve("client", ROUTED_NAME, server=ENTRY_DNS) if k == "A"
        ]
        started = time.monotonic()
        while (way := _way(lab, address)) != "uk":  # once health has seen uk up
            if time.monotonic() - started > 10:
                rules = lab.run("entry", ["ip", "rule"]).stdout
                tables = lab.run("entry", ["ip", "route", "show", "table", "all"]).stdout
                raise AssertionError(f"{way}\n{rules}\n{tables}\n{running.log}")
            time.sleep(0.2)
        lab.faults.kill_exit("uk")
        try:
            killed = time.monotonic()
            while (way := _way(lab, address)) != "direct":
                assert time.monotonic() - killed < 10, f"still {way} 10 s after uk died"
                time.sleep(0.2)
        finally:
            lab.faults.revive_exit("uk")
    finally:
        code = stop_iptserver(running)
    assert code == 0, running.log
    lab.frr("uk").wait_route("10.88.0.0/24")  # OSPF over uk again, for what comes after


def _way(lab: MeshLab, address: str, node: str = "client") -> str:
    try:
        return lab.whoami(node, address, timeout=0.5)
    except LabError as e:
        return f"nowhere ({e})"


LEAK_COMMENT = "ipts-mesh-leak"
LEAK_RULE = ["FORWARD", "-o", "uplink", "-d", ROUTED_IP, "-m", "comment", "--comment", LEAK_COMMENT]


def _leaked_to(lab: MeshLab, node: str, address: str) -> int:
    """Packets to ``address`` that left ``node`` by its own uplink (a LEAK_COMMENT rule)."""
    listing = lab.run(node, ["iptables", "-w", "-L", "FORWARD", "-v", "-x", "-n"]).stdout
    return sum(
        int(line.split()[0])
        for line in listing.splitlines()
        if LEAK_COMMENT in line and address in line
    )


def test_the_office_leaves_by_no_uplink_while_the_exits_tunnel_is_gone(
    mesh: Mesh, lab_mmdb: Path
) -> None:
    """The entry's end of uk's tunnel is gone (its container stopped): a name ruled to uk,
    answered before or now, is still announced to the office (as a blackhole at the
    entry), so the office host's connections go to the entry and die at uk's
    kill-switch: not one packet out of the office's or the entry's uplink. Once the
    tunnel is back, the same address takes uk."""
    lab = mesh.lab
    iface = lab.wg_interface("uk")
    config = (mesh.rendered / "wireguard" / "entry" / f"{iface}.conf").read_text()
    running = start_iptserver(lab, mesh.schema, lab_mmdb)
    nodes = ("office", "entry")
    try:
        for node in nodes:
            lab.run(node, ["iptables", "-w", "-I", *LEAK_RULE])
        lab.resolve("officehost", ROUTED_NAME, server=ENTRY_DNS)  # learned before it goes
        started = time.monotonic()
        while (way := _way(lab, ROUTED_IP, "officehost")) != "uk":  # uk revived before
            assert time.monotonic() - started < 10, f"{way}, not uk, before the tunnel goes"
            time.sleep(0.2)
        lab.drop_tunnel_end(iface)
        try:
            time.sleep(1)  # the entry hears the link go, and blackholes its routes
            way = _way(lab, ROUTED_IP, "officehost")  # learned before: no new answer
            assert way.startswith("nowhere"), f"{way}: not dropped at the entry"
            answer = lab.resolve("officehost", ROUTED_NAME, server=ENTRY_DNS)
            assert [v for _, kind, v, _ in answer if kind == "A"] == [ROUTED_IP]
            way = _way(lab, ROUTED_IP, "officehost")
            assert way.startswith("nowhere"), f"{way}: not dropped at the entry"
            leaked = {node: _leaked_to(lab, node, ROUTED_IP) for node in nodes}
            assert leaked == dict.fromkeys(nodes, 0)
            route = lab.run("office", ["ip", "route", "show", ROUTED_IP]).stdout
            assert "proto ospf" in route, route
        finally:
            lab.make_tunnel_end(iface, config)
        started = time.monotonic()
        while (way := _way(lab, ROUTED_IP, "officehost")) != "uk":
            assert time.monotonic() - started < 15, f"{way}, not uk, once the tunnel is back"
            time.sleep(0.2)
    finally:
        code = stop_iptserver(running)
        for node in nodes:
            lab.run(node, ["iptables", "-w", "-D", *LEAK_RULE])
    assert code == 0, running.log


GB_IP = "198.51.100.10"  # in GB by the lab's GeoIP: a country rule, no DNS asked


def test_an_office_that_sends_all_follows_the_whole_schema(
    mesh: Mesh, lab_mmdb: Path, tmp_path: Path
) -> None:
    """``send: all`` on the office: its LAN's traffic all goes to the entry, which
    applies the whole schema — a country rule and the default — where with ``learned``
    only the exported destinations do (the rest leaves by the office's own uplink). The
    office router's own traffic keeps its uplink; back to ``learned``, as before."""
    lab = mesh.lab
    interface = lab.office_interface("office")
    text = mesh.schema.read_text().replace(
        "rules:\n", "default: us\nrules:\n  - {exit: uk, countries: [GB]}\n"
    )
    learned = tmp_path / "learned.yaml"
    learned.write_text(text)
    office = f"router_id: {ROUTER_IDS['office']}"
    everything = tmp_path / "all.yaml"
    everything.write_text(text.replace(office, f"{office}, send: all"))
    assert everything.read_text() != text
    state = str(mesh.rendered / "state")
    configs = {
        name: render_files(path, "wireguard", tmp_path / name, "--state-dir", state)[
            ("office", f"{interface}.conf")
        ]
        for name, path in (("learned", learned), ("all", everything))
    }
    assert "suppress_prefixlength 0" in configs["all"]
    assert "suppress_prefixlength" not in configs["learned"]
    running = start_iptserver(lab, everything, lab_mmdb)
    try:
        assert _way(lab, GB_IP, "officehost") == "office"  # learned: only exported routes
        assert _way(lab, BESIDE_IP, "officehost") == "office"  # nor the default
        lab.apply_wireguard("office", interface, configs["all"])
        assert _way(lab, GB_IP, "officehost") == "uk"  # the country rule
        assert _way(lab, BESIDE_IP, "officehost") == "us"  # the schema's default
        assert _way(lab, BESIDE_IP, "office") == "office"  # the router itself: its uplink
        lab.apply_wireguard("office", interface, configs["learned"])
        assert _way(lab, GB_IP, "officehost") == "office"
    finally:
        lab.apply_wireguard("office", interface, configs["learned"])
        code = stop_iptserver(running)
    assert code == 0, running.log


GB_NET = "198.51.100.0/26"  # GB_IP's network in the lab's GeoIP


def _restart_frr(lab: MeshLab, configs: dict[tuple[str, str], str]) -> None:
    """Every node's FRR again, from ``configs`` (rendered), and OSPF back to Full."""
    for (node, name), text in configs.items():
        if name == "frr.conf":
            lab.stop_frr(node)
            lab.start_frr(node, text)
    lab.frr("office").wait_route("10.77.1.0/24")
    for exit_name in ("uk", "ru", "us"):
        lab.frr(exit_name).wait_route("10.88.0.0/24")


def test_an_office_that_sends_policy_takes_the_country_rule_but_not_the_default(
    mesh: Mesh, lab_mmdb: Path, tmp_path: Path
) -> None:
    """``send: policy`` on the office: the entry announces the networks of its country
    rule for uk (aggregated, out of uk's tunnel), so the office host reaches a GB address
    through uk without asking DNS; the schema's default is not announced (that address
    leaves by the office's uplink). uk refuses those routes (they point back into its
    tunnel). With uk's tunnel gone, the routes stay announced as blackholes: not one
    packet to the GB address leaves by an uplink; the tunnel back, uk again."""
    lab = mesh.lab
    text = mesh.schema.read_text().replace(
        "rules:\n", "default: us\nrules:\n  - {exit: uk, countries: [GB]}\n"
    )
    office = f"router_id: {ROUTER_IDS['office']}"
    schema = tmp_path / "policy.yaml"
    schema.write_text(text.replace(office, f"{office}, send: policy"))
    assert "send: policy" in schema.read_text()
    _restart_frr(lab, render_files(schema, "frr", tmp_path / "frr"))
    iface = lab.wg_interface("uk")
    config = (mesh.rendered / "wireguard" / "entry" / f"{iface}.conf").read_text()
    running = start_iptserver(lab, schema, lab_mmdb)
    leak = ["FORWARD", "-o", "uplink", "-d", GB_IP, "-m", "comment", "--comment", LEAK_COMMENT]
    nodes = ("office", "entry")
    try:
        lab.frr("office").wait_route(GB_NET)
        assert _way(lab, GB_IP, "officehost") == "uk"  # the country rule, no DNS asked
        assert _way(lab, BESIDE_IP, "officehost") == "office"  # the default: not announced
        assert "proto ospf" not in lab.run("uk", ["ip", "route", "show", GB_NET]).stdout
        for node in nodes:
            lab.run(node, ["iptables", "-w", "-I", *leak])
        lab.drop_tunnel_end(iface)
        try:
            time.sleep(1)  # the entry hears the link go (it blackholes at once)
            way = _way(lab, GB_IP, "officehost")
            debug = (
                lab.run("entry", ["ip", "route", "show", "table", "201"]).stdout
                + lab.run("office", ["ip", "route"]).stdout
                + running.log[-3000:]
            )
            assert way.startswith("nowhere"), f"{way}: not dropped at the entry\n{debug}"
            assert {node: _leaked_to(lab, node, GB_IP) for node in nodes} == dict.fromkeys(nodes, 0)
            assert "proto ospf" in lab.run("office", ["ip", "route", "show", GB_NET]).stdout
        finally:
            lab.make_tunnel_end(iface, config)
        started = time.monotonic()
        while (way := _way(lab, GB_IP, "officehost")) != "uk":
            assert time.monotonic() - started < 15, f"{way}, not uk, once the tunnel is back"
            time.sleep(0.2)
    finally:
        code = stop_iptserver(running)
        for node in nodes:
            lab.run(node, ["iptables", "-w", "-D", *leak], check=False)
        _restart_frr(lab, render_files(mesh.schema, "frr", tmp_path / "frr-learned"))
    assert code == 0, running.log
    said = [line for line in running.output.splitlines() if "policy table" in line]
    assert any("policy table 201: 1 routes for send: policy nodes" in line for line in said), said

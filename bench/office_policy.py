"""What ``send: policy`` costs: the routes a RU/GB/US schema puts into OSPF, how long
until the office holds them all, and FRR's CPU and memory for them.

    python bench/office_policy.py [--countries RU,GB,US] [--mmdb PATH]

The mesh lab (``iptserver.lab.mesh``), every tunnel and FRR configured from
``iptserver render`` output, the office with ``send: policy``, and ``iptserver run`` on
the entry with one country rule per exit (ru: RU, uk: GB, us: US) and the real GeoIP
database (``$IPTSERVER_GEOIP``, as ``make geoip`` installs it). Printed: the prefixes
each country brings and how many routes they aggregate to; the time from the daemon's
start until its policy table is written and until the office's kernel holds every
IPv4 route; the AS-external LSAs at the office; FRR's CPU (zebra + ospfd) and resident
memory on the entry and the office; what a reload that changes nothing withdraws.
Measured, not judged: the exit status is 1 only if the routes never all arrived.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import tempfile
import time
from pathlib import Path

from convergence import external_lsas, frr_cpu

from iptserver.geoip.reader import GeoIPDatabase
from iptserver.lab import entry
from iptserver.lab.entry import Iptserver
from iptserver.lab.mesh import ROUTER_IDS, MeshLab

EXPORT_TABLE = 200
POLICY_TABLE = EXPORT_TABLE + 1
EXITS = {"RU": "ru", "GB": "uk", "US": "us"}
ARRIVAL_TIMEOUT = 600.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--countries", default="RU,GB,US", help="of RU, GB, US")
    parser.add_argument(
        "--mmdb", default=os.environ.get("IPTSERVER_GEOIP", "/var/lib/iptserver/country.mmdb")
    )
    args = parser.parse_args()
    countries = [c.strip().upper() for c in args.countries.split(",") if c.strip()]
    mmdb = Path(args.mmdb)
    # Reading three countries' networks from the database and planning their sets takes
    # the daemon half a minute before it serves (the lab waits 30 s for that by default).
    entry.START_TIMEOUT = 300.0
    wanted = count_prefixes(mmdb, countries)
    with tempfile.TemporaryDirectory(prefix="iptspol") as tmp, MeshLab() as lab:
        schema = deploy(lab, Path(tmp), countries)
        before = frr_cpu(lab)
        baseline = office_route_count(lab)  # the mesh's own routes
        started = time.monotonic()
        running = entry.start_iptserver(lab, schema, mmdb)
        try:
            written = wait_logged(running, f"policy table {POLICY_TABLE}:", started)
            arrived = wait_routes(lab, baseline + wanted, started)
            cpu = {node: after - before[node] for node, after in frr_cpu(lab).items()}
            lsas = external_lsas(lab, "office")
            memory = {node: frr_rss(lab, node) for node in ("entry", "office")}
            withdrawn = reload_withdraws(lab, running)
        finally:
            entry.stop_iptserver(running)
    print(f"send: policy, countries {', '.join(countries)} (GeoIP: {mmdb})")
    if written is None:
        print("  policy table written    never logged")
    else:
        print(f"  policy table written    {written:7.2f} s after the daemon's start")
    if arrived is None:
        print(f"  routes at the office    not all after {ARRIVAL_TIMEOUT:.0f} s")
    else:
        print(f"  routes at the office    {arrived:7.2f} s after the start (all {wanted:,})")
    print(f"  AS-external LSAs        {lsas:7,} at the office")
    for node in ("entry", "office"):
        print(
            f"  FRR on {node:6}          {cpu[node]:7.2f} s CPU, {memory[node]:6.1f} MB resident"
            " (zebra + ospfd)"
        )
    print(f"  a reload changing nothing withdraws {withdrawn} routes")
    return 0 if arrived is not None else 1


def count_prefixes(mmdb: Path, countries: list[str]) -> int:
    """Print each country's IPv4 prefixes and what they aggregate to; the total."""
    database = GeoIPDatabase(mmdb)
    try:
        by_country = database.networks_of(set(countries))
    finally:
        database.close()
    total = 0
    for country in countries:
        v4 = [n for n in by_country.get(country, []) if isinstance(n, ipaddress.IPv4Network)]
        routes = len(list(ipaddress.collapse_addresses(v4)))
        six = sum(1 for n in by_country.get(country, []) if n.version == 6)
        print(
            f"  {country}: {len(v4):7,} IPv4 prefixes -> {routes:7,} routes via "
            f"{EXITS[country]} ({six:,} IPv6 prefixes: not announced, see README)"
        )
        total += routes
    return total


def deploy(lab: MeshLab, work: Path, countries: list[str]) -> Path:
    """Tunnels and FRR from rendered files, as an operator would; the schema's path."""
    rules = "".join(f"  - {{exit: {EXITS[c]}, countries: [{c}]}}\n" for c in countries)
    office = f"router_id: {ROUTER_IDS['office']}"
    schema = work / "mesh.yaml"
    schema.write_text(
        lab.entry_schema()
        + f"kernel: {{export_table: {EXPORT_TABLE}}}\nrules:\n{rules}"
        + lab.mesh_schema().replace(office, f"{office}, send: policy")
    )
    lab.deploy(schema, work)
    lab.frr("office").wait_route("10.77.1.0/24")
    return schema


def wait_logged(running: Iptserver, text: str, started: float) -> float | None:
    deadline = time.monotonic() + ARRIVAL_TIMEOUT
    while time.monotonic() < deadline:
        if text in running.output:
            return time.monotonic() - started
        time.sleep(0.1)
    return None


def office_route_count(lab: MeshLab) -> int:
    out = lab.run("office", ["ip", "-4", "route", "show", "proto", "ospf"]).stdout
    return out.count("\n")


def wait_routes(lab: MeshLab, wanted: int, started: float) -> float | None:
    """Until the office holds ``wanted`` OSPF routes."""
    deadline = time.monotonic() + ARRIVAL_TIMEOUT
    while time.monotonic() < deadline:
        if office_route_count(lab) >= wanted:
            return time.monotonic() - started
        time.sleep(0.5)
    return None


def frr_rss(lab: MeshLab, node: str) -> float:
    """Resident megabytes of FRR's daemons on ``node``."""
    total = 0
    for pid in lab.frr(node).pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def reload_withdraws(lab: MeshLab, running: Iptserver) -> int:
    """Routes the office loses over a SIGHUP that changes nothing (it should be 0)."""
    before = office_route_count(lab)
    assert running.reload(timeout=180)
    lowest = before
    for _ in range(20):
        lowest = min(lowest, office_route_count(lab))
        time.sleep(0.25)
    return before - lowest


if __name__ == "__main__":
    sys.exit(main())

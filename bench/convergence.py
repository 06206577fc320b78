"""Convergence under churn: 1,000 distinct ruled names answered at once, and how soon
every learned route is at the office (OSPF from the entry), what it costs FRR, and
whether the routes leave the office when their hold is over.

    python bench/convergence.py [--names 1000] [--hold 15] [--parallel 32]

The mesh lab (``iptserver.lab.mesh``: entry, three exits, an office behind its own
tunnel), every tunnel and FRR configured from ``iptserver render`` output only, and
``iptserver run`` on the entry with ``kernel.export_table``. The office's LAN host asks
the entry for ``--names`` names of the lab's synthetic zone (each its own address, all
ruled to the ru exit with a ``--hold`` of seconds), ``--parallel`` at a time. Printed:
the time to answer them all, the time until the office's kernel holds a route to every
answered address, the AS-external LSAs at the entry and the office, the CPU that zebra
and ospfd spent on both nodes, and the routes left at the office two holds later.
Measured, not judged: the exit status is 1 only if a route never arrived.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from iptserver.geoip.build import write_country_db
from iptserver.lab.addresses import LAB_COUNTRIES
from iptserver.lab.entry import ENTRY_DNS, start_iptserver, stop_iptserver
from iptserver.lab.mesh import MeshLab
from iptserver.lab.zones import CHURN_ZONE, distinct_names

EXPORT_TABLE = 200
TICKS = 100  # clock ticks a second (/proc/PID/stat)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", type=int, default=1000)
    parser.add_argument("--hold", type=int, default=15, help="seconds the routes are held")
    parser.add_argument("--parallel", type=int, default=32, help="queries in flight")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="iptsconv") as tmp, MeshLab() as lab:
        work = Path(tmp)
        schema = deploy(lab, work, args.hold)
        mmdb = work / "lab-country.mmdb"
        write_country_db(mmdb, LAB_COUNTRIES, "iptserver lab")
        running = start_iptserver(lab, schema, mmdb)
        try:
            return measure(lab, distinct_names(CHURN_ZONE, args.names), args.hold, args.parallel)
        finally:
            stop_iptserver(running)


def deploy(lab: MeshLab, work: Path, hold: int) -> Path:
    """Tunnels and FRR from rendered files, as an operator would; the schema's path."""
    schema = work / "mesh.yaml"
    schema.write_text(
        lab.entry_schema()
        + f"""\
  rate_limit: {{client: 0, network: 0}}
kernel: {{export_table: {EXPORT_TABLE}}}
rules:
  - {{exit: ru, domains: [bench.ru], hold: {hold}}}
"""
        + lab.mesh_schema()
    )
    lab.deploy(schema, work)
    lab.frr("office").wait_route("10.77.1.0/24")
    return schema


def measure(lab: MeshLab, wanted: dict[str, str], hold: int, parallel: int) -> int:
    before = frr_cpu(lab)
    started = time.monotonic()

    def ask(name: str) -> list[str]:
        answer = lab.resolve("officehost", name, server=ENTRY_DNS, timeout=5.0)
        return [value for _, kind, value, _ in answer if kind == "A"]

    with ThreadPoolExecutor(parallel) as pool:
        answered = {a for found in pool.map(ask, wanted.values()) for a in found}
    all_answered = time.monotonic() - started
    missing = set(wanted) - answered
    arrived = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        missing = set(wanted) - office_routes(lab)
        if not missing:
            arrived = time.monotonic() - started
            break
        time.sleep(0.05)
    cpu = {node: after - before[node] for node, after in frr_cpu(lab).items()}
    print(
        f"convergence: {len(wanted):,} ruled names asked by the office's host, {parallel} at a time"
    )
    print(f"  all answered          {all_answered:6.2f} s after the first query")
    if arrived is None:
        print(
            f"  routes at the office  {len(wanted) - len(missing):,} of {len(wanted):,} after 60 s"
        )
    else:
        print(
            f"  routes at the office  {arrived:6.2f} s after the first query (all {len(wanted):,})"
        )
    for node in ("entry", "office"):
        print(f"  AS-external LSAs at {node:6} {external_lsas(lab, node):6,}")
    for node, seconds in cpu.items():
        print(f"  FRR CPU on {node:6}       {seconds:6.2f} s (zebra + ospfd, over the run)")
    time.sleep(max(0.0, started + 2 * hold + 2 - time.monotonic()))
    left = set(wanted) & office_routes(lab)
    print(f"  two holds later ({2 * hold} s): {len(left):,} of those routes left at the office")
    return 0 if arrived is not None else 1


def office_routes(lab: MeshLab) -> set[str]:
    """The host routes the office's kernel has from OSPF."""
    out = lab.run("office", ["ip", "-4", "route", "show", "proto", "ospf"]).stdout
    return {line.split()[0] for line in out.splitlines() if line and "/" not in line.split()[0]}


def external_lsas(lab: MeshLab, node: str) -> int:
    database = lab.frr(node).show("show ip ospf database external json")
    count = 0

    def walk(value: object) -> None:
        nonlocal count
        if isinstance(value, dict):
            if "linkStateId" in value and "advertisingRouter" in value:
                count += 1
                return
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(database)
    return count


def frr_cpu(lab: MeshLab) -> dict[str, float]:
    """CPU seconds (user + system) FRR's daemons have used on the entry and the office."""
    found = {}
    for node in ("entry", "office"):
        ticks = 0
        for pid in lab.frr(node).pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12])
        found[node] = ticks / TICKS
    return found


if __name__ == "__main__":
    sys.exit(main())

"""``iptserver demo``: the UK/RU/US example, live.

It builds the lab (network namespaces: a client, the entry, UK/RU/US exits over real
WireGuard tunnels, and an "internet" with a DNS authority and whoami servers), runs
iptserver in the entry with ``schema/examples/uk-ru-us.yaml``, has the client resolve and
connect to a set of names and addresses, and prints for each what ``explain`` predicts
and which exit the far side really saw. Then it tears the lab down.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from iptserver.geoip import GeoIPDatabase
from iptserver.geoip.build import write_country_db
from iptserver.lab import Lab, LabError, reap_stale_labs
from iptserver.lab.addresses import LAB_COUNTRIES
from iptserver.lab.entry import ENTRY_DNS, start_iptserver, stop_iptserver
from iptserver.policy import Policy
from iptserver.policy.explain import Explanation, explain, parse_query
from iptserver.schema import load_schema
from iptserver.schema.load import Loaded

EXAMPLE = Path(__file__).resolve().parents[2] / "schema" / "examples" / "uk-ru-us.yaml"

# (what the client does, record type): a name to resolve and connect to, or an address
QUERIES = (
    ("www.bbc.co.uk", "A"),  # domain co.uk
    ("mail.ru", "A"),  # domain ru
    ("mail.ru", "AAAA"),  # the same over IPv6
    ("cdn.example.net", "A"),  # a CNAME to edge.yandex.net: *.yandex.net
    ("news.gov.uk", "AAAA"),  # a regex; the host route beats a pinned /64
    ("updates.example.org", "A"),  # weight 100, direct, against the GB country rule
    ("www.example.com", "A"),  # no rule: the default exit
    ("de.example.de", "A"),  # a German address, no rule: the default
    ("198.51.100.20", ""),  # no DNS: GB by GeoIP
    ("198.51.100.75", ""),  # RU by GeoIP
    ("203.0.113.130", ""),  # a pinned net
    ("203.0.113.9", ""),  # the office block, direct
)


def run(schema_path: Path = EXAMPLE) -> int:
    if os.geteuid() != 0:
        print("iptserver demo builds network namespaces: run it as root (make demo)")
        return 2
    loaded = load_schema(schema_path)
    print(
        f"schema {schema_path}: valid ({len(loaded.schema.exits)} exits, "
        f"{len(loaded.schema.rules)} rules)"
    )
    reap_stale_labs()
    with tempfile.TemporaryDirectory(prefix="iptserver-demo-") as tmp, Lab() as lab:
        print(
            f"lab {lab.id} up in {lab.build_seconds:.1f} s: client -> entry -> "
            "uk/ru/us (wireguard-go) -> internet"
        )
        mmdb = Path(tmp) / "lab-country.mmdb"
        write_country_db(mmdb, LAB_COUNTRIES, "iptserver lab (documentation ranges)")
        schema = Path(tmp) / "uk-ru-us.yaml"
        schema.write_text(lab.schema_text(schema_path))
        lab_loaded = load_schema(schema)
        geo = GeoIPDatabase(mmdb)
        policy = Policy(lab_loaded.schema, geo)
        iptserver = start_iptserver(lab, schema, mmdb)
        try:
            rows = [row for q, t in QUERIES for row in _rows(lab, lab_loaded, policy, geo, q, t)]
        finally:
            status = stop_iptserver(iptserver)
        geo.close()
    _print_table(rows)
    mismatches = [r for r in rows if r["predicted"] != r["seen"]]
    print(
        f"\n{len(rows)} connections, {len(rows) - len(mismatches)} left through the exit "
        f"explain predicts; iptserver stopped with status {status}; lab torn down."
    )
    return 1 if mismatches or status else 0


def _rows(
    lab: Lab, loaded: Loaded, policy: Policy, geo: GeoIPDatabase, query: str, rtype: str
) -> list[dict[str, str]]:
    if not rtype:
        targets = [(query, query)]
    else:
        answer = lab.resolve("client", query, rtype, server=ENTRY_DNS)
        chain = [query, *(value for _, kind, value, _ in answer if kind == "CNAME")]
        targets = [
            (",".join(chain) + "=" + value, value) for _, kind, value, _ in answer if kind == rtype
        ]
    rows = []
    for explained, address in targets:
        result = explain(loaded, policy, parse_query(explained), geo)
        try:
            seen = lab.whoami("client", address)
        except LabError as e:
            seen = f"error: {e}".splitlines()[0]
        rows.append(
            {
                "query": f"{query} {rtype}".strip(),
                "address": address,
                "predicted": result.exit or "main",
                "seen": seen,
                "because": _because(result),
            }
        )
    return rows


def _because(result: Explanation) -> str:
    match = result.match
    if match is None:
        return {
            "default": "no rule: default exit",
            "main": "no rule",
            "private": "private or mesh",
        }[result.reason.value]
    what = f"rule {match.rule}: {match.kind.value} {match.detail}"
    return what + (f", beat {len(result.beaten)}" if result.beaten else "")


def _print_table(rows: list[dict[str, str]]) -> None:
    columns = ("query", "address", "predicted", "seen", "because")
    heads = ("query", "answer", "explain says", "far side saw", "why")
    widths = [max(len(h), *(len(r[c]) for r in rows)) for c, h in zip(columns, heads, strict=True)]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for r in rows:
        mark = "" if r["predicted"] == r["seen"] else "   <-- MISMATCH"
        print(
            "  ".join(r[c].ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip() + mark
        )

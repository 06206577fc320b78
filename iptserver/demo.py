"""``iptserver demo``: the UK/RU/US example, checked and explained on the lab's GeoIP data.

For now the demo shows decisions only; the live lab (namespaces, WireGuard exits, a far
side that reports which exit it saw) comes with the dataplane.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from iptserver.explain import explain, parse_query
from iptserver.geoip import GeoIPDatabase
from iptserver.geoip.build import write_country_db
from iptserver.lab.addresses import LAB_COUNTRIES
from iptserver.policy import Policy
from iptserver.schema import load_schema

EXAMPLE = Path(__file__).resolve().parent.parent / "schema" / "examples" / "uk-ru-us.yaml"

QUERIES = (
    "mail.ru=198.51.100.200",  # a .ru name on an address GeoIP places in DE
    "www.bbc.co.uk=198.51.100.70",  # a British name on a Russian address
    "198.51.100.10",  # GB by GeoIP
    "198.51.100.75",  # RU by GeoIP
    "198.51.100.150",  # US by GeoIP, which no rule names
    "203.0.113.130",  # inside a pinned net
    "updates.example.org=198.51.100.10",  # weight 100 against the GB country rule
    "203.0.113.9",  # the office block
    "cdn.example.net,edge.yandex.net=203.0.113.40",  # matched through its CNAME
    "news.gov.uk=2001:db8:ff:1::1",  # IPv6: a host route against a /64
    "10.77.0.5",  # a mesh address
    "shop.example.com",  # a name no rule knows
)


def run(schema_path: Path = EXAMPLE) -> int:
    loaded = load_schema(schema_path)
    print(
        f"schema {schema_path}: valid ({len(loaded.schema.exits)} exits, "
        f"{len(loaded.schema.rules)} rules)"
    )
    with tempfile.TemporaryDirectory(prefix="iptserver-demo-") as tmp:
        db = Path(tmp) / "lab-country.mmdb"
        write_country_db(db, LAB_COUNTRIES, "iptserver lab (documentation ranges)")
        geo = GeoIPDatabase(db)
        policy = Policy(loaded.schema, geo)
        rows = [("query", "exit", "interface", "rule", "because")]
        for text in QUERIES:
            result = explain(loaded, policy, parse_query(text), geo)
            rule = (
                f"#{result['rule']} (line {result['line']})" if result["rule"] is not None else "-"
            )
            rows.append(
                (
                    text,
                    result["exit"] or "main table",
                    result["interface"] or "-",
                    rule,
                    _because(result),
                )
            )
        geo.close()
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4])
        if n == 0:
            print("  ".join("-" * w for w in widths) + "  " + "-" * 3)
    print(
        "\nExplain any query yourself, on the same lab GeoIP data:\n"
        "  iptserver geoip lab lab.mmdb\n"
        f"  iptserver explain {schema_path} mail.ru=198.51.100.200 --geoip lab.mmdb"
    )
    return 0


def _because(result: dict[str, Any]) -> str:
    match = result["match"]
    if match is None:
        return {
            "default": "no rule matches: default exit",
            "main": "no rule matches",
            "private": "private or mesh: never diverted",
        }[result["reason"]]
    what = f"{match['kind']} {match['detail']}"
    if match["name"]:
        what += f" matched {match['name']}"
    beaten = len(result["beaten"])
    return what + (f", beat {beaten} other rule{'s' * (beaten > 1)}" if beaten else "")

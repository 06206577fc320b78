"""Run inside a test namespace: apply schemas' plans in turn, N times, then maybe stop.

Usage: python -m tests.dataplane.apply SCHEMA[,SCHEMA...] MMDB TIMES {stop,keep,stay}
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from iptserver.dataplane.kernel import Dataplane
from iptserver.dataplane.plan import plan
from iptserver.geoip import GeoIPDatabase
from iptserver.schema import load_schema


def main() -> None:
    schema_paths, mmdb, times, end = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    geo = GeoIPDatabase(mmdb)
    dataplane = Dataplane(dns_port=5353)
    problems: list[str] = []
    for _ in range(times):
        for schema_path in schema_paths.split(","):
            schema = load_schema(Path(schema_path)).schema
            countries = geo.networks_of({c for r in schema.rules for c in r.countries})
            problems = dataplane.apply(plan(schema, countries, dataplane.exits_in_kernel))
    if end != "stay":
        dataplane.stop(keep_state=end == "keep")
    print(json.dumps({"problems": problems}))


if __name__ == "__main__":
    main()

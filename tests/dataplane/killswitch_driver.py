"""Run inside a test namespace: apply a schema's plan, then route exits' tables.

Usage: python -m tests.dataplane.killswitch_driver SCHEMA [EXIT=VIA ...] [--stop]
(VIA empty: blocked). Prints the problems as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from iptserver.dataplane.kernel import Dataplane
from iptserver.dataplane.plan import plan
from iptserver.schema import load_schema


def main() -> None:
    schema = load_schema(Path(sys.argv[1])).schema
    dataplane = Dataplane()
    problems = dataplane.apply(plan(schema, {}))
    routed_by = {}
    for arg in sys.argv[2:]:
        if arg != "--stop":
            name, _, via = arg.partition("=")
            routed_by[name] = via or None
    problems += dataplane.set_routes(routed_by)
    if "--stop" in sys.argv:
        dataplane.stop()
    print(json.dumps({"problems": problems}))


if __name__ == "__main__":
    main()

"""Run inside a test namespace: make a schema's sets, then install or remove the chains.

Usage: python -m tests.dataplane.firewall_driver SCHEMA {install,remove} [DNS_PORT]

Only the firewall module is driven (no rules, routes or entries): the sets exist because
the chains refer to them by name. Prints nothing; a failure is the exit status.
"""

from __future__ import annotations

import sys
from pathlib import Path

from iptserver.dataplane import firewall
from iptserver.dataplane.ipset import IPSets
from iptserver.dataplane.plan import plan
from iptserver.schema import load_schema


def main() -> None:
    kernel_plan = plan(load_schema(Path(sys.argv[1])).schema, {})
    if sys.argv[2] == "remove":
        firewall.remove()
        return
    sets = IPSets()
    try:
        for set_plan in kernel_plan.sets:
            sets.create(set_plan.name, set_plan.family, timeout=False, skbinfo=True)
    finally:
        sets.close()
    firewall.install(kernel_plan, int(sys.argv[3]) if len(sys.argv) > 3 else None)


if __name__ == "__main__":
    main()

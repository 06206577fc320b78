"""Run inside a test namespace: one Dataplane driven by JSON commands on stdin.

Each line is one command, answered by one JSON line on stdout, so a test can look at
the kernel between steps:
  {"apply": SCHEMA}                          apply the schema's plan
  {"learn": [[IP, EXIT, SECONDS], ...]}      learn entries (weight 0 rules)
  {"expire": SECONDS}                        expire_exports as if SECONDS had passed;
                                             answers the next deadline, relative to now
  {"relink": INTERFACE}                      the interface is up again, made anew (as
                                             the daemon's link watcher reports it)
  {"stop": KEEP}                             stop (keep_state=KEEP) and quit
"""

from __future__ import annotations

import ipaddress
import json
import sys
import time
from pathlib import Path
from typing import Any

from iptserver.dataplane.kernel import Dataplane
from iptserver.dataplane.plan import KernelPlan, LearnedEntry, plan
from iptserver.schema import load_schema


def learned(current: KernelPlan, items: list[list[Any]]) -> list[LearnedEntry]:
    entries = []
    for ip, exit_name, seconds in items:
        network = ipaddress.ip_network(ip)
        set_name = current.learned_set(0, network.version)
        entries.append(LearnedEntry(set_name, network, current.exit(exit_name).mark, seconds))
    return entries


def main() -> None:
    dataplane = Dataplane()
    for line in sys.stdin:
        command = json.loads(line)
        result: object = None
        if "apply" in command:
            schema = load_schema(Path(command["apply"])).schema
            result = dataplane.apply(plan(schema, {}, dataplane.exits_in_kernel))
        elif "learn" in command:
            assert dataplane.plan is not None
            dataplane.learn(learned(dataplane.plan, command["learn"]))
        elif "expire" in command:
            now = time.monotonic()
            upcoming = dataplane.expire_exports(now + command["expire"])
            result = None if upcoming is None else upcoming - now
        elif "relink" in command:  # and the re-announcement the daemon makes after it
            interface = command["relink"]
            result = dataplane.relink(interface) + dataplane.reannounce(interface)
        elif "stop" in command:
            dataplane.stop(keep_state=command["stop"])
            print(json.dumps({"ok": True}), flush=True)
            return
        print(json.dumps({"ok": True, "result": result}), flush=True)


if __name__ == "__main__":
    main()

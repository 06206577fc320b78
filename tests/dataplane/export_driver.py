"""Run inside a test namespace: one KernelWorker driven by JSON commands on stdin.

Each line is one command, answered by one JSON line on stdout, so a test can look at
the kernel between steps:
  {"apply": SCHEMA}                          apply the schema's plan, then do what it
                                             left for a reading of the learned sets
  {"learn": [[IP, EXIT, SECONDS], ...]}      learn entries (weight 0 rules)
  {"expire": SECONDS}                        expire_exports as if SECONDS had passed;
                                             answers the next deadline, relative to now
  {"relink": INTERFACE}                      the interface is up again, made anew (as
                                             the daemon's link watcher reports it)
  {"stop": KEEP}                             stop (keep_state=KEEP) and quit
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import sys
import time
from pathlib import Path
from typing import Any

from iptserver.dataplane.plan import KernelPlan, LearnedEntry, plan
from iptserver.dataplane.worker import KernelWorker
from iptserver.schema import load_schema


def learned(current: KernelPlan, items: list[list[Any]]) -> list[LearnedEntry]:
    entries = []
    for ip, exit_name, seconds in items:
        network = ipaddress.ip_network(ip)
        set_name = current.learned_set(0, network.version)
        entries.append(LearnedEntry(set_name, network, current.exit(exit_name).mark, seconds))
    return entries


async def drive() -> None:
    worker = await KernelWorker.open(None, None)
    while line := await asyncio.to_thread(sys.stdin.readline):
        command = json.loads(line)
        result: object = None
        current = worker.dataplane.plan
        if "apply" in command:
            schema = load_schema(Path(command["apply"])).schema
            result = await worker.apply(plan(schema, {}, worker.exits_in_kernel))
            await worker.adopted()
        elif "learn" in command:
            assert current is not None
            await worker.learn(learned(current, command["learn"]))
        elif "expire" in command:
            now = time.monotonic()
            upcoming = await worker.expire_exports(now + command["expire"])
            result = None if upcoming is None else upcoming - now
        elif "relink" in command:  # and the re-announcement the daemon makes after it
            interface = command["relink"]
            result = await worker.relink(interface) + await worker.reannounce(interface)
        elif "stop" in command:
            await worker.close(keep_state=command["stop"])
            print(json.dumps({"ok": True}), flush=True)
            return
        print(json.dumps({"ok": True, "result": result}), flush=True)


if __name__ == "__main__":
    asyncio.run(drive())

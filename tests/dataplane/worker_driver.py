"""Run inside a test namespace: one KernelWorker, driven from an event loop, then closed.

Usage: python -m tests.dataplane.worker_driver SCHEMA STATE_FILE {keep,remove} [busy|listing|adopt]

Applies the schema's plan, learns 203.0.113.7 (exit uk) with ``learn_now`` and
2001:db8::7 (exit ru) with ``learn``, reads ``listing.stream_learned`` (all, then filtered by
address and by mark) and ``set_sizes``, and closes
(keep_state with ``keep``). With ``busy``, first reapplies a plan of many static entries
and learns while that runs; with ``listing``, fills the learned set with many entries
and learns while ``listing.stream_learned`` lists them; with ``adopt``, waits for the reading of
the learned sets the apply left (``KernelWorker.adopted``) before anything else. Prints
what each step answered as JSON.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import sys
from pathlib import Path
from typing import Any

from iptserver.dataplane.listing import stream_learned
from iptserver.dataplane.plan import KernelPlan, LearnedEntry, plan
from iptserver.dataplane.worker import KernelWorker
from iptserver.schema import load_schema
from iptserver.schema.values import IPAddress

BUSY_ENTRIES = 50_000  # enough that applying them takes a while
LISTED_ENTRIES = 100_000  # enough that listing them takes a while


def learned(current: KernelPlan, address: str, exit_name: str) -> LearnedEntry:
    network = ipaddress.ip_network(address)
    set_name = current.learned_set(0, network.version)
    return LearnedEntry(set_name, network, current.exit(exit_name).mark, 300)


async def while_busy(worker: KernelWorker, big: KernelPlan) -> dict[str, Any]:
    """Learn while the kernel thread applies ``big``: learn_now writes at once."""
    applying = asyncio.create_task(worker.apply(big))
    await asyncio.sleep(0.05)  # the apply under way
    written = worker.learn_now([learned(big, "203.0.113.8", "uk")])
    result = {"written_while_applying": written, "apply_was_done": applying.done()}
    await applying
    return result


async def while_listing(worker: KernelWorker, current: KernelPlan) -> dict[str, Any]:
    """Learn while ``listing.stream_learned`` lists a large set: the write is not held up."""
    many = [
        learned(current, str(ipaddress.ip_address(0x0A000000 + n)), "uk")
        for n in range(LISTED_ENTRIES)
    ]
    await worker.learn(many)
    listing = asyncio.create_task(listed(worker))
    await asyncio.sleep(0.2)  # the listing under way
    written = worker.learn_now([learned(current, "203.0.113.9", "uk")])
    result = {"written_while_listing": written, "listing_was_done": listing.done()}
    result["listed"] = len(await listing)
    return result


async def listed(
    worker: KernelWorker, ip: IPAddress | None = None, marks: set[int] | None = None
) -> list[list[Any]]:
    current = worker.dataplane.plan
    assert current is not None
    return [
        [weight, set_name, str(entry.network), entry.mark, entry.timeout]
        async for batch in stream_learned(current, ip=ip, marks=marks)
        for weight, set_name, entry in batch
    ]


async def run(schema_path: Path, state_file: Path, keep: bool, mode: str) -> dict[str, Any]:
    schema = load_schema(schema_path).schema
    worker = await KernelWorker.open(None, state_file)
    result: dict[str, Any] = {"exits_before": [e.name for e in worker.exits_in_kernel]}
    try:
        current = plan(schema, {}, worker.exits_in_kernel)
        result["problems"] = await worker.apply(current)
        if mode == "adopt":
            await worker.adopted()
            result["adopted"] = await listed(worker)
        if mode == "busy":
            many = [ipaddress.ip_network((0x0A000000 + n, 32)) for n in range(BUSY_ENTRIES)]
            big = plan(schema, {"RU": many}, worker.exits_in_kernel)
            result |= await while_busy(worker, big)
        if mode == "listing":
            result |= await while_listing(worker, current)
        result["learn_now"] = worker.learn_now([learned(current, "203.0.113.7", "uk")])
        exported = await worker.learn([learned(current, "2001:db8::7", "ru")])
        result["exported"] = sorted(map(str, exported))
        result["learned"] = await listed(worker)
        result["learned_covering"] = await listed(worker, ipaddress.ip_address("203.0.113.7"))
        result["learned_by_ru"] = await listed(worker, marks={current.exit("ru").mark})
        result["set_sizes"] = await worker.set_sizes()
    finally:
        await worker.close(keep_state=keep)
    return result


def main() -> None:
    schema, state_file, end = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    mode = sys.argv[4] if len(sys.argv) > 4 else ""
    print(json.dumps(asyncio.run(run(schema, state_file, end == "keep", mode))))


if __name__ == "__main__":
    main()
